"""One screening run: sample, edit, generate, score, correlate, judge, track.

Measuring (expensive) goes through the measurement cache, so a run that differs
only in judging settings re-uses scores, and a run that died resumes where it
stopped. Judging and everything after it is cheap and always redone.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from . import review, stats, tracking
from .artifacts import SheetMaker, log_artifacts
from .build import ConfigError, apply_noise_seed, build_models, mid_dim, validate
from .cache import MEASURE_VERSION, MeasurementCache, digest
from .directions import Directions
from .groups import group_names
from .measure import ImageStats, measure_chunk, score, synthesize
from .protocols import CORE_PROPERTIES, GROUP_PROPERTIES, Generator, PropertyScorer
from .runs import print_summary, tracked_run

__all__ = ["ConfigError", "Evaluation", "build_models", "evaluate", "validate"]


@dataclass
class Evaluation:
    """What a run measured and decided (kept in memory for callers and tests)."""

    run_id: str
    per_vector: pd.DataFrame
    scores: np.ndarray  # (n, m, 3) measured eyes/mouth/pose per image
    grid: np.ndarray  # (m, 3) intended weights
    latents: np.ndarray  # (n, latent_dim)
    metrics: dict[str, float]


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
    reused = int(result.metrics.get("reused_chunks", 0))
    if reused:
        notes.append(f"re-used {reused} measured chunk(s) from the cache")
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
    return {
        "generator": str(cfg.generator.get("_target_", "?")).rsplit(".", 1)[-1],
        "scorer": str(cfg.scorer.get("_target_", "?")).rsplit(".", 1)[-1],
        "layer": str(cfg.layer),
        "git_commit": tracking.git_commit(),
        "ohlora.kind": "evaluation",
        "ohlora.host": socket.gethostname(),
        "ohlora.pid": str(os.getpid()),
    }


def _evaluate_in_run(
    cfg: DictConfig,
    resolved: dict,
    run_id: str,
    uri: str,
    given: np.ndarray | None,
    cases: np.ndarray | None,
) -> Evaluation:
    cutoffs, grid = validate(cfg)
    try:
        settings = review.ReviewSettings.from_cfg(cfg.get("review"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    torch.manual_seed(0)
    generator, scorer = build_models(cfg)
    apply_noise_seed(generator, cfg.get("noise_seed"))
    layer = cfg.layer
    progress = bool(cfg.tracking.progress) and sys.stderr.isatty()
    directions: Directions = instantiate(cfg.directions).resolve(
        generator, scorer, layer, uri, str(cfg.tracking.root), progress=progress
    )
    directions.check_compatible(layer, mid_dim(generator, layer))
    latents = _latents(cfg, generator, given)
    key, meta = measurement_key(cfg, generator, scorer, directions, grid, latents)
    mlflow.set_tags(
        {
            "generator.weights_id": getattr(generator, "weights_id", "unknown"),
            "scorer.weights_id": getattr(scorer, "weights_id", "unknown"),
            "directions.source": directions.source,
            "directions.run_id": directions.run_id or "none",
            "ohlora.measure_key": key,
        }
    )
    _close_dead_runs(uri, key, run_id)

    cache = MeasurementCache(cfg.cache.dir, key, meta) if cfg.cache.enabled else None
    measured = measure(
        generator,
        scorer,
        latents,
        directions,
        grid,
        layer,
        cfg.sampling.vectors_per_batch,
        _group_fn(generator, scorer, layer, directions),
        review.image_stats(settings),
        cache,
        bool(cfg.tracking.progress),
    )
    corr = np.stack([stats.pearson_rows(grid[:, k], measured.scores[:, :, k]) for k in range(3)], 1)
    per_vector = stats.per_vector_table(corr, cutoffs, measured.groups, cases)
    metrics = stats.run_metrics(per_vector)
    per_vector, review_metrics = review.add_review_columns(
        per_vector, grid, measured.scores, measured.extras, settings
    )
    metrics.update(review_metrics)
    metrics.update(measured.metrics(grid.shape[0]))
    tracking.retry(mlflow.log_metrics, metrics)

    z = latents.cpu().numpy()
    sheet_dir = (cache.dir if cache else Path(cfg.tracking.root) / "sheets" / run_id) / "sheets"
    sheets = SheetMaker(generator, directions, per_vector, z, layer, grid, sheet_dir)
    log_artifacts(
        cfg,
        resolved,
        run_id,
        per_vector,
        measured.scores,
        grid,
        z,
        metrics,
        cutoffs,
        sheets,
        settings,
    )
    return Evaluation(run_id, per_vector, measured.scores, grid, z, metrics)


def _latents(cfg: DictConfig, generator: Generator, given: np.ndarray | None) -> torch.Tensor:
    if given is None:
        return generator.sample_latents(cfg.sampling.n_vectors, cfg.sampling.seed)
    z = torch.as_tensor(np.asarray(given, dtype=np.float32))
    if z.ndim != 2 or z.shape[1] != generator.latent_dim:
        raise ConfigError(
            f"latent vectors must have {generator.latent_dim} values each for this generator;"
            f" got shape {tuple(z.shape)}"
        )
    return z


def measurement_key(
    cfg: DictConfig,
    generator: Generator,
    scorer: PropertyScorer,
    directions: Directions,
    grid: np.ndarray,
    latents: torch.Tensor,
) -> tuple[str, dict]:
    """Everything that decides the per-image scores, and nothing that only judges them."""

    def who(obj: object) -> str:
        return f"{type(obj).__module__}.{type(obj).__qualname__}"

    meta = {
        "version": MEASURE_VERSION,
        "generator": who(generator),
        "generator_weights": getattr(generator, "weights_id", None) or id(generator),
        "generator_config": OmegaConf.to_container(cfg.generator, resolve=True),
        "scorer": who(scorer),
        "scorer_weights": getattr(scorer, "weights_id", None) or id(scorer),
        "scorer_config": OmegaConf.to_container(cfg.scorer, resolve=True),
        "layer": cfg.layer,
        "grid": grid.tolist(),
        "vectors_per_batch": cfg.sampling.vectors_per_batch,
        "noise_seed": cfg.get("noise_seed"),
        "directions_run_id": directions.run_id,
        "n_vectors": int(latents.shape[0]),
    }
    for k in ("generator_config", "scorer_config"):
        meta[k].pop("device", None)  # where it runs does not change what it computes
    key = digest({**meta, "directions": directions.identity(), "latents": latents.cpu().numpy()})[
        :32
    ]
    return key, meta


def _group_fn(generator, scorer, layer: str, directions: Directions):
    """Each vector's look-alike group, from scoring its unedited image (as the original)."""
    med = getattr(scorer, "group_medians", None) or directions.medians
    if med is None or any(p not in scorer.properties for p in GROUP_PROPERTIES):
        if directions.grouped:
            raise ConfigError(
                "grouped directions need a scorer that measures the grouping properties"
                f" {list(GROUP_PROPERTIES)} and grouping medians"
            )
        return None

    def groups(mid: torch.Tensor) -> list[str]:
        s = score(scorer, synthesize(generator, mid, layer))
        return group_names({p: s[p].float().cpu().numpy() for p in GROUP_PROPERTIES}, med)

    return groups


@dataclass
class Measured:
    scores: np.ndarray
    extras: dict[str, np.ndarray]
    groups: list[str]
    compute_seconds: float  # summed over chunks, whenever they were computed
    reused: int
    computed: int

    def metrics(self, m: int) -> dict[str, float]:
        n = self.scores.shape[0]
        return {
            "images_per_sec": n * m / max(self.compute_seconds, 1e-9),
            "measure_seconds": self.compute_seconds,
            "reused_chunks": float(self.reused),
            "measured_chunks": float(self.computed),
        }


def measure(
    generator: Generator,
    scorer: PropertyScorer,
    latents: torch.Tensor,
    directions: Directions,
    grid: np.ndarray,
    layer: str,
    chunk: int,
    group_fn,
    image_stats: ImageStats | None,
    cache: MeasurementCache | None,
    progress: bool = True,
) -> Measured:
    """Every vector's scores: from the cache where a trustworthy chunk exists, else computed
    (and stored at once, so a run killed at any point loses at most one chunk)."""
    n, m = latents.shape[0], grid.shape[0]
    scores = np.zeros((n, m, len(CORE_PROPERTIES)), np.float32)
    extras: dict[str, np.ndarray] = {}
    groups = [""] * n
    seconds, reused, computed = 0.0, 0, 0
    ranges = [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
    with (
        cache.lock() if cache else nullcontext(),
        tqdm(
            total=n, desc="screening", unit="vec", disable=not progress, dynamic_ncols=True
        ) as bar,
    ):
        t0 = time.perf_counter()
        for lo, hi in ranges:
            got = cache.load(lo, hi) if cache else None
            if got is None:
                t = time.perf_counter()
                s, extra, g = measure_chunk(
                    generator,
                    scorer,
                    latents[lo:hi],
                    directions,
                    grid,
                    layer,
                    group_fn,
                    image_stats,
                )
                took = time.perf_counter() - t
                got = {
                    "scores": s,
                    "groups": np.array(g, dtype="<U16"),
                    "seconds": np.array(took),
                    **{f"x_{k}": v for k, v in extra.items()},
                }
                if cache:
                    cache.save(lo, hi, got)
                computed += 1
            else:
                reused += 1
            scores[lo:hi] = got["scores"]
            groups[lo:hi] = [str(x) for x in got["groups"]]
            seconds += float(got["seconds"])
            for k, v in got.items():
                if k.startswith("x_"):
                    extras.setdefault(k[2:], np.full(n, np.nan))[lo:hi] = v
            bar.update(hi - lo)
            rate = hi * m / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix_str(f"{rate:,.0f} images/s" + (f", {reused} cached" if reused else ""))
    return Measured(scores, extras, groups, seconds, reused, computed)


def _close_dead_runs(uri: str, key: str, run_id: str) -> None:
    """Runs of this measurement left RUNNING by a process that no longer exists (killed):
    mark them FAILED and link them to this run, which resumes their work."""
    client = MlflowClient(uri)
    exp = mlflow.get_experiment(mlflow.active_run().info.experiment_id)
    runs = tracking.retry(
        client.search_runs,
        [exp.experiment_id],
        filter_string=f"tags.`ohlora.measure_key` = '{key}' and attributes.status = 'RUNNING'",
    )
    host = socket.gethostname()
    dead = []
    for r in runs:
        if r.info.run_id == run_id or r.data.tags.get("ohlora.host") != host:
            continue
        if not _alive(int(r.data.tags.get("ohlora.pid", "0") or 0)):
            dead.append(r.info.run_id)
            tracking.retry(
                client.set_tag,
                r.info.run_id,
                "ohlora.failure_reason",
                f"process died; resumed by run {run_id}",
            )
            tracking.retry(client.set_tag, r.info.run_id, "ohlora.resumed_by", run_id)
            tracking.retry(client.set_terminated, r.info.run_id, "FAILED")
    if dead:
        mlflow.set_tag("ohlora.resumed_from", ",".join(dead))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()
