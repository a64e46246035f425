"""Config schemas registered with Hydra's ConfigStore: one source for each setting.

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

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from ohlora_eval.directions.spec import GradientSpec, TrackedSpec
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
    ``tracking.root`` (exit 2) instead of Hydra's traceback."""
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
    if problem:
        log.error(
            f"ohlora_eval: error: tracking.root={root} {problem}; set tracking.root=<a"
            " writable folder> (made if missing)"
        )
        raise SystemExit(2)
    return str(root)


def register() -> None:
    """Register the schemas and the resolver (idempotent)."""
    if not OmegaConf.has_resolver("ohlora.store_folder"):
        OmegaConf.register_new_resolver("ohlora.store_folder", store_folder)
    store = ConfigStore.instance()
    store.store(group="directions", name="latest", node=LatestDirectionsConf)
    store.store(group="review", name="default", node=ReviewSettings)
    store.store(group="measure", name="default", node=MeasureSettings)


def measure_settings(resolved: Mapping[str, Any]) -> MeasureSettings:
    """The checked ``measure`` settings of a resolved config (clean defaults when absent,
    e.g. a selection recorded before the switches existed)."""
    return MeasureSettings(**dict(resolved.get("measure") or {})).checked()


register()
