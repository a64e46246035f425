"""Configs composed the way the apps compose them, and the values tests read from ``conf/``."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import ohlora_eval.apps  # noqa: F401 - registers the config schemas before any compose
from helpers.paths import CONF_DIR

# Small but real: enough vectors and fitting samples for every path to run.
SMALL = [
    "sampling.n_vectors=24",
    "sampling.vectors_per_batch=8",
    "directions.n=1500",
    "directions.gradient.epochs=3",
    "tracking.grids.passed=2",
    "tracking.grids.best=1",
    "tracking.progress=false",
    "device=cpu",
]


def composer(store: Path):
    """compose("config", overrides) with the given store and small sizes."""

    def _make(*overrides: str, small: bool = True):
        base = SMALL if small else []
        if any(o.startswith("directions=") for o in overrides):  # another source: no fit keys
            base = [o for o in base if not o.startswith("directions.")]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[*base, f"tracking.root={store}", *overrides])

    return _make


def compose_app(name: str, store: Path, *overrides: str):
    """Any command's config (``conf/<name>.yaml``) with the given store, as its app composes it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=[f"tracking.root={store}", *overrides])


def conf_grid() -> dict[str, list[float]]:
    """The default edit grid, from its one definition (conf/sampling/default.yaml)."""
    grid = OmegaConf.load(CONF_DIR / "sampling" / "default.yaml").grid
    return {p: list(v) for p, v in grid.items()}


def conf_cutoffs() -> dict[str, float]:
    """Oh-LoRA v3.1's cutoffs, from their one definition (conf/cutoff/ohlora_v3_1.yaml)."""
    node = OmegaConf.load(CONF_DIR / "cutoff" / "ohlora_v3_1.yaml")
    return {k: v for k, v in node.items() if k != "defaults"}  # the values, not the schema
