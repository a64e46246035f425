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
from omegaconf import OmegaConf
from PIL import Image

from ohlora_eval import review
from ohlora_eval.formats.pictures import contact_sheet, summary_plot
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.cache import atomic_write
from ohlora_eval.pipeline.edit import EditSetup, edited_mids
from ohlora_eval.pipeline.measure import synthesize, to_mid
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.tracking import store
from ohlora_eval.tracking.runs import log_hydra_files


def per_image_table(scores: np.ndarray, grid: np.ndarray, cases: np.ndarray) -> pd.DataFrame:
    n, m, _ = scores.shape
    df = pd.DataFrame({"case": np.repeat(cases, m), "pm_idx": np.tile(np.arange(m), n)})
    for k, p in enumerate(CORE_PROPERTIES):
        df[f"{p}_pm"] = np.tile(grid[:, k], n)
    for k, p in enumerate(CORE_PROPERTIES):
        df[f"{p}_score"] = scores[:, :, k].reshape(-1)
    return df


def sheet_title(row: pd.Series) -> str:
    """Measurement facts only (no verdict): the same sheet serves every cutoff."""
    rs = "  ".join(f"{p} r={row[f'{p}_corr']:+.3f}" for p in CORE_PROPERTIES)
    group = f" group {row['svm_group_name']}" if row["svm_group_name"] else ""
    return f"case {int(row['case'])}{group}: {rs}"


def render_sheet(
    setup: EditSetup,
    latent: np.ndarray,
    groups: list[str],
    title: str,
    min_tile: int = 128,
    max_tile: int = 4096,
) -> Image.Image:
    """Generate one vector's edit grid again and lay it out as a labelled contact sheet."""
    generator, layer = setup.generator, setup.layer
    with torch.inference_mode():
        mid = to_mid(generator, torch.as_tensor(latent, dtype=torch.float32), layer)
        dirs = setup.directions.for_vectors(mid, groups if setup.directions.grouped else None)
        images = synthesize(generator, edited_mids(mid, dirs, setup.grid), layer)
    return contact_sheet(images, setup.grid, title, min_tile=min_tile, max_tile=max_tile)


@dataclass
class SheetMaker:
    """Contact sheets of a run's vectors, made on demand and kept in ``folder``."""

    setup: EditSetup
    per_vector: pd.DataFrame
    latents: np.ndarray
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
                self.setup,
                self.latents[i : i + 1],
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


@dataclass
class RunOutputs:
    """Everything a screening run logs, gathered once at the end of the run."""

    run_id: str
    config: dict  # the resolved run config (config.yaml)
    per_vector: pd.DataFrame
    scores: np.ndarray  # (n, m, 3) measured
    grid: np.ndarray  # (m, 3) intended
    latents: np.ndarray  # (n, latent_dim)
    metrics: dict[str, float]
    cutoffs: dict[str, float]
    sheets: SheetMaker
    review: review.ReviewSettings


def log_artifacts(out: RunOutputs) -> None:
    """Tables, latents, config, plot, contact sheets and the review page into the active run."""
    settings = out.config["tracking"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        per_vector = out.per_vector
        per_vector.to_csv(folder / "per_vector.csv", index=False)
        judge.statistics(per_vector).to_csv(folder / "statistics.csv")
        if settings["per_image"]:
            per_image_table(out.scores, out.grid, per_vector["case"].to_numpy()).to_csv(
                folder / "per_image.csv", index=False
            )
        np.save(folder / "latents.npy", out.latents)
        (folder / "config.yaml").write_text(OmegaConf.to_yaml(out.config))
        summary_plot(per_vector, out.cutoffs, folder / "summary.png")
        (folder / "run_summary.json").write_text(json.dumps(out.metrics, indent=2, sort_keys=True))
        ranked = review.review_order(per_vector, out.review.rank_by)
        passed = ranked.loc[ranked["passed"] == "O", "case"]
        sheets = out.sheets
        _copy_sheets(sheets, passed.head(settings["grids"]["passed"]), folder / "grids" / "passed")
        _copy_sheets(
            sheets, ranked["case"].head(settings["grids"]["best"]), folder / "grids" / "best"
        )
        review.build_review_page(
            folder / "review",
            out.run_id,
            per_vector,
            out.cutoffs,
            out.review,
            render=sheets.render,
            grid=out.grid,
            sheets={int(c): sheets.path(c) for c in _shown(passed, out.review)},
        )
        store.retry(mlflow.log_artifacts, str(folder))
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
