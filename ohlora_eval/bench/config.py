"""The app's own config, composed as the CLI composes it: where the bench takes the models'
settings, the chunk size (``sampling.vectors_per_batch``) and the edit grid
(``sampling.grid`` in conf/sampling/default.yaml, the one definition of the grid).

Times nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig

from ohlora_eval.pipeline.edit import grid_points
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

GRID_SOURCE = "sampling.grid of conf/sampling/default.yaml (Oh-LoRA v3.1's 2 x 5 x 5)"


def compose(overrides: Sequence[str]) -> DictConfig:
    """The app's config (``conf/config.yaml``) composed with ``overrides``, as the CLI would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import ohlora_eval.apps  # noqa: F401 - registers the config schemas (directions=latest)
    from ohlora_eval.apps.config import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def config_grid(cfg: DictConfig) -> np.ndarray:
    """The edit grid the config screens with: (m, 3) eyes/mouth/pose weights."""
    return grid_points({p: list(cfg.sampling.grid[p]) for p in CORE_PROPERTIES})


def model_settings(node: Any) -> str:
    """The speed-relevant settings of a model's config node, as ``key=value, ...``."""
    keys = ("resolution", "batch_size", "edit_scale", "seed", "calibration_n", "postprocess")
    return ", ".join(f"{k}={node[k]}" for k in keys if k in node)
