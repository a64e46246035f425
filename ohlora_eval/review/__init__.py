"""Review aids for the human pick: measured criteria per vector and an offline review page.

The original system ends with a person reading each passed vector's 50 images
against four criteria. This package gives that person numbers for two of them
(do the three properties really change, and only them; do the background and
the face shape stay) and a page to pick from:

- ``metrics``: bootstrap intervals of r, Spearman's rho, cross-property leakage,
  background drift and face-shape stability (pixels and scores only, so any
  generator), the per-vector review columns, run metrics and the ranking;
- ``page``: ``review/index.html``, one card per passed vector in rank order (then,
  marked, the near misses), whose checkboxes build the ``python -m ohlora_eval.select``
  command; it shows contact sheets from disk and inside MLflow's UI.

The helpers below are the whole integration with an evaluation run: a
``ReviewSettings`` from the ``review`` config group, ``image_stats`` for the
measuring step (``pipeline.measure.measure``), ``add_review_columns`` after judging,
``review_order`` for everything shown in order, and ``build_review_page`` with the
artifacts. This package may import ``pipeline`` only (docs/architecture.md).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ohlora_eval.errors import int_in
from ohlora_eval.pipeline.judge import PER_VECTOR_COLUMNS
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.review.metrics import (
    DEFAULT_FACE_BOX,
    DEFAULT_RANK_BY,
    REVIEW_COLUMNS,
    bootstrap_ci,
    check_face_box,
    leakage,
    locality_stats,
    rank_by,
    rank_scores,
    review_metrics,
    review_order,
    review_table,
    spearman_max,
    spearman_rows,
)
from ohlora_eval.review.page import (
    SELECT_COMMAND,
    SheetLink,
    near_misses,
    shown_rows,
    write_review_page,
    write_sheet_gallery,
)

__all__ = [
    "DEFAULT_RANK_BY",
    "SELECT_COMMAND",
    "REVIEW_COLUMNS",
    "ReviewSettings",
    "SheetLink",
    "add_review_columns",
    "bootstrap_ci",
    "build_review_page",
    "image_stats",
    "leakage",
    "locality_stats",
    "near_misses",
    "page_cases",
    "rank_by",
    "rank_scores",
    "review_metrics",
    "review_order",
    "review_table",
    "shown_rows",
    "spearman_ceilings",
    "spearman_rows",
    "write_review_page",
    "write_sheet_gallery",
]


@dataclass
class ReviewSettings:
    """The ``review`` settings, with their defaults: one source for both (``apps/config.py``
    registers this dataclass as the ``review=default`` config schema), checked by ``checked``.

    Review aids for the human pick: per-vector bootstrap intervals of r, Spearman's rho,
    cross-property leakage and edit locality (extra per_vector.csv columns and run
    metrics), a review ranking, and the offline page review/index.html. The ranking is
    an expression over per_vector.csv columns (+ - * / **, abs, sqrt, log, exp, minimum,
    maximum) or a {column: weight} mapping, e.g.
    ``python -m ohlora_eval 'review.rank_by=sum_abs_corr - 0.5*max_leak - 2*bg_drift'``.
    """

    rank_by: Any = DEFAULT_RANK_BY  # an expression or a {column: weight} mapping
    n_boot: int = 200  # bootstrap resamples of each vector's grid images
    ci_level: float = 0.95  # confidence level of the interval of each r
    seed: int = 0  # the resamples are drawn from this seed (the same for every vector)
    # face region: the ellipse in [x0, y0, x1, y1], x and y in [-1, 1], y down
    face_box: list[float] = field(default_factory=lambda: list(DEFAULT_FACE_BOX))
    analysis_size: int = 32  # images are area-averaged to this size for drift and face IoU
    page: bool = True  # write review/index.html with the run's artifacts
    max_cards: int | None = 300  # at most this many cards (passed first, then near misses)
    # near misses: failed vectors whose every |r| is within this of its cutoff, shown after the
    # passed ones with their contact sheets (0 = none)
    near_miss_margin: float = 0.05
    local_dir: str | None = None  # a local copy of the page: <local_dir>/<run_id>/index.html

    @classmethod
    def from_cfg(cls, node: Any | None) -> ReviewSettings:
        """From the ``review`` config node as a plain mapping (None = defaults).

        Raises ValueError naming the ``review.*`` field on bad values, before any
        heavy work, so the run can fail with a one-line reason.
        """
        if node is None:
            return cls().checked()
        raw = dict(node)  # type: ignore[arg-type]
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"review.{unknown[0]} is not a review setting;"
                f" known: {', '.join(cls.__dataclass_fields__)}"
            )
        return cls(**raw).checked()

    def checked(self) -> ReviewSettings:
        if isinstance(self.rank_by, Mapping):
            self.rank_by = {str(k): v for k, v in self.rank_by.items()}
        _check_rank_spec(self.rank_by)
        int_in("review.n_boot", self.n_boot, 2, 100_000)
        int_in("review.seed", self.seed, 0, 2**32 - 1)
        if not 0.0 < float(self.ci_level) < 1.0:
            raise ValueError(f"review.ci_level={self.ci_level} must be in (0, 1), e.g. 0.95")
        self.face_box = check_face_box(self.face_box)
        int_in("review.analysis_size", self.analysis_size, 8, 1024)
        if not isinstance(self.page, bool):
            raise ValueError(f"review.page={self.page!r} must be true or false")
        margin = self.near_miss_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 1:
            raise ValueError(
                f"review.near_miss_margin={margin!r} must be a number in [0, 1] (0 = no near"
                " misses), e.g. 0.05"
            )
        self.near_miss_margin = float(margin)
        if self.max_cards is not None and (
            not isinstance(self.max_cards, int) or self.max_cards < 0
        ):
            raise ValueError(f"review.max_cards={self.max_cards} must be null or an integer >= 0")
        return self


def _check_rank_spec(spec: object) -> None:
    """Evaluate ``spec`` on an empty table with every column a run has: bad names fail now."""
    cols = [*PER_VECTOR_COLUMNS, *REVIEW_COLUMNS]
    empty = pd.DataFrame({c: pd.Series(dtype=object if c in _TEXT else float) for c in cols})
    rank_scores(empty, spec)  # type: ignore[arg-type]


_TEXT = {"svm_group_name", "passed", "fail_reason"}


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
        grid,
        scores,
        per_vector,
        locality,
        rank_spec=s.rank_by,
        n_boot=s.n_boot,
        ci_level=s.ci_level,
        seed=s.seed,
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


def spearman_ceilings(grid: np.ndarray | None) -> dict[str, float] | None:
    """Property -> the largest Spearman rho the grid's repeated weights allow (when below 1)."""
    if grid is None:
        return None
    g = np.asarray(grid)
    ceilings = {p: spearman_max(g[:, k]) for k, p in enumerate(CORE_PROPERTIES)}
    return {p: v for p, v in ceilings.items() if math.isfinite(v) and v < 1 - 1e-9}


def build_review_page(
    out_dir: Path,
    run_id: str,
    per_vector: pd.DataFrame,
    cutoffs: Mapping[str, float],
    settings: ReviewSettings | None = None,
    *,
    render: Callable[[int], Any] | None = None,
    sheets: Mapping[int, Path | SheetLink] | None = None,
    grid: np.ndarray | None = None,
    local_dir: Path | str | None = None,
    note: str = "",
) -> Path | None:
    """Write the review page for a run into ``out_dir`` (and a copy in ``local_dir/run_id``).

    Every card shown (passed vectors in ``review_rank`` order, then near misses, up to
    ``settings.max_cards``) needs a contact sheet: taken from ``sheets`` (case -> PNG, or
    a ``SheetLink`` to one stored elsewhere) when there, else made with ``render(case)``
    (a PIL image, e.g. ``artifacts.SheetMaker.render``) and saved under
    ``out_dir/sheets/``. Returns the page's path, or None when ``settings.page`` is false.
    """
    s = settings or ReviewSettings()
    if not s.page:
        return None
    out_dir = Path(out_dir)
    sheet_dir = out_dir / "sheets"
    paths: dict[int, Path | SheetLink] = {int(k): v for k, v in (sheets or {}).items()}
    for case in page_cases(per_vector, cutoffs, s):
        if case in paths or render is None:
            continue
        sheet_dir.mkdir(parents=True, exist_ok=True)
        path = sheet_dir / f"case_{case:05d}.png"
        render(case).save(path)
        paths[case] = path
    page = write_review_page(
        out_dir,
        run_id,
        per_vector,
        paths,
        cutoffs,
        rank_spec=s.rank_by,
        ci_level=s.ci_level,
        max_cards=s.max_cards,
        spearman_max=spearman_ceilings(grid),
        near_miss_margin=s.near_miss_margin,
        note=note,
    )
    target = local_dir if local_dir is not None else s.local_dir
    if target is not None:
        dest = Path(target) / run_id
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(out_dir, dest)
    return page
