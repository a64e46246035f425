"""The edit grid: which (eyes, mouth, pose) weights each vector is moved by."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from .protocols import CORE_PROPERTIES

# Oh-LoRA v3.1's test grid: 2 x 5 x 5 = 50 images per latent vector.
OHLORA_GRID: dict[str, tuple[float, ...]] = {
    "eyes": (-1.2, 1.2),
    "mouth": (-1.8, -0.9, 0.0, 0.9, 1.8),
    "pose": (-1.8, -1.2, -0.6, 0.0, 0.6),
}


def grid_points(weights: Mapping[str, Sequence[float]]) -> np.ndarray:
    """All combinations, eyes slowest and pose fastest: shape (n_points, 3), float64.

    Row i is the edit of image ``pm_idx = i``.
    """
    for prop in CORE_PROPERTIES:
        values = list(weights.get(prop, ()))
        if len(set(values)) < 2:
            raise ValueError(
                f"sampling.grid.{prop} needs at least 2 distinct weights to define a correlation;"
                f" got {values}"
            )
    return np.array(
        list(itertools.product(*(weights[p] for p in CORE_PROPERTIES))), dtype=np.float64
    )
