"""``python -m ohlora_eval``: one screening run (``-m`` for a sweep).

Sample -> mid -> edit -> synthesize -> score (``pipeline.measure``, through the
measurement cache) -> judge (``pipeline.judge``) -> review columns -> track
(``tracking``). A run that differs only in judging settings re-uses the scores;
a run that died resumes where it stopped. The flow: docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from ohlora_eval import review
from ohlora_eval.apps import execution
from ohlora_eval.apps.build import (
    Checked,
    ConfigError,
    edit_setup,
    model_tags,
    preflight,
)
from ohlora_eval.apps.cli import hydra_app
from ohlora_eval.apps.identity import identity_stage
from ohlora_eval.pipeline import identity as ident
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.cache import MeasurementCache, measurement_key
from ohlora_eval.pipeline.context import MeasureContext
from ohlora_eval.pipeline.fidelity import rounded
from ohlora_eval.pipeline.latents import SeededLatents, array_of, seeded_latents
from ohlora_eval.pipeline.measure import measure
from ohlora_eval.pipeline.model_calls import group_fn
from ohlora_eval.pipeline.protocols import Generator
from ohlora_eval.tracking import lineage, store
from ohlora_eval.tracking.artifacts import RunOutputs, log_artifacts
from ohlora_eval.tracking.contact_sheets import IdentityMarks, SheetMaker
from ohlora_eval.tracking.runs import (
    close_dead_runs,
    print_summary,
    process_tags,
    run_name,
    summarize,
    tracked_run,
)

__all__ = ["ConfigError", "Evaluation", "evaluate", "main"]


@dataclass
class Evaluation:
    """What a run measured and decided (kept in memory for callers and tests)."""

    run_id: str
    per_vector: pd.DataFrame
    scores: np.ndarray  # (n, m, 3) measured eyes/mouth/pose per image
    grid: np.ndarray  # (m, 3) intended weights
    latents: np.ndarray | SeededLatents  # (n, latent_dim): given vectors, or the seed's
    metrics: dict[str, float]
    speed: str = ""  # what was generated and scored now, how fast (Measured.speed_line)
    identity: str = ""  # what the run says of identity (one line)


def config_choices() -> dict[str, str]:
    """Hydra's config group choices of the running command ({} outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k: str(v) for k, v in choices.items() if v is not None}  # None: none chosen


@hydra_app("config")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


def evaluate(
    cfg: DictConfig,
    latents: np.ndarray | None = None,
    cases: np.ndarray | None = None,
    tags: dict[str, str] | None = None,
    report: bool = True,
) -> Evaluation:
    """Run one tracked evaluation. Raises on bad input after marking the run FAILED.

    By default the vectors are ``generator.sample_latents(sampling.n_vectors,
    sampling.seed)`` numbered 0..n-1; ``latents`` (and their ``cases`` numbers)
    evaluate given vectors instead (a z-vector file, a recorded selection). ``report``: print
    the run's summary (off for a re-test's repetitions, which report as one).
    """
    if latents is not None:
        cfg = cfg.copy()
        cfg.sampling.n_vectors = int(len(latents))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    checked = preflight(cfg, resolved)  # every setting typed and checked (apps/config.settings)
    tracking = checked.settings.tracking
    uri, _ = store.setup(tracking.experiment, tracking.uri, tracking.root)
    base_tags = {
        **model_tags(cfg),
        "layer": str(cfg.layer),
        "git_commit": store.git_commit(),
        "ohlora.kind": "evaluation",
        # where and how it ran, which changes no number: tags, not the run's name
        "execution": str((cfg.get("execution") or {}).get("kind", "local")),
        "cache": "on" if checked.settings.cache.enabled else "off",
        **process_tags(),
    }
    sampling = checked.settings.sampling
    name = run_name(resolved, sampling.n_vectors, checked.cutoffs, tags, config_choices())
    with tracked_run({**base_tags, **(tags or {})}, run_name=name) as run_id:
        store.log_params(store.flatten(resolved))
        result = _evaluate_in_run(
            cfg, resolved, checked, run_id, store.StoreRef(uri, tracking.root), latents, cases
        )
    notes = [result.speed, result.identity]
    (print_summary if report else summarize)(
        result.run_id,
        result.per_vector,
        result.metrics,
        checked.cutoffs,
        experiment=tracking.experiment,
        uri=uri,
        notes=notes,
    )
    return result


def _evaluate_in_run(
    cfg: DictConfig,
    resolved: dict,
    checked: Checked,
    run_id: str,
    where: store.StoreRef,
    given: np.ndarray | None,
    cases: np.ndarray | None,
) -> Evaluation:
    cutoffs, grid, settings = checked.cutoffs, checked.grid, checked.review
    measuring, typed = checked.measure_settings, checked.settings
    with execution.face_executor(cfg.get("execution"), resolved, measuring) as faces:
        setup = edit_setup(cfg, checked, where, faces)  # faces: only if directions are fitted
    generator, scorer, directions = setup.generator, setup.scorer, setup.directions
    latents = _latents(cfg, generator, given)
    model_configs = {  # where a model runs does not change what it computes
        f"{k}_config": {key: v for key, v in resolved[k].items() if key != "device"}
        for k in ("generator", "scorer")
    }
    key, meta = measurement_key(
        setup, latents, typed.sampling.vectors_per_batch, model_configs, cfg.get("noise_seed")
    )
    mlflow.set_tags(
        {
            "generator.weights_id": getattr(generator, "weights_id", "unknown"),
            "scorer.weights_id": getattr(scorer, "weights_id", "unknown"),
            "directions.source": directions.source,
            "directions.run_id": directions.run_id or "none",
            "ohlora.measure_key": key,
        }
    )
    seed = None if given is not None else typed.sampling.seed  # None: vectors given
    lineage.log_screening_inputs(latents, directions, seed, generator)
    close_dead_runs(where.uri, key, run_id)

    cache = MeasurementCache(typed.cache.dir, key, meta) if typed.cache.enabled else None
    groups_of = group_fn(setup)  # a ConfigError if the directions cannot be grouped
    with execution.executor(cfg.get("execution"), resolved, setup, settings) as executor:
        measured = measure(
            setup,
            latents,
            typed.sampling.vectors_per_batch,
            groups_of=groups_of,
            image_stats=review.image_stats(settings),
            cases=None if cases is None else [int(c) for c in cases],
            context=MeasureContext(typed.tracking.progress, executor, cache),
        )
    judged = rounded(measured.scores, measuring.score_decimals)
    corr = np.stack([judge.pearson_rows(grid[:, k], judged[:, :, k]) for k in range(3)], 1)
    no_face = np.isnan(measured.scores).any(axis=2).sum(axis=1)
    table = partial(
        judge.per_vector_table,
        corr,
        groups=measured.groups,
        cases=cases,
        no_face=no_face,
        images_per_vector=setup.m,
    )
    by_r = table({p: cutoffs[p] for p in ("eyes", "mouth", "pose")})  # identity's scope
    identity = identity_stage(cfg, typed, setup, by_r, latents, measured.groups, cache)
    per_vector = table(cutoffs, identity=identity.table.columns if identity else None)
    threshold = identity.threshold if identity else None
    metrics = judge.run_metrics(per_vector, identity_threshold=threshold)
    if identity:
        metrics.update(identity.stage_metrics())
    per_vector, review_metrics = review.add_review_columns(
        per_vector, grid, measured.scores, measured.extras, settings
    )
    metrics.update(review_metrics)
    metrics.update(measured.metrics(setup.m))
    store.retry(mlflow.log_metrics, metrics)

    z = array_of(latents)
    cell = typed.tracking.sheet_cell
    sheets = "sheets" if cell == SheetMaker.min_tile else f"sheets_{cell}px"
    marks = None
    if identity:  # cells past the threshold are marked: another folder of sheets
        sheets += f"_{identity.folder}"
        marks = IdentityMarks(identity.table.distances, identity.threshold)
    sheet_dir = (cache.dir if cache else Path(typed.tracking.root) / "sheets" / run_id) / sheets
    log_artifacts(
        RunOutputs(
            run_id=run_id,
            config=resolved,
            per_vector=per_vector,
            scores=measured.scores,
            grid=grid,
            latents=z,
            metrics=metrics,
            cutoffs=cutoffs,
            sheets=SheetMaker(setup, per_vector, z, sheet_dir, min_tile=cell, marks=marks),
            review=settings,
            identity=identity.table.distances if identity else None,
        )
    )
    speed = measured.speed_line(setup.m)
    said = identity.line(metrics, cutoffs) if identity else ident.NOT_MEASURED
    return Evaluation(run_id, per_vector, measured.scores, grid, z, metrics, speed, said)


def _latents(
    cfg: DictConfig, generator: Generator, given: np.ndarray | None
) -> torch.Tensor | SeededLatents:
    """The vectors screened: given ones, or the seed's, drawn block by block as needed
    (``pipeline/latents.py``: the same numbers as ``sample_latents``, never all in memory)."""
    if given is None:
        return seeded_latents(generator, int(cfg.sampling.n_vectors), int(cfg.sampling.seed))
    z = torch.as_tensor(np.asarray(given, dtype=np.float32))
    if z.ndim != 2 or z.shape[1] != generator.latent_dim:
        raise ConfigError(
            f"latent vectors must have {generator.latent_dim} values each for this generator;"
            f" got shape {tuple(z.shape)}"
        )
    return z


if __name__ == "__main__":
    main()
