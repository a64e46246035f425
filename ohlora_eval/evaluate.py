"""One screening run: sample, edit, generate, score, correlate, judge, track."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from . import stats, tracking
from .directions import Directions
from .grid import grid_points
from .groups import group_names
from .measure import edited_mids, measure_chunks, synthesize, to_mid
from .protocols import CORE_PROPERTIES, GROUP_PROPERTIES, Generator, PropertyScorer
from .report import contact_sheet, summary_plot
from .runs import log_hydra_files, print_summary, tracked_run
from .sample import score_mids


class ConfigError(ValueError):  # noqa: N818 - reads as the field it names
    """Bad input: the message names the field and what is allowed."""


@dataclass
class Evaluation:
    """What a run measured and decided (kept in memory for callers and tests)."""

    run_id: str
    per_vector: pd.DataFrame
    scores: np.ndarray  # (n, m, 3) measured eyes/mouth/pose per image
    grid: np.ndarray  # (m, 3) intended weights
    latents: np.ndarray  # (n, latent_dim)
    metrics: dict[str, float]


# --- validation ------------------------------------------------------------------------------
def validate(cfg: DictConfig) -> tuple[dict[str, float], np.ndarray]:
    """Check the cheap parts of the config before anything heavy is built."""
    try:
        cutoffs = stats.check_cutoffs(cfg.cutoff)
        grid = grid_points({p: list(cfg.sampling.grid.get(p, [])) for p in CORE_PROPERTIES})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    n = cfg.sampling.n_vectors
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"sampling.n_vectors={n} must be an integer >= 1")
    vpb = cfg.sampling.vectors_per_batch
    if not isinstance(vpb, int) or vpb < 1:
        raise ConfigError(f"sampling.vectors_per_batch={vpb} must be an integer >= 1")
    return cutoffs, grid


def build_models(cfg: DictConfig) -> tuple[Generator, PropertyScorer]:
    generator = _instantiate(cfg.generator, "generator")
    for attr in ("latent_dim", "layers", "sample_latents", "to_mid", "synthesize"):
        if not hasattr(generator, attr):
            raise ConfigError(
                f"generator {type(generator).__name__} lacks {attr!r} (Generator protocol)"
            )
    if cfg.layer not in generator.layers:
        raise ConfigError(
            f"layer={cfg.layer!r} is not offered by {type(generator).__name__};"
            f" allowed: {', '.join(generator.layers)}"
        )
    scorer = _instantiate(cfg.scorer, "scorer")
    missing = [p for p in CORE_PROPERTIES if p not in getattr(scorer, "properties", ())]
    if missing:
        raise ConfigError(f"scorer {type(scorer).__name__} does not measure {missing}")
    return generator, scorer


def _apply_noise_seed(generator: Generator, seed: int | None) -> None:
    if seed is None:
        return
    if not hasattr(generator, "set_noise_seed"):
        raise ConfigError(
            f"noise_seed={seed} but {type(generator).__name__} has no noise; leave noise_seed=null"
        )
    generator.set_noise_seed(int(seed))


def _instantiate(node: Any, key: str) -> Any:
    try:
        return instantiate(node)
    except Exception as exc:  # Hydra wraps the real error; show that one
        raise _root_cause(exc) from None


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


# --- the run ---------------------------------------------------------------------------------
def evaluate(
    cfg: DictConfig,
    latents: np.ndarray | None = None,
    cases: np.ndarray | None = None,
    tags: dict[str, str] | None = None,
) -> Evaluation:
    """Run one tracked evaluation. Raises on bad input after marking the run FAILED.

    By default the vectors are ``generator.sample_latents(sampling.n_vectors,
    sampling.seed)`` numbered 0..n-1; ``latents`` (and their ``cases`` numbers)
    evaluate given vectors instead (a z-vector file, a recorded selection).
    """
    if latents is not None:
        cfg = cfg.copy()
        cfg.sampling.n_vectors = int(len(latents))
    uri, _ = tracking.setup(cfg.tracking.experiment, cfg.tracking.uri, cfg.tracking.root)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with tracked_run({**_base_tags(cfg), **(tags or {})}) as run_id:
        tracking.log_params(tracking.flatten(resolved))
        result = _evaluate_in_run(cfg, resolved, run_id, uri, latents, cases)
    notes = [f"{result.metrics['images_per_sec']:,.0f} images/s"]
    print_summary(
        result.run_id,
        result.per_vector,
        result.metrics,
        dict(cfg.cutoff),
        cfg.tracking.experiment,
        uri,
        notes,
    )
    return result


def _base_tags(cfg: DictConfig) -> dict[str, str]:
    tags = {
        "generator": str(cfg.generator.get("_target_", "?")).rsplit(".", 1)[-1],
        "scorer": str(cfg.scorer.get("_target_", "?")).rsplit(".", 1)[-1],
        "layer": str(cfg.layer),
        "git_commit": tracking.git_commit(),
        "ohlora.kind": "evaluation",
    }
    return tags


def _evaluate_in_run(
    cfg: DictConfig,
    resolved: dict,
    run_id: str,
    uri: str,
    given: np.ndarray | None,
    cases: np.ndarray | None,
) -> Evaluation:
    cutoffs, grid = validate(cfg)
    torch.manual_seed(0)
    generator, scorer = build_models(cfg)
    _apply_noise_seed(generator, cfg.get("noise_seed"))
    layer = cfg.layer
    mlflow.set_tags(
        {
            "generator.weights_id": getattr(generator, "weights_id", "unknown"),
            "scorer.weights_id": getattr(scorer, "weights_id", "unknown"),
        }
    )
    progress = bool(cfg.tracking.progress) and sys.stderr.isatty()

    source = instantiate(cfg.directions)
    directions: Directions = source.resolve(
        generator, scorer, layer, uri, str(cfg.tracking.root), progress=progress
    )
    mid_dim = _mid_dim(generator, layer)
    directions.check_compatible(layer, mid_dim)
    mlflow.set_tags(
        {"directions.source": directions.source, "directions.run_id": directions.run_id or "none"}
    )

    n = cfg.sampling.n_vectors
    if given is None:
        latents = generator.sample_latents(n, cfg.sampling.seed)
    else:
        latents = torch.as_tensor(np.asarray(given, dtype=np.float32))
        if latents.ndim != 2 or latents.shape[1] != generator.latent_dim:
            raise ConfigError(
                f"latent vectors must have {generator.latent_dim} values each"
                f" for this generator; got shape {tuple(latents.shape)}"
            )
    groups = _groups(generator, scorer, latents, layer, directions, cfg.sampling.vectors_per_batch)

    scores = np.zeros((n, grid.shape[0], len(CORE_PROPERTIES)), np.float32)
    chunks = measure_chunks(
        generator,
        scorer,
        latents,
        directions,
        grid,
        layer,
        cfg.sampling.vectors_per_batch,
        groups if directions.grouped else None,
    )
    t0 = time.perf_counter()
    with tqdm(
        total=n, desc="screening", unit="vec", disable=not cfg.tracking.progress, dynamic_ncols=True
    ) as bar:
        for lo, hi, s, _ in chunks:
            scores[lo:hi] = s
            bar.update(hi - lo)
            rate = hi * grid.shape[0] / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix_str(f"{rate:,.0f} images/s")
    seconds = time.perf_counter() - t0

    corr = np.stack([stats.pearson_rows(grid[:, k], scores[:, :, k]) for k in range(3)], 1)
    per_vector = stats.per_vector_table(corr, cutoffs, groups, cases)
    metrics = stats.run_metrics(per_vector)
    metrics["images_per_sec"] = n * grid.shape[0] / max(seconds, 1e-9)
    metrics["measure_seconds"] = seconds
    tracking.retry(mlflow.log_metrics, metrics)

    result = Evaluation(run_id, per_vector, scores, grid, latents.cpu().numpy(), metrics)
    _log_artifacts(cfg, resolved, result, generator, directions, groups, cutoffs)
    return result


def _mid_dim(generator: Generator, layer: str) -> int:
    dims = getattr(generator, "mid_dims", None)
    if dims and layer in dims:
        return int(dims[layer])
    return int(generator.to_mid(generator.sample_latents(1, 0), layer).shape[1])


def _groups(
    generator: Generator,
    scorer: PropertyScorer,
    latents: torch.Tensor,
    layer: str,
    directions: Directions,
    batch_vectors: int,
) -> list[str]:
    """Each vector's look-alike group, from scoring its unedited image (as the original)."""
    med = getattr(scorer, "group_medians", None) or directions.medians
    if med is None or any(p not in scorer.properties for p in GROUP_PROPERTIES):
        if directions.grouped:
            raise ConfigError(
                "grouped directions need a scorer that measures the grouping "
                f"properties {list(GROUP_PROPERTIES)} and grouping medians"
            )
        return [""] * latents.shape[0]
    mid = torch.cat(
        [to_mid(generator, latents[i : i + 2000], layer) for i in range(0, latents.shape[0], 2000)]
    )
    scores = score_mids(generator, scorer, mid, layer, batch=max(1, batch_vectors) * 50)
    return group_names(scores, med)


# --- artifacts -------------------------------------------------------------------------------
def per_image_table(scores: np.ndarray, grid: np.ndarray, cases: np.ndarray) -> pd.DataFrame:
    n, m, _ = scores.shape
    df = pd.DataFrame({"case": np.repeat(cases, m), "pm_idx": np.tile(np.arange(m), n)})
    for k, p in enumerate(CORE_PROPERTIES):
        df[f"{p}_pm"] = np.tile(grid[:, k], n)
    for k, p in enumerate(CORE_PROPERTIES):
        df[f"{p}_score"] = scores[:, :, k].reshape(-1)
    return df


def rank(per_vector: pd.DataFrame) -> pd.DataFrame:
    """Best first: by sum |r| (undefined r ranks last), ties by case."""
    return per_vector.sort_values(
        ["sum_abs_corr", "case"], ascending=[False, True], na_position="last"
    )


def _log_artifacts(
    cfg: DictConfig,
    resolved: dict,
    res: Evaluation,
    generator: Generator,
    directions: Directions,
    groups: list[str],
    cutoffs: dict[str, float],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        res.per_vector.to_csv(out / "per_vector.csv", index=False)
        stats.statistics(res.per_vector).to_csv(out / "statistics.csv")
        if cfg.tracking.per_image:
            per_image_table(res.scores, res.grid, res.per_vector["case"].to_numpy()).to_csv(
                out / "per_image.csv", index=False
            )
        np.save(out / "latents.npy", res.latents)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        summary_plot(res.per_vector, cutoffs, out / "summary.png")
        (out / "run_summary.json").write_text(
            json.dumps({k: v for k, v in res.metrics.items()}, indent=2, sort_keys=True)
        )
        _write_grids(cfg, res, generator, directions, groups, out / "grids")
        tracking.retry(mlflow.log_artifacts, str(out))
        log_hydra_files()


def _write_grids(
    cfg: DictConfig,
    res: Evaluation,
    generator: Generator,
    directions: Directions,
    groups: list[str],
    out: Path,
) -> None:
    ranked = rank(res.per_vector)
    chosen: dict[str, list[int]] = {
        "passed": ranked.loc[ranked["passed"] == "O", "case"]
        .head(cfg.tracking.grids.passed)
        .tolist(),
        "best": ranked["case"].head(cfg.tracking.grids.best).tolist(),
    }
    index = {int(c): i for i, c in enumerate(res.per_vector["case"])}
    for kind, cases in chosen.items():
        for case in cases:
            i = index[int(case)]
            sheet = render_sheet(
                generator,
                directions,
                res.latents[i : i + 1],
                cfg.layer,
                res.grid,
                [groups[i]],
                title=_sheet_title(res.per_vector.iloc[i]),
            )
            (out / kind).mkdir(parents=True, exist_ok=True)
            sheet.save(out / kind / f"case_{int(case):05d}.png")


def _sheet_title(row: pd.Series) -> str:
    rs = "  ".join(f"{p} r={row[f'{p}_corr']:+.3f}" for p in CORE_PROPERTIES)
    verdict = "passed" if row["passed"] == "O" else f"failed ({row['fail_reason']})"
    group = f" group {row['svm_group_name']}" if row["svm_group_name"] else ""
    return f"case {int(row['case'])}{group}: {rs}  {verdict}"


def render_sheet(
    generator: Generator,
    directions: Directions,
    latent: np.ndarray,
    layer: str,
    grid: np.ndarray,
    groups: list[str],
    title: str,
):
    with torch.inference_mode():
        mid = to_mid(generator, torch.as_tensor(latent, dtype=torch.float32), layer)
        dirs = directions.for_vectors(mid, groups if directions.grouped else None)
        images = synthesize(generator, edited_mids(mid, dirs, grid), layer)
    return contact_sheet(images, grid, title)
