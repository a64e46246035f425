"""``execution=local|ray``: where the chunks of a measurement are measured.

``execution=local`` (the default) measures in this process. ``execution=ray`` builds a
``pipeline.executor.RayExecutor``: each actor rebuilds the generator and scorer from this
run's resolved config (the same ``build_models`` and seed as ``edit_setup``) and gets the
Directions this process resolved, so every worker edits along the very same vectors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ohlora_eval import review
from ohlora_eval.apps.build import apply_noise_seed, build_models
from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline.edit import EditSetup
from ohlora_eval.pipeline.measure import group_fn

KINDS = ("local", "ray")
RAY_KEYS = {"kind", "address", "workers", "cpus_per_worker", "gpus_per_worker", "restarts"}


def check(node: Any) -> dict[str, Any]:
    """``cfg.execution`` checked: a one-line ConfigError naming the key otherwise."""
    if node is None:
        return {"kind": "local"}
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    conf = dict(node)
    kind = conf.get("kind", "local")
    if kind not in KINDS:
        raise ConfigError(f"execution.kind={kind!r} must be one of {', '.join(KINDS)}")
    if kind == "local":
        return conf
    unknown = sorted(set(conf) - RAY_KEYS)
    if unknown:
        raise ConfigError(f"execution.{unknown[0]} is not a key of execution=ray")
    address = conf.get("address")
    if address is not None and (
        not isinstance(address, str) or (address != "auto" and ":" not in address)
    ):
        raise ConfigError(
            f"execution.address={address!r} must be null (a local Ray), auto or ray://host:port"
        )
    for key, low, integer in (
        ("workers", 1, True),
        ("restarts", 0, True),
        ("cpus_per_worker", 0, False),
        ("gpus_per_worker", 0, False),
    ):
        value = conf.get(key)
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if not ok or isinstance(value, bool) or value < low:
            what = "an integer" if integer else "a number"
            raise ConfigError(f"execution.{key}={value!r} must be {what} >= {low}")
    if conf["cpus_per_worker"] == 0 and conf["gpus_per_worker"] == 0:
        raise ConfigError("execution.cpus_per_worker=0 needs execution.gpus_per_worker > 0")
    return conf


def worker_build(
    resolved: Mapping[str, Any],
    directions: Any,
    grid: np.ndarray,
    measure: Any,
    review_settings: Any,
) -> tuple[EditSetup, Any, Any]:
    """What a Ray worker builds once: this run's models (as ``edit_setup`` builds them), the
    driver's directions, and the hooks a screening passes to ``measure``."""
    cfg = OmegaConf.create(dict(resolved))
    torch.manual_seed(0)
    generator, scorer = build_models(cfg)
    apply_noise_seed(generator, cfg.get("noise_seed"))
    setup = EditSetup(generator, scorer, directions, grid, str(cfg.layer), measure)
    stats = review.image_stats(review_settings) if review_settings is not None else None
    return setup, group_fn(setup), stats


@contextlib.contextmanager
def executor(
    node: Any,
    resolved: Mapping[str, Any],
    setup: EditSetup,
    review_settings: Any = None,
) -> Iterator[Any]:
    """The executor of ``cfg.execution`` for a ``with`` block: None for ``local``."""
    conf = check(node)
    if conf["kind"] == "local":
        yield None
        return
    from ohlora_eval.pipeline.executor import RayExecutor

    build = partial(
        worker_build, dict(resolved), setup.directions, setup.grid, setup.measure, review_settings
    )
    with RayExecutor(
        build,
        address=conf.get("address"),
        workers=conf["workers"],
        cpus_per_worker=float(conf["cpus_per_worker"]),
        gpus_per_worker=float(conf["gpus_per_worker"]),
        restarts=conf["restarts"],
    ) as ex:
        yield ex
