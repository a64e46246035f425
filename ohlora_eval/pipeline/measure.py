"""The hot loop: edit, synthesize and score every vector's grid, in batches, in memory.

``measure`` is the one measuring step every command uses (screening, selection
of given vectors, verification, the benchmark): chunk by chunk through the
measurement cache when one is given, so a run that died resumes where it stopped.

How the work is cut (``measure_chunk``): each step holds about as many images as the
device wants at once (``step_vectors``): the generator's ``batch_size`` on a CPU (a few
hundred images stay in its caches), ``CUDA_STEP_IMAGES`` or more on a GPU (the models
then run full batches back to back). Each model's call is padded to its own
``pad_multiple`` only. Scores stay on the device until the chunk is done and are
copied to the host once; edited mid vectors go to a GPU through pinned memory. The
optional file round trip (CPU work) runs on one worker thread while the next step is
generated, and ``measure`` writes each finished chunk to the cache on one worker
thread while the next chunk is measured. The speed switches of ``setup.measure_settings``
(precision, channels_last, compile; on CUDA tf32 and deterministic) are applied by
``pipeline/device.py``. The padded model calls, ``step_vectors`` and ``computing`` are in
``pipeline/model_calls.py``.

A chunk is the unit of the measurement cache and of the executors: ``chunk_arrays``
measures one as the cache stores it, and a ``ChunkJob`` is one handed to the executor of
``pipeline/executor.py`` (this process's or a Ray worker's, run on its ``ScreenState``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ohlora_eval.pipeline import device as dev
from ohlora_eval.pipeline.batching import pad_rows
from ohlora_eval.pipeline.context import MeasureContext
from ohlora_eval.pipeline.edit import EditSetup, edited_mids
from ohlora_eval.pipeline.executor import LocalExecutor
from ohlora_eval.pipeline.fidelity import round_trip, scorer_mode, seeded, vector_seed
from ohlora_eval.pipeline.measure_settings import MeasureSettings
from ohlora_eval.pipeline.model_calls import (
    GroupFn,
    computing,
    pad_multiple,
    padded_rows,
    score_on_device,
    step_vectors,
    to_mid,
)
from ohlora_eval.pipeline.protocols import (
    CORE_PROPERTIES,
    PropertyScorer,
)
from ohlora_eval.progress import counting

# (images of a chunk, grid size) -> per-vector statistics, e.g. {"bg_drift": (v,)}
ImageStats = Callable[[Tensor, int], dict[str, np.ndarray]]


def _round_trip_job(images: Tensor, settings: MeasureSettings) -> Tensor:
    with torch.inference_mode():
        return round_trip(images, settings)


def measure_chunk(
    setup: EditSetup,
    latents: Tensor,
    groups_of: GroupFn | None = None,
    image_stats: ImageStats | None = None,
    cases: Sequence[int] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """One chunk of vectors: (scores (v, m, 3) float32, per-vector image stats, groups).

    Groups (when ``groups_of`` is given) come from the unedited images, as in the
    original, and pick each vector's grouped directions. The edits are generated
    and scored ``step_vectors`` vectors at a time, so images never pile up beyond
    what the CPU caches or GPU memory hold. The ``setup.measure_settings`` switches apply: the
    edit's precision, the file round trip before scoring (on a worker thread, while
    the next step is generated), the scorer's train mode, whose dropout draws are
    seeded per vector from ``cases`` (the vectors' case numbers; default 0..v-1), and
    the speed switches. Scores stay on the device until the chunk is done.
    """
    generator, scorer, layer, steps = setup.generator, setup.scorer, setup.layer, setup.steps
    settings = setup.measure_settings
    v, m = latents.shape[0], setup.m
    cases = list(range(v)) if cases is None else [int(c) for c in cases]
    parts: list[Tensor] = []
    extras: dict[str, list[np.ndarray]] = {}
    worker = (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ohlora-round-trip")
        if settings.round_trip != "none"
        else None
    )

    # A scorer that measures elsewhere (``score_async``: worker processes) is handed each
    # step as soon as it is generated, so the next step is generated while it is measured.
    overlap = hasattr(scorer, "score_async") and not settings.train and worker is None

    def finish(
        lo: int, hi: int, images: Tensor, seen: Future[Tensor] | None, started: Any = None
    ) -> None:
        """Score one generated step (what the scorer sees: the file, if any). ``images``
        may hold the generator's padding rows after the step's ``n`` images."""
        n = (hi - lo) * m
        shown = images if seen is None else seen.result()
        with dev.forward_precision(settings.precision, device):
            if started is not None:
                s = started.result()
            elif settings.train:
                s = _score_per_vector(scorer, shown[:n], m, cases[lo:hi], settings)
            else:
                s = _score_rows(scorer, shown, n)
        parts.append(torch.stack([s[p].detach().float() for p in CORE_PROPERTIES], -1))
        for k, a in (image_stats(images[:n], m) if image_stats is not None else {}).items():
            extras.setdefault(k, []).append(np.asarray(a))

    with (
        computing(setup) as device,
        torch.inference_mode(),
        scorer_mode(scorer, settings),
        worker or nullcontext(),
    ):
        step = step_vectors(v, m, generator, scorer, device)
        mid = to_mid(generator, latents, layer)
        with dev.forward_precision(settings.precision, device):
            groups = _groups(groups_of, mid, cases, settings)
        dirs = setup.directions.for_vectors(
            mid, groups if setup.directions.grouped else None, settings.edit_torch_dtype
        )
        pending: tuple[int, int, Tensor, Future[Tensor] | None, Any] | None = None
        for lo in range(0, v, step):
            hi = min(v, lo + step)
            part = {p: d[lo:hi] for p, d in dirs.items()}
            edited = edited_mids(mid[lo:hi], part, steps, settings.edit_torch_dtype)
            padded, _ = pad_rows(dev.to_device(edited, device), pad_multiple(generator))
            with dev.forward_precision(settings.precision, device):
                images = generator.synthesize(padded, layer)  # n images, then the padding
            seen = worker.submit(_round_trip_job, images, settings) if worker else None
            started = scorer.score_async(images[: (hi - lo) * m]) if overlap else None
            if pending is not None:
                finish(*pending)  # the previous step, while this one's file is written
            pending = (lo, hi, images, seen, started)
        if pending is not None:
            finish(*pending)
        host = dev.to_host(torch.cat(parts)) if parts else torch.zeros(0, len(CORE_PROPERTIES))
    scores = host.numpy().astype(np.float32, copy=False).reshape(v, m, len(CORE_PROPERTIES))
    return scores, {k: np.concatenate(a) for k, a in extras.items()}, groups


def _score_rows(scorer: PropertyScorer, images: Tensor, n: int) -> dict[str, Tensor]:
    """Scores of the first ``n`` of ``images``. When the generator's padding is exactly the
    scorer's own (``n`` rounded up to its multiple), the padded images are scored as they are
    (the padding rows are copies of the first image, as the scorer's own padding would be);
    else the ``n`` images are padded to the scorer's multiple (a scorer of multiple 1 never
    measures the generator's padding)."""
    multiple = pad_multiple(scorer)
    if images.shape[0] != n and images.shape[0] == padded_rows(n, multiple):
        fn = getattr(scorer, "score_on_device", scorer.score)
        return {p: x[:n] for p, x in fn(images).items()}
    return score_on_device(scorer, images[:n])


def _groups(
    groups_of: GroupFn | None, mid: Tensor, cases: Sequence[int], settings: MeasureSettings
) -> list[str]:
    """Each vector's look-alike group; in train mode each from its own seeded draws (the
    original grouped with dropout on too, so a vector's group could change between runs)."""
    if groups_of is None:
        return [""] * mid.shape[0]
    if not settings.train:
        return groups_of(mid)
    return groups_of(mid, [vector_seed(settings.dropout_seed, case) + 1 for case in cases])


def _score_per_vector(
    scorer: PropertyScorer,
    images: Tensor,
    m: int,
    cases: Sequence[int],
    settings: MeasureSettings,
) -> dict[str, Tensor]:
    """Train mode: each vector's m images scored under its own seeded dropout draws, so a
    vector's scores depend on the seed and its case number only (any chunk, any run)."""
    parts = []
    for i, case in enumerate(cases):
        with seeded(vector_seed(settings.dropout_seed, case)):
            parts.append(score_on_device(scorer, images[i * m : (i + 1) * m]))
    return {p: torch.cat([s[p] for s in parts]) for p in CORE_PROPERTIES}


def chunk_arrays(
    setup: EditSetup,
    latents: Tensor,
    groups_of: GroupFn | None,
    image_stats: ImageStats | None,
    cases: Sequence[int],
) -> dict[str, np.ndarray]:
    """One chunk measured, as the cache stores it: scores, groups, compute seconds and the
    image statistics (``x_<name>``). Every executor (this process, a Ray worker) calls it."""
    t = time.perf_counter()
    s, extra, g = measure_chunk(setup, latents, groups_of, image_stats, list(cases))
    return {
        "scores": s,
        "groups": np.array(g, dtype="<U16"),
        "seconds": np.array(time.perf_counter() - t),
        **{f"x_{k}": v for k, v in extra.items()},
    }


@dataclass(frozen=True)
class ScreenState:
    """What a screening's worker holds: the run's EditSetup and the hooks it passes to
    ``measure`` (the groups hook and the image statistics, each None when unused)."""

    setup: Any
    groups_of: Any = None
    image_stats: Any = None


@dataclass(frozen=True)
class ChunkJob:
    """One chunk to measure: vectors ``[lo, hi)`` of the run, their latents and case numbers."""

    lo: int
    hi: int
    latents: np.ndarray
    cases: tuple[int, ...]

    def run(self, state: ScreenState) -> dict[str, np.ndarray]:
        return chunk_arrays(
            state.setup,
            torch.from_numpy(np.array(self.latents)),  # writable: the store's are read-only
            state.groups_of,
            state.image_stats,
            list(self.cases),
        )


@dataclass
class Measured:
    """Every vector's per-image scores, with where they came from.

    Images per second, the one figure of speed this project gives (the run's line, its
    ``images_per_sec`` metric, the benchmark's pipeline rows): images generated and scored
    now over the wall time of the measuring step (``measure``: from its first chunk asked
    for until the last one is in and written to the cache)."""

    scores: np.ndarray  # (n, m, 3) float32
    extras: dict[str, np.ndarray]  # per-vector image statistics (the image_stats hook)
    groups: list[str]
    compute_seconds: float  # summed over chunks, whenever they were computed
    reused: int  # chunks read from the cache
    computed: int  # chunks measured now
    measured_vectors: int = 0  # vectors of the chunks measured now
    measured_seconds: float = 0.0  # their generating and scoring seconds, summed over chunks
    wall_seconds: float = 0.0  # the measuring step's wall time (``measure``)

    def images_per_sec(self, m: int) -> float:
        """Images generated and scored now per second of the measuring step's wall time
        (NaN when nothing was measured now)."""
        if not self.measured_vectors:
            return float("nan")
        return self.measured_vectors * m / max(self.wall_seconds, 1e-9)

    def metrics(self, m: int) -> dict[str, float]:
        """Run metrics; ``images_per_sec`` counts only the images generated and scored now,
        over the measuring step's wall time, and is NaN (not measured) when every chunk was
        re-used: reading the cache is no speed of generating and scoring. ``measure_seconds``:
        the chunks' own seconds summed (cached ones included, as they were measured)."""
        return {
            "measure_seconds": self.compute_seconds,
            "measure_wall_seconds": self.wall_seconds,
            "reused_chunks": float(self.reused),
            "measured_chunks": float(self.computed),
            "measured_images": float(self.measured_vectors * m),
            "images_per_sec": self.images_per_sec(m),
        }

    def speed_line(self, m: int) -> str:
        """What the terminal says of the speed, and what the figure is."""
        chunks = self.reused + self.computed
        if not self.measured_vectors:
            return f"no images measured (all {chunks:,} chunks re-used from the cache)"
        images = self.measured_vectors * m
        line = (
            f"{images:,} images generated and scored at {self.images_per_sec(m):,.0f} images/s"
            f" ({images:,} images in {self.wall_seconds:,.1f} s, the measuring step's wall time;"
            " no tracking or sheets)"
        )
        if self.reused:
            line += f"; {self.reused:,} of {chunks:,} chunks re-used from the cache"
        return line


def measure(
    setup: EditSetup,
    latents: Tensor,
    chunk: int,
    *,
    groups_of: GroupFn | None = None,
    image_stats: ImageStats | None = None,
    cases: Sequence[int] | None = None,
    context: MeasureContext = MeasureContext(),
) -> Measured:
    """Every vector's scores, ``chunk`` vectors at a time: from the cache where a trustworthy
    chunk exists, else computed (and stored at once, on a worker thread while the next
    chunk is measured; a run killed at any point loses at most the chunk being measured
    and the one being written). Chunks start at multiples of ``chunk``: a resumed run
    computes exactly the batches an uninterrupted one would. ``cases`` numbers the
    vectors (default 0..n-1): with ``setup.measure_settings.scorer_mode=train`` they seed
    each vector's dropout.

    ``context``: the progress shown (a bar on a terminal, else a line at least every few
    seconds: vectors done, about how long is left, images/s so far), the cache (None: nothing
    kept) and the executor that measures the chunks not cached, with the same
    ``chunk_arrays`` (None: this process, a ``LocalExecutor``; e.g.
    ``pipeline.executor.RayExecutor``). This process alone reads and writes the cache, so a
    run resumes the same way whichever measured its chunks."""
    n, m = latents.shape[0], setup.m
    cache = context.cache
    executor = context.executor or LocalExecutor(ScreenState(setup, groups_of, image_stats))
    scores = np.zeros((n, m, len(CORE_PROPERTIES)), np.float32)
    extras: dict[str, np.ndarray] = {}
    groups = [""] * n
    seconds, reused, computed = 0.0, 0, 0
    fresh = {"vectors": 0, "seconds": 0.0}  # the chunks measured now
    writing: Future[None] | None = None

    def place(lo: int, hi: int, got: Mapping[str, np.ndarray], now: bool = False) -> None:
        """A chunk's arrays into the run's (any order: each chunk has its own rows); ``now``:
        measured by this call, not read from the cache."""
        nonlocal seconds
        if now:
            fresh["vectors"] += hi - lo
            fresh["seconds"] += float(got["seconds"])
        scores[lo:hi] = got["scores"]
        groups[lo:hi] = [str(x) for x in got["groups"]]
        seconds += float(got["seconds"])
        for k, v in got.items():
            if k.startswith("x_"):
                extras.setdefault(k[2:], np.full(n, np.nan))[lo:hi] = v

    def jobs() -> Iterator[ChunkJob]:
        """The chunks not cached, each made when the executor has room for it (the latents
        of queued chunks are never all in memory at once); the cached ones placed here."""
        nonlocal reused
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            got = cache.load(lo, hi) if cache else None
            if got is None:
                ids = range(lo, hi) if cases is None else cases[lo:hi]
                z = np.asarray(latents[lo:hi], dtype=np.float32)
                yield ChunkJob(lo, hi, z, tuple(int(c) for c in ids))
                continue
            place(lo, hi, got)
            reused += 1
            shown(hi - lo)

    def shown(vectors: int) -> None:
        """The count moved on; its note: this call's images/s so far (images generated and
        scored now over the wall time since the step began: the summary's definition), or
        each worker's share, and the chunks read from the cache."""
        if isinstance(executor, LocalExecutor):
            done = fresh["vectors"] * m  # images generated and scored by this call
            rate = done / max(time.perf_counter() - t0, 1e-9)
            head = f"{rate:,.0f} images/s" if done else ""
        else:
            head = executor.stats.line() if executor.stats.chunks else ""
        cached = f"{reused} cached" if reused else ""
        bar.advance(vectors, ", ".join(x for x in (head, cached) if x))

    with (
        cache.lock() if cache else nullcontext(),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ohlora-cache") as writer,
        computing(setup),
        counting(
            f"screening {n:,} vectors",
            n,
            "vectors",
            show=context.progress,
            bar="screening",
            bar_unit="vec",
        ) as bar,
    ):
        t0 = time.perf_counter()
        for lo, hi, got, _ in executor.run(jobs()):
            if cache:
                if writing is not None:
                    writing.result()  # one write at a time; its error surfaces here
                writing = writer.submit(cache.save, lo, hi, got)
            place(lo, hi, got, now=True)
            computed += 1
            shown(hi - lo)
        if writing is not None:
            writing.result()
        wall = time.perf_counter() - t0
    return Measured(
        scores, extras, groups, seconds, reused, computed, fresh["vectors"], fresh["seconds"], wall
    )
