"""The two batched variants every section times.

(p) ``pipeline_scores``: the SHIPPED measuring step, ``pipeline.measure.measure``
    with the default ``MeasureContext`` (no cache, no progress bar; chunking, padding,
    grouping and image statistics exactly as the screening runs them; nothing
    re-implemented here).
(a) ``bare_forward``: the ceiling, ``generator.synthesize`` + ``scorer.score`` on
    edited mid vectors made beforehand (by the shipped ``to_mid`` and
    ``edited_mids``, not timed), at one fixed batch size with the models' own
    ``batch_size`` chunking raised to it. It is what the models can do, not a copy
    of the pipeline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ohlora_eval.pipeline.edit import EditSetup, edited_mids
from ohlora_eval.pipeline.measure import ImageStats, measure
from ohlora_eval.pipeline.model_calls import GroupFn, to_mid
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES, Generator, PropertyScorer


def pipeline_scores(
    setup: EditSetup,
    latents: Tensor,
    chunk: int,
    groups_of: GroupFn | None = None,
    image_stats: ImageStats | None = None,
) -> np.ndarray:
    """(p): every vector's edit grid through ``measure``, no cache: (n, m, 3) float32.

    ``measure``'s default context: no cache, no progress bar, this process.
    """
    return measure(setup, latents, chunk, groups_of=groups_of, image_stats=image_stats).scores


@contextlib.contextmanager
def batch_cap(*models: Any, size: int) -> Iterator[None]:
    """Temporarily set the models' own ``batch_size`` chunking so a call runs at ``size``.

    The ceiling must measure the forward at the batch size it names, not at the
    internal chunk size a config chose for memory reasons.
    """
    saved = [(m, m.batch_size) for m in models if hasattr(m, "batch_size")]
    try:
        for m, _ in saved:
            m.batch_size = int(size)
        yield
    finally:
        for m, old in saved:
            m.batch_size = old


def score_matrix(scores: dict[str, Tensor]) -> np.ndarray:
    """{property: (n,)} scores -> (n, 3) float32 eyes/mouth/pose."""
    return np.stack([scores[p].detach().float().cpu().numpy() for p in CORE_PROPERTIES], -1)


def bare_forward(
    generator: Generator, scorer: PropertyScorer, mids: Tensor, layer: str, batch: int
) -> np.ndarray:
    """(a): ``synthesize`` + ``score`` over ``mids`` in batches of ``batch``: (n, 3) scores."""
    parts = []
    with batch_cap(generator, scorer, size=batch), torch.inference_mode():
        for lo in range(0, mids.shape[0], batch):
            images = generator.synthesize(mids[lo : lo + batch], layer)
            parts.append(score_matrix(scorer.score(images)))
    return np.concatenate(parts)


def all_edited_mids(setup: EditSetup, latents: Tensor) -> Tensor:
    """The images' mid vectors in pipeline order (vector-major), for the ceiling; not timed.

    Ungrouped directions only (the ceiling never scores unedited images to group them).
    """
    with torch.inference_mode():
        mid = to_mid(setup.generator, latents, setup.layer)
        return edited_mids(mid, setup.directions.for_vectors(mid), setup.steps).clone()
