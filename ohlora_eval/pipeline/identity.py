"""Identity across the edit grid: is each edited face still the vector's own person?

For a vector, its *unedited* face (every weight 0; the grid itself has no eyes 0) and its m
edited faces are generated exactly as the measuring step generates them, embedded by an
identity model (``protocols.IdentityModel``, e.g. dlib's face ResNet) and compared: the
distance of each edited face from the unedited one. Per vector (``identity_columns``):

- ``identity_max`` / ``identity_mean``: the largest / mean distance over the m edits;
- ``identity_eyes``, ``identity_mouth``, ``identity_pose``: the largest distance between
  two edited faces that differ *only* in that property's weight (which edit changes the
  person; the other weights held at any of their grid values);
- ``identity_worst_pm_idx``: the grid cell (``pm_idx``) farthest from the unedited face;
- ``identity_unaligned``: faces of the m + 1 the model could not align (NaN descriptors),
  and ``identity_note`` why. Any such face makes the vector's distances NaN ("not known",
  never "kept").

A vector that was not measured (outside the scope) has NaN in every column.

Measuring is the expensive part (a descriptor costs far more than a landmark), so a
screening measures only the vectors whose verdict it can change (``in_scope``): by default
those that clear every cutoff less ``review.near_miss_margin``, the ones a person reviews.
Embeddings are kept per measurement and identity model (``pipeline.cache.EmbeddingCache``),
so a re-judge, a sweep point or a later run re-uses them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.cache import EmbeddingCache
from ohlora_eval.pipeline.edit import EditSetup, edited_mids
from ohlora_eval.pipeline.fidelity import round_trip
from ohlora_eval.pipeline.judge import IDENTITY_COLUMNS
from ohlora_eval.pipeline.model_calls import computing, synthesize, to_mid
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.progress import HEARTBEAT_S, Bar, on_terminal, phase, say

SCOPES = ("near_pass", "passed", "all")
NOT_MEASURED = (
    "identity: not measured (identity=none; identity=dlib_resnet measures it on real faces,"
    " as experiment=real_faces does)"
)
STEP_IMAGES = 256
"""Faces generated and embedded together (a few vectors' m + 1 faces)."""


def in_scope(
    per_vector: pd.DataFrame, cutoffs: Mapping[str, float], margin: float, scope: str
) -> np.ndarray:
    """(n,) bool: the vectors a screening measures identity for. ``near_pass``: every |r|
    at least its cutoff less ``margin`` (the passed vectors and the near misses a person
    reviews); ``passed``: every |r| at least its cutoff; ``all``. A vector with a face not
    found is never in scope (it fails whatever its identity)."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {SCOPES}")
    n = len(per_vector)
    if scope == "all":
        return np.ones(n, dtype=bool)
    gap = judge.shortfall(per_vector, cutoffs).to_numpy()
    limit = float(margin) if scope == "near_pass" else 0.0
    ok = gap <= limit + 1e-12
    if judge.NO_FACE in per_vector.columns:
        ok &= per_vector[judge.NO_FACE].fillna(0).to_numpy() == 0
    return ok


def with_unedited(steps: np.ndarray) -> np.ndarray:
    """The grid's moves with a row of zeros first: row 0 is the unedited face."""
    steps = np.asarray(steps, dtype=np.float64)
    return np.vstack([np.zeros((1, steps.shape[1])), steps])


def grid_faces(setup: EditSetup, latents: Tensor, groups: Sequence[str]) -> Tensor:
    """(k, latent_dim) vectors -> (k * (m + 1), 3, H, W): each vector's unedited face, then
    its m edits in ``pm_idx`` order, generated as the measuring step generates them (the
    same directions for its group, the same edit precision, the same file round trip)."""
    generator, layer, settings = setup.generator, setup.layer, setup.measure_settings
    mid = to_mid(generator, latents, layer)
    grouped = list(groups) if setup.directions.grouped else None
    dirs = setup.directions.for_vectors(mid, grouped, settings.edit_torch_dtype)
    edited = edited_mids(mid, dirs, with_unedited(setup.steps), settings.edit_torch_dtype)
    return round_trip(synthesize(generator, edited, layer), settings)


@dataclass
class Embeddings:
    """The identity measurement of some of a run's vectors: row -> (m + 1, d) descriptors
    (row 0 unedited; NaN rows not aligned) and, per face, why it is NaN ("" otherwise)."""

    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    reasons: dict[int, list[str]] = field(default_factory=dict)
    measured: int = 0  # vectors embedded now
    reused: int = 0  # vectors read from the cache
    seconds: float = 0.0  # generating and embedding now

    @property
    def faces_per_sec(self) -> float:
        if not self.measured or self.seconds <= 0:
            return float("nan")
        m1 = next(iter(self.vectors.values())).shape[0]
        return self.measured * m1 / self.seconds


def _embedded(model: Any, images: Tensor) -> tuple[np.ndarray, list[str]]:
    """The model's descriptors and reasons (``embed_detailed`` when it has one)."""
    detailed = getattr(model, "embed_detailed", None)
    if detailed is not None:
        got = detailed(images)
        return np.asarray(got.vectors, dtype=np.float32), list(got.reasons)
    vectors = np.asarray(model.embed(images), dtype=np.float32)
    bad = ~np.isfinite(vectors).all(axis=1)
    return vectors, ["the identity model gave no descriptor" if b else "" for b in bad]


def measure_identity(
    setup: EditSetup,
    model: Any,
    latents: Any,
    rows: Sequence[int],
    groups: Sequence[str],
    *,
    cache: EmbeddingCache | None = None,
    progress: bool = False,
) -> Embeddings:
    """The descriptors of vectors ``rows`` of the run (``latents[row]``, in group
    ``groups[row]``): from ``cache`` where kept, the others generated and embedded a few
    vectors at a time (each step kept at once: a run that dies resumes). Reported on the
    terminal: a bar (``progress``, on a terminal) or a line every few seconds, and a line
    at the end."""
    rows = sorted(int(r) for r in rows)
    out = Embeddings()
    kept = cache.load() if cache is not None else {}
    todo = []
    for row in rows:
        if row in kept:
            out.vectors[row], out.reasons[row] = kept[row]
            out.reused += 1
        else:
            todo.append(row)
    m1 = setup.m + 1
    name = getattr(model, "name", type(model).__name__)
    say(
        f"identity ({name}): {len(rows):,} vectors in scope, {out.reused:,} kept from an"
        f" earlier run, {len(todo):,} to measure ({len(todo) * m1:,} faces)"
    )
    if not todo:
        return out
    per_step = max(1, STEP_IMAGES // m1)
    t0 = time.perf_counter()
    bar_shown = progress and on_terminal()  # piped or in a file: the phase's lines instead
    beat = HEARTBEAT_S if not bar_shown else 1e6  # a bar on the terminal says it instead
    with (
        phase(f"identity: embedding {len(todo) * m1:,} faces", len(todo), "vectors", beat) as step,
        Bar(
            total=len(todo), desc="identity", unit="vec", disable=not bar_shown, dynamic_ncols=True
        ) as bar,
        computing(setup),
        torch.inference_mode(),
    ):
        for lo in range(0, len(todo), per_step):
            part = todo[lo : lo + per_step]
            z = torch.cat([torch.as_tensor(np.asarray(latents[r : r + 1])) for r in part])
            images = grid_faces(setup, z.float(), [groups[r] for r in part])
            vectors, reasons = _embedded(model, images)
            vectors = vectors.reshape(len(part), m1, -1)
            for i, row in enumerate(part):
                out.vectors[row] = vectors[i]
                out.reasons[row] = reasons[i * m1 : (i + 1) * m1]
            if cache is not None:
                cache.save(part, vectors, [out.reasons[r] for r in part])
            out.measured += len(part)
            step.advance(len(part))
            bar.update(len(part))
    out.seconds = time.perf_counter() - t0
    say(
        f"identity: {out.measured * m1:,} faces embedded at {out.faces_per_sec:,.0f} faces/s"
        f" ({out.seconds:.1f} s)"
    )
    return out


@dataclass
class IdentityTable:
    """A run's identity figures: ``columns`` (n rows, ``IDENTITY_COLUMNS``) and ``distances``
    (n, m): each edited face's distance from the unedited one (NaN: not measured)."""

    columns: pd.DataFrame
    distances: np.ndarray


def pairwise(vectors: np.ndarray) -> np.ndarray:
    """(k, d) -> (k, k) Euclidean distances."""
    diff = vectors[:, None, :].astype(np.float64) - vectors[None, :, :]
    return np.sqrt((diff * diff).sum(-1))


def only_differs(grid: np.ndarray, k: int) -> np.ndarray:
    """(m, m) bool: cells that differ in property ``k``'s weight and in no other."""
    grid = np.asarray(grid, dtype=np.float64)
    same = grid[:, None, :] == grid[None, :, :]
    others = [j for j in range(grid.shape[1]) if j != k]
    return same[:, :, others].all(-1) & ~same[:, :, k]


def identity_columns(found: Embeddings, grid: np.ndarray, n: int) -> IdentityTable:
    """Per-vector identity columns for the ``n`` vectors of a run (see the module's words)."""
    grid = np.asarray(grid, dtype=np.float64)
    m = grid.shape[0]
    cols: dict[str, Any] = {c: np.full(n, np.nan) for c in IDENTITY_COLUMNS}
    cols["identity_note"] = np.full(n, "", dtype=object)
    distances = np.full((n, m), np.nan)
    masks = [only_differs(grid, k) for k in range(len(CORE_PROPERTIES))]
    for row, vectors in found.vectors.items():
        bad = ~np.isfinite(vectors).all(axis=1)
        cols["identity_unaligned"][row] = float(bad.sum())
        if bad.any():
            why = sorted({r for r in found.reasons.get(row, []) if r})
            cols["identity_note"][row] = "; ".join(why) or "no descriptor"
            continue
        d = pairwise(vectors)
        distances[row] = d[0, 1:]
        edits = d[1:, 1:]
        cols["identity_max"][row] = float(distances[row].max())
        cols["identity_mean"][row] = float(distances[row].mean())
        cols["identity_worst_pm_idx"][row] = float(np.argmax(distances[row]))
        for k, p in enumerate(CORE_PROPERTIES):
            cols[f"identity_{p}"][row] = float(edits[masks[k]].max()) if masks[k].any() else 0.0
    return IdentityTable(pd.DataFrame(cols)[IDENTITY_COLUMNS], distances)


def cell_label(grid: np.ndarray, pm_idx: float) -> str:
    """``eyes +1.2 mouth -1.8 pose +0.6`` for a grid cell (empty when unknown)."""
    try:
        i = int(pm_idx)
    except (TypeError, ValueError):
        return ""
    if not 0 <= i < len(grid):
        return ""
    return " ".join(f"{p} {float(w):+.1f}" for p, w in zip(CORE_PROPERTIES, grid[i]))
