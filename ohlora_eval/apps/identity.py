"""The identity stage of a screening, from its config: the identity model built, the
vectors in its scope measured (``pipeline/identity.py``) with the descriptors kept in the
measurement cache, and what the run logs and says of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from ohlora_eval.apps.build import build_identity
from ohlora_eval.apps.config import Settings
from ohlora_eval.pipeline import identity as ident
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.cache import EmbeddingCache, MeasurementCache
from ohlora_eval.pipeline.fingerprint import digest


@dataclass
class IdentityStage:
    """What the identity stage of a run measured (``pipeline/identity.py``)."""

    name: str
    threshold: float  # cutoff.identity, or the model's same-person distance
    found: ident.Embeddings
    table: ident.IdentityTable
    folder: str  # the contact sheets' folder suffix (marks depend on model and threshold)

    def stage_metrics(self) -> dict[str, float]:
        out = {
            "identity_measured_now": float(self.found.measured),
            "identity_reused": float(self.found.reused),
            "identity_seconds": float(self.found.seconds),
        }
        if self.found.measured:
            out["identity_faces_per_sec"] = float(self.found.faces_per_sec)
        return out

    def line(self, metrics: dict[str, float], cutoffs: dict[str, float]) -> str:
        line = judge.identity_summary(metrics, self.name, judge.identity_cutoff(cutoffs))
        if self.found.measured:
            line += (
                f" ({self.found.measured * (self.table.distances.shape[1] + 1):,} faces"
                f" embedded at {self.found.faces_per_sec:,.0f} faces/s)"
            )
        if self.found.reused:
            line += f"; {self.found.reused} kept from an earlier run"
        return line


def identity_stage(
    cfg: DictConfig,
    typed: Settings,
    setup: Any,
    judged: pd.DataFrame,
    latents: Any,
    groups: list[str],
    cache: MeasurementCache | None,
) -> IdentityStage | None:
    """The identity stage, after judging r: the vectors in the model's scope (``judged``
    at the run's cutoffs) embedded, from the measurement cache where kept. ``cfg`` names
    the identity model; ``typed``: the run's checked settings."""
    model = build_identity(cfg)
    if model is None:
        return None
    cutoffs = typed.cutoff.as_dict()
    scope = str(getattr(model, "scope", "near_pass"))
    margin = typed.review.near_miss_margin
    rows = np.flatnonzero(ident.in_scope(judged, cutoffs, margin, scope))
    model_id = digest([type(model).__name__, str(getattr(model, "weights_id", "unknown"))])[:16]
    kept = EmbeddingCache(cache.dir, cache.key, model_id) if cache else None
    found = ident.measure_identity(
        setup, model, latents, rows, groups, cache=kept, progress=typed.tracking.progress
    )
    table = ident.identity_columns(found, setup.grid, len(judged))
    limit = judge.identity_cutoff(cutoffs)
    threshold = float(model.threshold if limit is None else limit)
    name = str(getattr(model, "name", type(model).__name__))
    mlflow.set_tags({"identity": name, "identity.weights_id": model_id})
    return IdentityStage(name, threshold, found, table, f"identity-{model_id[:8]}-{threshold:g}")
