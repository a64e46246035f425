"""Sampling faces and measuring them, in batches: the common first step of fitting directions
and of grouping evaluated vectors.

The work unit is a batch of ``batch`` faces (2,000 by default) starting at a multiple of
``batch``: its mid vectors and scores depend only on its latents and its position (the
dropout draws of ``measure.scorer_mode=train`` are seeded by it), so a batch is the same
numbers wherever the executor of ``pipeline/executor.py`` runs its ``FaceJob`` (on this
process's ``FaceSetup`` or a Ray worker's).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ohlora_eval.pipeline.context import MeasureContext
from ohlora_eval.pipeline.executor import LocalExecutor
from ohlora_eval.pipeline.fidelity import round_trip, scorer_mode, seeded, vector_seed
from ohlora_eval.pipeline.measure_settings import MeasureSettings
from ohlora_eval.pipeline.model_calls import score, synthesize, to_mid
from ohlora_eval.progress import Bar, Step

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
    step: Step | None = None,
) -> tuple[Tensor, Tensor, dict[str, np.ndarray]]:
    """n latents from ``seed`` -> (latents, mid vectors on the CPU, scores), ``batch`` faces
    at a time, each batch a ``FaceJob`` run by ``context.executor`` (None: this process; e.g.
    a ``RayExecutor`` whose workers hold these models): the same ``face_batch`` on the same
    batches, so the same numbers wherever they ran. Each finished batch moves the bar on
    (``context.progress``) and ``step`` (a running ``progress.phase`` counting the faces,
    whose lines say how many are done and about how long is left)."""
    z = faces.generator.sample_latents(n, seed)
    zs = z.detach().cpu().numpy()
    executor = context.executor or LocalExecutor(faces)
    jobs = (FaceJob(lo, min(n, lo + batch), zs[lo : lo + batch]) for lo in range(0, n, batch))
    mid: np.ndarray | None = None
    scores = {p: np.zeros(n, np.float32) for p in faces.scorer.properties}
    with Bar(
        total=n, desc="sampling faces", unit="face", leave=False, disable=not context.progress
    ) as bar:
        for lo, hi, got, _ in executor.run(jobs):
            if mid is None:
                mid = np.zeros((n, got["mid"].shape[1]), np.float32)
            mid[lo:hi] = got["mid"]
            for p in scores:
                scores[p][lo:hi] = got[p]
            if not isinstance(executor, LocalExecutor):  # each worker's share
                bar.set_postfix_str(executor.stats.line("batches"), refresh=False)
            bar.update(hi - lo)
            if step is not None:
                step.advance(hi - lo)
    return z, torch.from_numpy(mid if mid is not None else np.zeros((0, 0), np.float32)), scores
