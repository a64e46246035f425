"""Sampling faces and measuring them, in batches: the common first step of fitting directions
and of grouping evaluated vectors.

The work unit is a batch of ``batch`` faces (2,000 by default) starting at a multiple of
``batch``: its mid vectors and scores depend only on its latents and its position (the
dropout draws of ``measure.scorer_mode=train`` are seeded by it), so a batch measured here
and one measured by a Ray worker (a ``FaceJob`` sent to ``pipeline/executor.py``, run on the
worker's ``FaceSetup``) are the same numbers.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ohlora_eval.pipeline.context import MeasureContext
from ohlora_eval.pipeline.fidelity import round_trip, scorer_mode, seeded, vector_seed
from ohlora_eval.pipeline.measure_settings import MeasureSettings
from ohlora_eval.pipeline.model_calls import score, synthesize, to_mid

BATCH = 2000
"""Faces per batch (and per job sent to a worker)."""


@dataclass(frozen=True)
class FaceSetup:
    """What turns latents into scored faces (a direction fit's sample; what its Ray
    worker holds): the two models, the layer of the mid vectors and how to measure."""

    generator: Any
    scorer: Any
    layer: str
    measure_settings: MeasureSettings = field(default_factory=MeasureSettings)


def face_batch(faces: FaceSetup, z: Tensor, lo: int) -> tuple[Tensor, dict[str, np.ndarray]]:
    """Faces ``lo .. lo + len(z)`` of a sample: (mid vectors as float32, {property: (n,)
    float32 scores}). ``faces.measure_settings`` applies the file round trip and the
    scorer's train mode, its dropout draws seeded from ``dropout_seed`` and ``lo``."""
    generator, scorer, settings = faces.generator, faces.scorer, faces.measure_settings
    draws = seeded(vector_seed(settings.dropout_seed, -1 - lo)) if settings.train else nullcontext()
    with torch.no_grad():  # not inference_mode: the mid vectors are used after this
        mid = to_mid(generator, z, faces.layer).float()
    with torch.inference_mode(), scorer_mode(scorer, settings), draws:
        images = round_trip(synthesize(generator, mid, faces.layer), settings)
        s = score(scorer, images)
    return mid, {p: s[p].detach().float().cpu().numpy() for p in scorer.properties}


@dataclass(frozen=True)
class FaceJob:
    """One batch of a direction fit's sample: faces ``[lo, hi)``, their latents."""

    lo: int
    hi: int
    latents: np.ndarray

    def run(self, state: FaceSetup) -> dict[str, np.ndarray]:
        t = time.perf_counter()
        z = torch.from_numpy(np.array(self.latents))  # the generator moves it to its device
        mid, scores = face_batch(state, z, self.lo)
        return {
            "mid": mid.cpu().numpy(),
            **scores,
            "seconds": np.array(time.perf_counter() - t),
        }


def sample_and_score(
    faces: FaceSetup,
    n: int,
    seed: int,
    *,
    batch: int = BATCH,
    context: MeasureContext = MeasureContext(),
) -> tuple[Tensor, Tensor, dict[str, np.ndarray]]:
    """n latents from ``seed`` -> (latents, mid vectors, scores), ``batch`` faces at a time.

    ``context.executor`` (e.g. a ``RayExecutor`` whose workers hold these models) measures
    the batches elsewhere; the numbers are the same as here (``face_batch`` on the same
    batches), and the mid vectors come back on the CPU."""
    z = faces.generator.sample_latents(n, seed)
    starts = range(0, n, batch)
    properties = list(faces.scorer.properties)
    if context.executor is not None:
        mid, scores = _remote(context, z, starts, batch, properties)
        return z, mid, scores
    mids: list[Tensor] = []
    parts: dict[str, list[np.ndarray]] = {p: [] for p in properties}
    bar = tqdm(
        total=n, desc="sampling faces", unit="face", leave=False, disable=not context.progress
    )
    for lo in starts:
        m, s = face_batch(faces, z[lo : lo + batch], lo)
        mids.append(m)
        for p in parts:
            parts[p].append(s[p])
        bar.update(m.shape[0])
    bar.close()
    return z, _cat(mids, z), {p: _cat_np(v) for p, v in parts.items()}


def _remote(
    context: MeasureContext, z: Tensor, starts: range, batch: int, properties: list[str]
) -> tuple[Tensor, dict[str, np.ndarray]]:
    """Every batch measured by ``context.executor``, placed by its position."""
    executor = context.executor
    n = z.shape[0]
    zs = z.detach().cpu().numpy()
    jobs = [FaceJob(lo, min(n, lo + batch), zs[lo : lo + batch]) for lo in starts]
    mid: np.ndarray | None = None
    scores = {p: np.zeros(n, np.float32) for p in properties}
    bar = tqdm(
        total=n, desc="sampling faces", unit="face", leave=False, disable=not context.progress
    )
    for lo, hi, got, _ in executor.run(jobs):
        if mid is None:
            mid = np.zeros((n, got["mid"].shape[1]), np.float32)
        mid[lo:hi] = got["mid"]
        for p in properties:
            scores[p][lo:hi] = got[p]
        bar.update(hi - lo)
        bar.set_postfix_str(executor.stats.line("batches"))
    bar.close()
    return torch.from_numpy(mid if mid is not None else np.zeros((0, 0), np.float32)), scores


def _cat(parts: list[Tensor], z: Tensor) -> Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, 0, device=z.device)


def _cat_np(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)
