"""A screening's latent vectors drawn from their seed block by block, never all at once.

``generator.sample_latents(n, seed)`` holds every vector in memory (2 GB for 1,000,000
vectors of 519 values; 20.8 GB for 10,000,000). ``SeededLatents`` gives the very same
numbers without that: a generator that can continue its seeded stream
(``draw_latents(g, k)``: the next ``k`` rows from ``torch.Generator`` ``g``, so that
``sample_latents(n, seed)`` is ``draw_latents(Generator().manual_seed(seed), n)``) is
drawn ``BLOCK`` rows at a time. Why the blocks agree with one big draw: torch fills a
float tensor's normals 16 values at a time from one uniform stream, and a block of a
multiple of 16 rows holds a multiple of 16 values, so each block starts where the big draw
was (checked for every generator by tests/pipeline/test_latents.py).

The first pass over the blocks (the measurement key's digest) records the generator's state
at each block's start, so any row can be drawn again later (contact sheets, the Ray jobs)
from its block alone. Memory: one block (8.5 MB of 519-value rows) and the states (5 KB a
block).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

BLOCK = 4096
"""Rows per block: a multiple of 16 (see above)."""

Draw = Callable[[torch.Generator, int], Tensor]


class SeededLatents:
    """The latents ``0 .. n-1`` of ``generator.sample_latents(n, seed)``, drawn on demand.

    Slicing (``latents[lo:hi]``) gives a float32 Tensor of those rows; ``blocks()`` yields
    them in order as numpy arrays; ``np.asarray(latents)`` makes them all (small n only).
    """

    def __init__(self, draw: Draw, n: int, seed: int, dim: int, block: int = BLOCK) -> None:
        if block % 16:
            raise ValueError(f"block={block} must be a multiple of 16")
        self._draw, self.n, self.seed, self.dim, self.block = draw, int(n), int(seed), dim, block
        # The generator's state at each block's start, in one array made up front: 5 KB
        # states kept one by one between the 8.5 MB blocks fragment the C heap so badly that
        # it grows by about a block per block (measured: 2 GB for 1,000,000 vectors).
        size = torch.Generator().get_state().numel()
        self._states = np.zeros((-(-self.n // block), size), np.uint8)
        self._known = 0  # blocks whose starting state is recorded
        self._cached: tuple[int, Tensor] | None = None  # the last block drawn

    # --- array-like ------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.dim)

    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.n

    def _block(self, b: int) -> Tensor:
        """Rows ``b * block`` onward (one block), drawn from the state recorded at its start."""
        if self._cached is not None and self._cached[0] == b:
            return self._cached[1]
        if b >= self._known:
            self._walk_to(b)
        g = self._generator_at(b)
        rows = min(self.block, self.n - b * self.block)
        out = self._draw(g, rows).float()
        self._cached = (b, out)
        return out

    def _generator_at(self, b: int) -> torch.Generator:
        g = torch.Generator()
        g.set_state(torch.from_numpy(self._states[b].copy()))
        return g

    def _record(self, b: int, g: torch.Generator) -> None:
        if b == self._known:
            self._states[b] = g.get_state().numpy()
            self._known += 1

    def _walk_to(self, b: int) -> None:
        """Record the state at every block start up to block ``b`` (drawing the blocks)."""
        if self._known == 0:
            g = torch.Generator().manual_seed(self.seed)
            self._record(0, g)
        for k in range(self._known - 1, b):
            g = self._generator_at(k)
            self._draw(g, min(self.block, self.n - k * self.block))
            self._record(k + 1, g)

    def __getitem__(self, index: Any) -> Tensor:
        if isinstance(index, slice):
            lo, hi, step = index.indices(self.n)
            if step != 1:
                raise IndexError("SeededLatents takes slices with step 1")
            if hi <= lo:
                return torch.zeros(0, self.dim)
            parts = []
            for b in range(lo // self.block, (hi - 1) // self.block + 1):
                start = b * self.block
                block = self._block(b)
                parts.append(block[max(lo, start) - start : min(hi, start + len(block)) - start])
            return parts[0] if len(parts) == 1 else torch.cat(parts)
        rows = np.atleast_1d(np.asarray(index, dtype=np.int64))
        rows = np.where(rows < 0, rows + self.n, rows)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"row out of range 0..{self.n - 1}")
        out = torch.stack([self._block(int(r) // self.block)[int(r) % self.block] for r in rows])
        return out[0] if np.ndim(index) == 0 else out

    def blocks(self) -> Iterator[np.ndarray]:
        """Every row in order, a block at a time (float32 arrays), from one stream (recording
        each block's starting state on the first pass)."""
        g = torch.Generator().manual_seed(self.seed)
        for b in range(-(-self.n // self.block)):
            self._record(b, g)
            yield self._draw(g, min(self.block, self.n - b * self.block)).float().numpy()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate(list(self.blocks())) if self.n else np.zeros((0, self.dim))
        return out.astype(dtype or np.float32, copy=False)

    def save_npy(self, path: Any) -> None:
        """``np.save(path, rows)`` written block by block."""
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=self.shape)
        for b, block in enumerate(self.blocks()):
            out[b * self.block : b * self.block + len(block)] = block
        out.flush()
        del out


def seeded_latents(generator: Any, n: int, seed: int) -> SeededLatents | Tensor:
    """``generator.sample_latents(n, seed)``: drawn block by block when the generator can
    continue its stream (``draw_latents``), else all at once as before."""
    draw = getattr(generator, "draw_latents", None)
    if draw is None:
        return generator.sample_latents(n, seed)
    return SeededLatents(draw, n, seed, int(generator.latent_dim))


def array_of(latents: SeededLatents | Tensor | np.ndarray) -> np.ndarray | SeededLatents:
    """What a run keeps of its latents: the stream itself, or the given vectors as numpy."""
    if isinstance(latents, SeededLatents):
        return latents
    if isinstance(latents, Tensor):
        return latents.detach().cpu().numpy()
    return np.asarray(latents)
