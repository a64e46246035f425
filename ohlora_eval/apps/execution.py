"""``execution=local|ray``: where a screening's chunks and a direction fit's faces are measured.

``execution=local`` (the default) measures in this process. ``execution=ray`` builds a
``pipeline.executor.RayExecutor``: each actor rebuilds the generator and scorer from this
run's resolved config (the same ``build_models`` and seed as ``edit_setup``). A screening's
actors also get the Directions this process resolved (``executor``), so every worker edits
along the very same vectors; a direction fit's actors score sampled faces (``face_executor``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ohlora_eval import review
from ohlora_eval.apps.build import apply_noise_seed, build_models
from ohlora_eval.apps.config import as_typed, execution_schema
from ohlora_eval.apps.schemas import RayExecution
from ohlora_eval.pipeline.edit import EditSetup
from ohlora_eval.pipeline.fidelity import seeded
from ohlora_eval.pipeline.measure import ScreenState
from ohlora_eval.pipeline.model_calls import group_fn
from ohlora_eval.pipeline.sample import FaceSetup


def models(resolved: Mapping[str, Any], cpus: float | None = None) -> tuple[Any, Any, DictConfig]:
    """This run's generator and scorer as ``edit_setup`` builds them (the same seed and
    noise), in any process: (generator, scorer, the config). ``cpus``: the CPUs this process
    may use (a Ray actor's share): a scorer with worker processes left at one per core
    (``scorer.workers=null``) gets that many instead, so the actors of a node together start
    as many as it has cores, not actors x cores."""
    cfg = OmegaConf.create(dict(resolved))
    scorer = cfg.get("scorer") or {}
    if cpus is not None and "workers" in scorer and scorer.get("workers") is None:
        cfg.scorer.workers = max(1, int(round(cpus)))
    with seeded(0):  # as edit_setup: the global torch RNG seeded, the caller's restored after
        generator, scorer = build_models(cfg)
        apply_noise_seed(generator, cfg.get("noise_seed"))
    return generator, scorer, cfg


def worker_build(
    resolved: Mapping[str, Any],
    directions: Any,
    grid: np.ndarray,
    measure_settings: Any,
    review_settings: Any,
    cpus: float | None = None,
) -> ScreenState:
    """What a screening's Ray worker builds once: this run's models, the driver's
    directions, and the hooks a screening passes to ``measure``."""
    generator, scorer, cfg = models(resolved, cpus)
    setup = EditSetup(generator, scorer, directions, grid, str(cfg.layer), measure_settings)
    stats = review.image_stats(review_settings) if review_settings is not None else None
    return ScreenState(setup, group_fn(setup), stats)


def face_build(
    resolved: Mapping[str, Any], measure_settings: Any, cpus: float | None = None
) -> FaceSetup:
    """What a direction fit's Ray worker builds once: this run's models."""
    generator, scorer, cfg = models(resolved, cpus)
    return FaceSetup(generator, scorer, str(cfg.layer), measure_settings)


@contextlib.contextmanager
def executor(
    node: Any,
    resolved: Mapping[str, Any],
    setup: EditSetup,
    review_settings: Any = None,
) -> Iterator[Any]:
    """The executor of a screening's chunks for a ``with`` block: None for ``local`` (then
    ``measure`` runs them on a ``LocalExecutor``)."""
    build = partial(
        worker_build,
        dict(resolved),
        setup.directions,
        setup.grid,
        setup.measure_settings,
        review_settings,
    )
    with _pool(node, build) as ex:
        yield ex


@contextlib.contextmanager
def face_executor(node: Any, resolved: Mapping[str, Any], measure_settings: Any) -> Iterator[Any]:
    """The executor of a direction fit's sampled faces for a ``with`` block: None for
    ``local`` (a ``LocalExecutor`` then). Ray starts only if faces are really sampled
    (``RayExecutor.run``)."""
    with _pool(node, partial(face_build, dict(resolved), measure_settings)) as ex:
        yield ex


@contextlib.contextmanager
def _pool(node: Any, build: Any) -> Iterator[Any]:
    conf = as_typed(node or {"kind": "local"}, execution_schema(node))  # checked (schemas.py)
    if not isinstance(conf, RayExecution):
        yield None
        return
    from ohlora_eval.pipeline.executor import RayExecutor

    with RayExecutor(
        partial(build, cpus=conf.cpus_per_worker or None),
        address=conf.address,
        workers=conf.workers,
        cpus_per_worker=conf.cpus_per_worker,
        gpus_per_worker=conf.gpus_per_worker,
        restarts=conf.restarts,
        start_timeout_s=conf.start_timeout_s,
    ) as ex:
        yield ex
