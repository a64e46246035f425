"""What an evaluation run leaves in MLflow: tables, latents, plots, contact sheets, review page.

Contact sheets are the one place images are made again after measuring (for
people to look at). They depend on the measurement only, so they are kept beside
it in the measurement cache and made at most once per vector.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from . import review, stats, tracking
from .cache import atomic_write
from .directions import Directions
from .measure import edited_mids, synthesize, to_mid
from .protocols import CORE_PROPERTIES, Generator
from .report import contact_sheet, summary_plot
from .runs import log_hydra_files


def per_image_table(scores: np.ndarray, grid: np.ndarray, cases: np.ndarray) -> pd.DataFrame:
    n, m, _ = scores.shape
    df = pd.DataFrame({"case": np.repeat(cases, m), "pm_idx": np.tile(np.arange(m), n)})
    for k, p in enumerate(CORE_PROPERTIES):
        df[f"{p}_pm"] = np.tile(grid[:, k], n)
    for k, p in enumerate(CORE_PROPERTIES):
        df[f"{p}_score"] = scores[:, :, k].reshape(-1)
    return df


def rank(per_vector: pd.DataFrame) -> pd.DataFrame:
    """Best first: by the review rank when present, else by sum |r| (undefined r last)."""
    if "review_rank" in per_vector.columns:
        return per_vector.sort_values(["review_rank", "case"], kind="mergesort")
    return per_vector.sort_values(
        ["sum_abs_corr", "case"], ascending=[False, True], na_position="last"
    )


def sheet_title(row: pd.Series) -> str:
    """Measurement facts only (no verdict): the same sheet serves every cutoff."""
    rs = "  ".join(f"{p} r={row[f'{p}_corr']:+.3f}" for p in CORE_PROPERTIES)
    group = f" group {row['svm_group_name']}" if row["svm_group_name"] else ""
    return f"case {int(row['case'])}{group}: {rs}"


def render_sheet(
    generator: Generator,
    directions: Directions,
    latent: np.ndarray,
    layer: str,
    grid: np.ndarray,
    groups: list[str],
    title: str,
    min_tile: int = 128,
    max_tile: int = 4096,
) -> Image.Image:
    """Generate one vector's edit grid again and lay it out as a labelled contact sheet."""
    with torch.inference_mode():
        mid = to_mid(generator, torch.as_tensor(latent, dtype=torch.float32), layer)
        dirs = directions.for_vectors(mid, groups if directions.grouped else None)
        images = synthesize(generator, edited_mids(mid, dirs, grid), layer)
    return contact_sheet(images, grid, title, min_tile=min_tile, max_tile=max_tile)


@dataclass
class SheetMaker:
    """Contact sheets of a run's vectors, made on demand and kept in ``folder``."""

    generator: Generator
    directions: Directions
    per_vector: pd.DataFrame
    latents: np.ndarray
    layer: str
    grid: np.ndarray
    folder: Path
    min_tile: int = 64  # small images stay at their size (a page holds hundreds of sheets)
    max_tile: int = 128  # large ones (StyleGAN's 256 px) are reduced

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._index = {int(c): i for i, c in enumerate(self.per_vector["case"])}

    def path(self, case: int) -> Path:
        path = self.folder / f"case_{int(case):05d}.png"
        if not path.exists():
            i = self._index[int(case)]
            row = self.per_vector.iloc[i]
            sheet = render_sheet(
                self.generator,
                self.directions,
                self.latents[i : i + 1],
                self.layer,
                self.grid,
                [row["svm_group_name"]],
                sheet_title(row),
                self.min_tile,
                self.max_tile,
            )
            buf = io.BytesIO()
            sheet.save(buf, format="PNG")
            atomic_write(path, buf.getvalue())
        return path

    def render(self, case: int) -> Image.Image:
        return Image.open(self.path(case))


def log_artifacts(
    cfg: DictConfig,
    resolved: dict,
    run_id: str,
    per_vector: pd.DataFrame,
    scores: np.ndarray,
    grid: np.ndarray,
    latents: np.ndarray,
    metrics: dict[str, float],
    cutoffs: dict[str, float],
    sheets: SheetMaker,
    settings: review.ReviewSettings,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        per_vector.to_csv(out / "per_vector.csv", index=False)
        stats.statistics(per_vector).to_csv(out / "statistics.csv")
        if cfg.tracking.per_image:
            per_image_table(scores, grid, per_vector["case"].to_numpy()).to_csv(
                out / "per_image.csv", index=False
            )
        np.save(out / "latents.npy", latents)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        summary_plot(per_vector, cutoffs, out / "summary.png")
        (out / "run_summary.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        ranked = rank(per_vector)
        passed = ranked.loc[ranked["passed"] == "O", "case"]
        _copy_sheets(sheets, passed.head(cfg.tracking.grids.passed), out / "grids" / "passed")
        _copy_sheets(sheets, ranked["case"].head(cfg.tracking.grids.best), out / "grids" / "best")
        review.build_review_page(
            out / "review",
            run_id,
            per_vector,
            cutoffs,
            settings,
            render=sheets.render,
            grid=grid,
            sheets={int(c): sheets.path(c) for c in _shown(passed, settings)},
        )
        tracking.retry(mlflow.log_artifacts, str(out))
        log_hydra_files()


def _shown(passed: pd.Series, settings: review.ReviewSettings) -> list[int]:
    if not settings.page:
        return []
    return [
        int(c) for c in (passed if settings.max_cards is None else passed.head(settings.max_cards))
    ]


def _copy_sheets(sheets: SheetMaker, cases: pd.Series, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for c in cases:
        src = sheets.path(int(c))
        (folder / src.name).write_bytes(src.read_bytes())
