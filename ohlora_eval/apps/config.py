"""Config schemas registered with Hydra's ConfigStore: one source for each setting.

Every config group has one: ``directions``, ``review`` and ``measure`` are their own
schemas (below); ``cutoff`` is ``pipeline.cutoffs.Cutoffs``; sampling, tracking, cache,
execution and the shipped models are in ``apps/schemas.py``, named first in each YAML
file's defaults list.

``directions=latest`` is the ``FitSpec`` dataclass (plus where to find a fitted run),
so its defaults live in ``directions/spec.py`` only; the evaluation and
``find_directions`` compose the same node. ``review=default`` is
``review.ReviewSettings``; ``measure=default`` is ``pipeline.measure_settings.MeasureSettings``
(``measure=as_published`` in conf/measure/ sets the original's four switches). Being
schemas, they reject unknown keys and values of the wrong type with a message that
names the key. Imported by every app (and by tests
that compose configs) before Hydra composes anything.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from ohlora_eval.apps.schemas import (
    SCHEMAS,
    Cache,
    LocalExecution,
    RayExecution,
    Sampling,
    Tracking,
)
from ohlora_eval.directions.spec import GradientSpec, TrackedSpec
from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline.cutoffs import Cutoffs
from ohlora_eval.pipeline.measure_settings import MeasureSettings
from ohlora_eval.review.settings import ReviewSettings

log = logging.getLogger(__name__)

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@dataclass
class LatestDirectionsConf(TrackedSpec):
    """``directions=latest``: the newest finished direction run fitted with exactly this
    spec on this generator and scorer (``run_id`` pins one), else fit one now. Named by its
    path, not imported: composing a config (``--help`` too) loads no MLflow or torch."""

    _target_: str = "ohlora_eval.directions.sources.TrackedDirections"
    _convert_: str = "all"
    gradient: GradientSpec = field(default_factory=GradientSpec)


def store_folder(root: str) -> str:
    """``${ohlora.store_folder:${tracking.root}}`` in conf/hydra/default.yaml: the store's
    folder, checked before Hydra makes its output folders in it. A file there, or a folder
    that cannot be made or written, ends the command with one line naming
    ``tracking.root`` (a ConfigError: exit 2) instead of Hydra's traceback."""
    path = Path(str(root)).expanduser()
    problem = None
    if path.exists() and not path.is_dir():
        problem = "is a file, not a folder"
    else:
        try:
            (path / "hydra").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = f"cannot be made ({exc.strerror or exc})"
        else:
            if not os.access(path / "hydra", os.W_OK):
                problem = "cannot be written (permission denied)"
    if problem:  # apps/cli says it in one line, exit 2
        raise ConfigError(
            f"tracking.root={root} {problem}; set tracking.root=<a writable folder> (made if"
            " missing)"
        )
    return str(root)


def register() -> None:
    """Register the schemas and the resolver (idempotent)."""
    if not OmegaConf.has_resolver("ohlora.store_folder"):
        OmegaConf.register_new_resolver("ohlora.store_folder", store_folder)
    store = ConfigStore.instance()
    store.store(group="directions", name="latest", node=LatestDirectionsConf)
    store.store(group="review", name="default", node=ReviewSettings)
    store.store(group="measure", name="default", node=MeasureSettings)
    store.store(name="schema_cutoff", node=Cutoffs)
    for name, node in SCHEMAS.items():
        store.store(name=name, node=node)


def as_typed(node: Any, schema: type) -> Any:
    """``node`` (a composed config node, or a recorded run's plain one) as an instance of
    ``schema``: its values typed and checked (the schema's ``__post_init__``), or a
    ConfigError / OmegaConf error naming the key."""
    if not OmegaConf.is_config(node):
        node = OmegaConf.create(dict(node))
    if OmegaConf.get_type(node) is not schema:
        node = OmegaConf.merge(OmegaConf.structured(schema), node)
    return OmegaConf.to_object(node)


def execution_schema(node: Any) -> type:
    """The schema of an ``execution`` node: by its ``kind`` (local when absent)."""
    kind = (node or {}).get("kind", "local")
    if kind not in ("local", "ray"):
        raise ConfigError(f"execution.kind={kind!r} must be one of local, ray")
    return RayExecution if kind == "ray" else LocalExecution


@dataclass
class Settings:
    """A screening's settings, typed and checked once (``settings(cfg)``): what the run
    judges with, how it samples, where it records and where it measures."""

    cutoff: Cutoffs
    sampling: Sampling
    tracking: Tracking
    cache: Cache
    execution: LocalExecution | RayExecution
    review: ReviewSettings
    measure: MeasureSettings


def settings(cfg: Any) -> Settings:
    """The typed settings of a composed (or replayed) screening config."""
    execution = cfg.get("execution") or {"kind": "local"}
    return Settings(
        cutoff=Cutoffs.of(cfg.cutoff),
        sampling=as_typed(cfg.sampling, Sampling),
        tracking=as_typed(cfg.tracking, Tracking),
        cache=as_typed(cfg.cache, Cache),
        execution=as_typed(execution, execution_schema(execution)),
        review=ReviewSettings.from_cfg(_plain(cfg.get("review"))),
        measure=measure_settings({"measure": _plain(cfg.get("measure"))}),  # not all of cfg
    )


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def check_all(cfg: Any) -> None:
    """Every schema's checks on a command's composed config, before the command starts
    (``apps/cli.hydra_app``): ``OmegaConf.to_object`` of each node that has a schema runs its
    ``__post_init__`` (a command's own required keys, ``run_id: ???``, it says itself)."""
    for key in cfg:
        node = cfg._get_node(key)
        if OmegaConf.is_dict(node) and dataclasses.is_dataclass(OmegaConf.get_type(node)):
            OmegaConf.to_object(node)


def measure_settings(resolved: Mapping[str, Any]) -> MeasureSettings:
    """The checked ``measure`` settings of a resolved config (clean defaults when absent,
    e.g. a selection recorded before the switches existed)."""
    return MeasureSettings(**dict(resolved.get("measure") or {})).checked()


register()
