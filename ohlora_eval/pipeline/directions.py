"""The directions an evaluation moves each mid vector along."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ohlora_eval.errors import UserError
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

ALL_GROUPS = "all"


@dataclass
class Directions:
    """Per property, either fixed unit vectors (one per group, or one for ``"all"``) or a
    function giving a direction at each mid vector (the gradient method).

    ``source`` is a short human label; ``run_id`` the MLflow run that produced them.
    """

    layer: str
    dim: int
    vectors: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    fields: dict[str, Callable[[Tensor], Tensor]] = field(default_factory=dict)
    method: dict[str, str] = field(default_factory=dict)
    source: str = ""
    run_id: str | None = None
    medians: dict[str, float] | None = None  # grouping medians of the fitting sample
    models: dict[str, torch.nn.Module] = field(default_factory=dict)  # behind ``fields``

    def identity(self) -> dict:
        """What these directions are, bit for bit (for the measurement cache's key)."""
        models = {
            p: {k: v.detach().cpu().numpy() for k, v in m.state_dict().items()}
            for p, m in self.models.items()
        }
        unknown = sorted(set(self.fields) - set(self.models))
        if unknown:  # a field we cannot fingerprint: never share its measurements
            return {"uncacheable": id(self)}
        return {
            "layer": self.layer,
            "dim": self.dim,
            "vectors": self.vectors,
            "models": models,
            "method": self.method,
        }

    @property
    def grouped(self) -> bool:
        return any(set(g) - {ALL_GROUPS} for g in self.vectors.values())

    def check_compatible(self, layer: str, dim: int) -> None:
        if self.layer != layer or self.dim != dim:
            raise UserError(
                f"directions ({self.source or 'given'}) are for layer {self.layer!r}"
                f" (dim {self.dim}) but the evaluation uses layer {layer!r} (dim {dim});"
                f" fit or pick directions for layer {layer!r}"
            )

    def for_vectors(
        self,
        mid: Tensor,
        groups: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> dict[str, Tensor]:
        """Unit direction per property for each mid vector: {prop: (n, dim)} in ``dtype``
        (float64 keeps direction files' values exactly as written)."""
        n = mid.shape[0]
        out: dict[str, Tensor] = {}
        for p in CORE_PROPERTIES:
            if p in self.fields:
                d = self.fields[p](mid).float()
                out[p] = (d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)).to(dtype)
                continue
            if p not in self.vectors:
                raise UserError(f"no direction for property {p!r} ({self.source})")
            table = self.vectors[p]
            if set(table) == {ALL_GROUPS}:
                # a copy: a Ray worker's arrays are read-only (as_tensor would warn)
                v = torch.tensor(table[ALL_GROUPS], dtype=dtype, device=mid.device)
                out[p] = v.expand(n, -1)
                continue
            if groups is None:
                raise ValueError(f"directions for {p!r} are grouped but no group names were given")
            missing = sorted(set(groups) - set(table))
            if missing:
                raise UserError(f"no {p!r} direction for group(s) {missing} ({self.source})")
            stacked = torch.as_tensor(np.stack([table[g] for g in groups]), dtype=dtype)
            out[p] = stacked.to(mid.device)
        return out
