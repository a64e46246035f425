"""Checking a run's config and building its models, before anything heavy happens."""

from __future__ import annotations

from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.edit import grid_points
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES, Generator, PropertyScorer


def validate(cfg: DictConfig) -> tuple[dict[str, float], np.ndarray]:
    """Check the cheap parts of the config; return the cutoffs and the edit grid."""
    try:
        cutoffs = judge.check_cutoffs(cfg.cutoff)
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
    generator = instantiate_node(cfg.generator)
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
    scorer = instantiate_node(cfg.scorer)
    missing = [p for p in CORE_PROPERTIES if p not in getattr(scorer, "properties", ())]
    if missing:
        raise ConfigError(f"scorer {type(scorer).__name__} does not measure {missing}")
    return generator, scorer


def apply_noise_seed(generator: Generator, seed: int | None) -> None:
    if seed is None:
        return
    if not hasattr(generator, "set_noise_seed"):
        raise ConfigError(
            f"noise_seed={seed} but {type(generator).__name__} has no noise; leave noise_seed=null"
        )
    generator.set_noise_seed(int(seed))


def mid_dim(generator: Generator, layer: str) -> int:
    dims = getattr(generator, "mid_dims", None)
    if dims and layer in dims:
        return int(dims[layer])
    return int(generator.to_mid(generator.sample_latents(1, 0), layer).shape[1])


def instantiate_node(node: Any) -> Any:
    """``hydra.utils.instantiate``, but raising the real error (Hydra wraps it)."""
    try:
        return instantiate(node)
    except Exception as exc:
        while exc.__cause__ is not None:
            exc = exc.__cause__
        raise exc from None


def model_tags(cfg: DictConfig) -> dict[str, str]:
    """The generator's and scorer's class names as configured (run tags)."""
    return {k: str(cfg[k].get("_target_", "?")).rsplit(".", 1)[-1] for k in ("generator", "scorer")}


def replay_config(
    recorded: Any, tracking: Any, experiment: str, directions_run_id: str | None
) -> DictConfig:
    """A finished run's recorded config, set up to measure its vectors again: today's store
    (``tracking``) under ``experiment``, no measurement cache (it measures, it never reads
    earlier scores) and the directions pinned to the run that produced them."""
    from omegaconf import OmegaConf

    rec = OmegaConf.create(recorded)
    rec.tracking = OmegaConf.merge(rec.get("tracking", {}), tracking)
    rec.tracking.experiment = experiment
    if "cache" in rec:
        rec.cache.enabled = False
    if directions_run_id and directions_run_id != "none" and "run_id" in rec.directions:
        rec.directions.run_id = directions_run_id
    return rec


def has_noise(cfg: DictConfig) -> bool:
    """Whether the configured generator has per-layer noise (``set_noise_seed``)."""
    from hydra.utils import get_class

    return hasattr(get_class(cfg.generator._target_), "set_noise_seed")
