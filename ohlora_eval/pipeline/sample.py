"""Sampling faces and measuring them, batched: the common first step of fitting directions
and of grouping evaluated vectors."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ohlora_eval.pipeline.fidelity import (
    MeasureSettings,
    round_trip,
    scorer_mode,
    seeded,
    vector_seed,
)
from ohlora_eval.pipeline.measure import score, synthesize, to_mid
from ohlora_eval.pipeline.protocols import Generator, PropertyScorer


def score_mids(
    generator: Generator,
    scorer: PropertyScorer,
    mid: Tensor,
    layer: str,
    *,
    batch: int = 2000,
    progress: bool = False,
    desc: str = "scoring",
    measure: MeasureSettings | None = None,
) -> dict[str, np.ndarray]:
    """Generate from mid vectors and score, in batches: {property: (n,) float32}.

    ``measure`` applies the file round trip and the scorer's train mode (its dropout
    draws seeded per batch from ``dropout_seed`` and the batch's position)."""
    settings = measure or MeasureSettings()
    parts: dict[str, list[np.ndarray]] = {p: [] for p in scorer.properties}
    starts: Iterable[int] = range(0, mid.shape[0], batch)
    if progress:
        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    for lo in starts:
        draws = (
            seeded(vector_seed(settings.dropout_seed, -1 - lo)) if settings.train else nullcontext()
        )
        with torch.inference_mode(), scorer_mode(scorer, settings), draws:
            images = round_trip(synthesize(generator, mid[lo : lo + batch], layer), settings)
            s = score(scorer, images)
        for p in scorer.properties:
            parts[p].append(s[p].detach().float().cpu().numpy())
    return {p: np.concatenate(v) if v else np.zeros(0, np.float32) for p, v in parts.items()}


def sample_and_score(
    generator: Generator,
    scorer: PropertyScorer,
    n: int,
    seed: int,
    layer: str,
    *,
    batch: int = 2000,
    progress: bool = False,
    measure: MeasureSettings | None = None,
) -> tuple[Tensor, Tensor, dict[str, np.ndarray]]:
    """n latents from ``seed`` -> (latents, mid vectors, scores)."""
    z = generator.sample_latents(n, seed)
    mids = [to_mid(generator, z[i : i + batch], layer) for i in range(0, n, batch)]
    mid = torch.cat(mids).float()
    return (
        z,
        mid,
        score_mids(
            generator,
            scorer,
            mid,
            layer,
            batch=batch,
            progress=progress,
            desc="sampling faces",
            measure=measure,
        ),
    )
