"""The review steps of an evaluation run, each from its ``ReviewSettings``: ``image_stats``
for the measuring step (``pipeline.measure.measure``), ``add_review_columns`` after judging,
and ``page_cases`` and ``build_review_page`` with the artifacts."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ohlora_eval.review.locality import locality_stats
from ohlora_eval.review.page import PageInputs, SheetLink, shown_rows, write_review_page
from ohlora_eval.review.settings import ReviewSettings
from ohlora_eval.review.table import review_metrics, review_table


def image_stats(settings: ReviewSettings) -> Callable[..., dict[str, np.ndarray]]:
    """The ``image_stats`` hook of ``pipeline.measure.measure``: ``locality_stats``."""
    return partial(locality_stats, face_box=settings.face_box, analysis_size=settings.analysis_size)


def add_review_columns(
    per_vector: pd.DataFrame,
    grid: np.ndarray,
    scores: np.ndarray,
    locality: Mapping[str, np.ndarray] | None,
    settings: ReviewSettings | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """``per_vector`` with the review columns appended (after ``fail_reason``), and the
    run metrics that summarise them (``review_metrics``)."""
    s = settings or ReviewSettings()
    table = review_table(
        grid, scores, per_vector, locality, s.rank_by, s.n_boot, s.ci_level, s.seed
    )
    out = pd.concat([per_vector, table], axis=1)
    return out, review_metrics(out)


def page_cases(
    per_vector: pd.DataFrame, cutoffs: Mapping[str, float], settings: ReviewSettings
) -> list[int]:
    """The cases whose cards the page shows (passed, then near misses): the sheets it needs."""
    if not settings.page:
        return []
    passed, near, _, _ = shown_rows(
        per_vector,
        cutoffs,
        rank_spec=settings.rank_by,
        max_cards=settings.max_cards,
        near_miss_margin=settings.near_miss_margin,
    )
    return [int(c) for c in [*passed["case"], *near["case"]]]


def build_review_page(
    out_dir: Path,
    inputs: PageInputs,
    settings: ReviewSettings | None = None,
    *,
    render: Callable[[int], Any] | None = None,
    sheets: Mapping[int, Path | SheetLink] | None = None,
    local_dir: Path | str | None = None,
) -> Path | None:
    """Write the review page for a run into ``out_dir`` (and a copy in ``local_dir/run_id``).

    Every card shown (passed vectors in ``review_rank`` order, then near misses, up to
    ``settings.max_cards``) needs a contact sheet: taken from ``sheets`` (case -> PNG, or
    a ``SheetLink`` to one stored elsewhere) when there, else made with ``render(case)``
    (a PIL image of the case's contact sheet) and saved under
    ``out_dir/sheets/``. ``local_dir`` None: ``settings.local_dir``. Returns the page's
    path, or None when ``settings.page`` is false.
    """
    s = settings or ReviewSettings()
    if not s.page:
        return None
    out_dir = Path(out_dir)
    sheet_dir = out_dir / "sheets"
    paths: dict[int, Path | SheetLink] = {int(k): v for k, v in (sheets or {}).items()}
    for case in page_cases(inputs.per_vector, inputs.cutoffs, s):
        if case in paths or render is None:
            continue
        sheet_dir.mkdir(parents=True, exist_ok=True)
        path = sheet_dir / f"case_{case:05d}.png"
        render(case).save(path)
        paths[case] = path
    page = write_review_page(out_dir, inputs, paths, s)
    target = local_dir if local_dir is not None else s.local_dir
    if target is not None:
        dest = Path(target) / inputs.run_id
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(out_dir, dest)
    return page
