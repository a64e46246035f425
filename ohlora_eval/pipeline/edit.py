"""Edit: the grid of (eyes, mouth, pose) weights and the mid vectors moved by it.

``EditSetup`` is the bundle every measuring step needs (the two models, the
directions, the grid, the layer): built once per run and passed down whole.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline.directions import Directions
from ohlora_eval.pipeline.measure_settings import MeasureSettings
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES, Generator, PropertyScorer


def grid_points(weights: Mapping[str, Sequence[float]]) -> np.ndarray:
    """All combinations, eyes slowest and pose fastest: shape (n_points, 3), float64.

    Row i is the edit of image ``pm_idx = i``. The weights come from the config
    (``sampling.grid``; Oh-LoRA v3.1's 2 x 5 x 5 grid by default).
    """
    checked = {}
    for prop in CORE_PROPERTIES:
        values = _weights(prop, weights.get(prop, ()))
        if len(set(values)) < 2:
            raise ConfigError(
                f"sampling.grid.{prop} needs at least 2 distinct weights to define a correlation;"
                f" got {values}"
            )
        checked[prop] = values
    return np.array(
        list(itertools.product(*(checked[p] for p in CORE_PROPERTIES))), dtype=np.float64
    )


def _weights(prop: str, values: object) -> list[float]:
    """``sampling.grid.<prop>`` as finite floats, or a ConfigError naming the entry."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(
            f"sampling.grid.{prop}={values!r} must be a list of numbers, e.g. [-1, 1]"
        )
    out = []
    for i, v in enumerate(values):
        try:
            if isinstance(v, bool) or v is None:
                raise TypeError
            w = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"sampling.grid.{prop}[{i}]={v!r} is not a number") from None
        if not math.isfinite(w):
            raise ConfigError(f"sampling.grid.{prop}[{i}]={v!r} must be a finite number")
        out.append(w)
    return out


PREVIEW_FRAMES = 9
"""Weights per property in a motion preview (``preview_points``)."""


def preview_points(grid: np.ndarray, frames: int = PREVIEW_FRAMES) -> np.ndarray:
    """The edits of a motion preview: for each property in turn, ``frames`` weights evenly
    from its smallest to its largest grid weight, the other two at 0; shape (3 * frames, 3),
    eyes first. Arrays in, arrays out."""
    points = np.zeros((len(CORE_PROPERTIES) * frames, len(CORE_PROPERTIES)), dtype=np.float64)
    for k in range(len(CORE_PROPERTIES)):
        column = grid[:, k]
        points[k * frames : (k + 1) * frames, k] = np.linspace(column.min(), column.max(), frames)
    return points


def edited_mids(
    mid: Tensor, dirs: dict[str, Tensor], grid: np.ndarray, dtype: torch.dtype = torch.float32
) -> Tensor:
    """(v, dim) mid vectors -> (v * m, dim) float32: each moved by every grid point.

    Image ``i * m + j`` is vector ``i`` at grid point ``j``. ``dtype`` is the precision
    of the sum (float64: as the original, which added float64 directions, then cast).
    """
    w = torch.tensor(grid, dtype=dtype, device=mid.device)  # (m, 3); a copy: never read-only
    moved = mid.to(dtype)[:, None, :].repeat(1, w.shape[0], 1)
    # Element-wise, in a fixed order, in place (no matmul, no temporaries): each edited
    # vector's bits do not depend on how many vectors share the batch.
    for k, p in enumerate(CORE_PROPERTIES):
        moved.addcmul_(w[None, :, k, None], dirs[p].to(mid.device, dtype)[:, None, :])
    return moved.reshape(-1, mid.shape[1]).float()


@dataclass(frozen=True)
class EditSetup:
    """What turns a latent vector into its scored edit grid (one per run)."""

    generator: Generator
    scorer: PropertyScorer
    directions: Directions
    grid: np.ndarray  # (m, 3) intended eyes/mouth/pose weights, from grid_points
    layer: str  # where the edits are applied: w | mapping_split1 | mapping_split2
    measure_settings: MeasureSettings = field(default_factory=MeasureSettings)  # clean default

    @property
    def m(self) -> int:
        """Images per vector (grid points)."""
        return int(self.grid.shape[0])

    @property
    def steps(self) -> np.ndarray:
        """The grid as moves along the unit directions: each weight times the generator's
        ``edit_unit`` for the layer (1 unless the generator says otherwise). The grid itself
        stays the intended weights that r is taken against."""
        return self.as_steps(self.grid)

    def as_steps(self, weights: np.ndarray) -> np.ndarray:
        """Intended (m, 3) weights as moves along the unit directions (``steps``)."""
        unit = edit_unit(self.generator, self.layer)
        return weights if unit == 1.0 else weights * unit


def edit_unit(generator: object, layer: str) -> float:
    """How far one grid unit moves a mid vector along a unit direction at ``layer`` (the
    generator's optional ``edit_unit`` mapping; 1.0, Oh-LoRA's, when it has none)."""
    units = getattr(generator, "edit_unit", None) or {}
    return float(units.get(layer, 1.0))
