"""The hot loop: edit, generate and score, in batches, in memory."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from .batching import ROW_MULTIPLE, pad_rows, padded_call
from .directions import Directions
from .protocols import CORE_PROPERTIES, Generator, PropertyScorer

# (images of a chunk, grid size) -> per-vector statistics, e.g. {"bg_drift": (v,)}
ImageStats = Callable[[Tensor, int], dict[str, np.ndarray]]


def edited_mids(mid: Tensor, dirs: dict[str, Tensor], grid: np.ndarray) -> Tensor:
    """(v, dim) mid vectors -> (v * m, dim): each moved by every grid point.

    Image ``i * m + j`` is vector ``i`` at grid point ``j``.
    """
    w = torch.as_tensor(grid, dtype=torch.float32, device=mid.device)  # (m, 3)
    moved = mid[:, None, :].repeat(1, w.shape[0], 1)
    # Element-wise, in a fixed order, in place (no matmul, no temporaries): each edited
    # vector's bits do not depend on how many vectors share the batch.
    for k, p in enumerate(CORE_PROPERTIES):
        moved.addcmul_(w[None, :, k, None], dirs[p].to(mid.device)[:, None, :])
    return moved.reshape(-1, mid.shape[1])


def to_mid(generator: Generator, latents: Tensor, layer: str) -> Tensor:
    return padded_call(lambda z: generator.to_mid(z, layer), latents)


def pad_multiple(model: object) -> int:
    """How a model wants its calls padded (``pad_multiple`` attribute; default 64 rows)."""
    return max(1, int(getattr(model, "pad_multiple", ROW_MULTIPLE)))


def joint_pad_multiple(generator: Generator, scorer: PropertyScorer) -> int:
    """Rows that suit both models, so generated images go to the scorer without re-padding."""
    return math.lcm(pad_multiple(generator), pad_multiple(scorer))


def synthesize(generator: Generator, mid: Tensor, layer: str) -> Tensor:
    return padded_call(lambda m: generator.synthesize(m, layer), mid, pad_multiple(generator))


def score(scorer: PropertyScorer, images: Tensor) -> dict[str, Tensor]:
    return padded_call(scorer.score, images, pad_multiple(scorer))


def score_images(scorer: PropertyScorer, images: Tensor, properties: Sequence[str]) -> np.ndarray:
    s = score(scorer, images)
    return np.stack([s[p].detach().float().cpu().numpy() for p in properties], -1)


# unedited mid vectors of a chunk -> each vector's look-alike group name
GroupFn = Callable[[Tensor], list[str]]


def measure_chunk(
    generator: Generator,
    scorer: PropertyScorer,
    latents: Tensor,
    directions: Directions,
    grid: np.ndarray,
    layer: str,
    group_fn: GroupFn | None = None,
    image_stats: ImageStats | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """One chunk of vectors: (scores (v, m, 3) float32, per-vector image stats, groups).

    Groups (when ``group_fn`` is given) come from the unedited images, as in the
    original, and pick each vector's grouped directions. The edits are generated
    and scored a few vectors at a time (about ``generator.batch_size`` images), so
    images never pile up beyond what the CPU caches or GPU memory hold.
    """
    v, m = latents.shape[0], grid.shape[0]
    step = max(1, int(getattr(generator, "batch_size", 512)) // m)
    scores = np.zeros((v, m, len(CORE_PROPERTIES)), np.float32)
    extras: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        mid = to_mid(generator, latents, layer)
        groups = group_fn(mid) if group_fn is not None else [""] * v
        dirs = directions.for_vectors(mid, groups if directions.grouped else None)
        for lo in range(0, v, step):
            hi = min(v, lo + step)
            part = {p: d[lo:hi] for p, d in dirs.items()}
            edited = edited_mids(mid[lo:hi], part, grid)
            padded, n = pad_rows(edited, joint_pad_multiple(generator, scorer))
            images = generator.synthesize(padded, layer)
            s = scorer.score(images)
            images = images[:n]
            scores[lo:hi] = np.stack(
                [s[p][:n].detach().float().cpu().numpy() for p in CORE_PROPERTIES], -1
            ).reshape(hi - lo, m, len(CORE_PROPERTIES))
            for k, a in (image_stats(images, m) if image_stats is not None else {}).items():
                extras.setdefault(k, []).append(np.asarray(a))
    return scores, {k: np.concatenate(a) for k, a in extras.items()}, groups


def measure_chunks(
    generator: Generator,
    scorer: PropertyScorer,
    latents: Tensor,
    directions: Directions,
    grid: np.ndarray,
    layer: str,
    chunk: int,
    groups: Sequence[str] | None = None,
    start: int = 0,
    image_stats: ImageStats | None = None,
) -> Iterator[tuple[int, int, np.ndarray, dict[str, np.ndarray]]]:
    """Yield ``(lo, hi, scores, extra)`` per chunk of ``chunk`` vectors (see ``measure_chunk``).

    ``groups`` gives each vector's group for grouped directions. Chunks start at
    multiples of ``chunk``, so a resumed run computes exactly the batches an
    uninterrupted one would.
    """
    n = latents.shape[0]
    for lo in range(start - start % chunk, n, chunk):
        hi = min(n, lo + chunk)
        fixed = None if groups is None else list(groups[lo:hi])
        scores, extra, _ = measure_chunk(
            generator,
            scorer,
            latents[lo:hi],
            directions,
            grid,
            layer,
            None if fixed is None else (lambda _mid, g=fixed: g),
            image_stats,
        )
        yield lo, hi, scores, extra
