"""The hot loop: edit, synthesize and score every vector's grid, in batches, in memory.

``measure`` is the one measuring step every command uses (screening, selection
of given vectors, verification, the benchmark): chunk by chunk through the
measurement cache when one is given, so a run that died resumes where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ohlora_eval.pipeline.batching import ROW_MULTIPLE, pad_rows, padded_call
from ohlora_eval.pipeline.cache import MEASURE_VERSION, MeasurementCache
from ohlora_eval.pipeline.edit import EditSetup, edited_mids
from ohlora_eval.pipeline.fidelity import (
    MeasureSettings,
    round_trip,
    scorer_mode,
    seeded,
    vector_seed,
)
from ohlora_eval.pipeline.fingerprint import digest, model_identity
from ohlora_eval.pipeline.groups import group_names
from ohlora_eval.pipeline.protocols import (
    CORE_PROPERTIES,
    GROUP_PROPERTIES,
    Generator,
    PropertyScorer,
)

# (images of a chunk, grid size) -> per-vector statistics, e.g. {"bg_drift": (v,)}
ImageStats = Callable[[Tensor, int], dict[str, np.ndarray]]
# unedited mid vectors of a chunk -> each vector's look-alike group name
GroupFn = Callable[[Tensor], list[str]]


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


def group_fn(setup: EditSetup) -> GroupFn | None:
    """Each vector's look-alike group, from scoring its unedited image (as the original).

    None when the scorer cannot group (then the directions must not be grouped).
    """
    scorer, directions = setup.scorer, setup.directions
    med = getattr(scorer, "group_medians", None) or directions.medians
    if med is None or any(p not in scorer.properties for p in GROUP_PROPERTIES):
        if directions.grouped:
            raise ValueError(
                "grouped directions need a scorer that measures the grouping properties"
                f" {list(GROUP_PROPERTIES)} and grouping medians"
            )
        return None

    def groups(mid: Tensor) -> list[str]:
        s = score(scorer, synthesize(setup.generator, mid, setup.layer))
        return group_names({p: s[p].float().cpu().numpy() for p in GROUP_PROPERTIES}, med)

    return groups


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
    and scored a few vectors at a time (about ``generator.batch_size`` images), so
    images never pile up beyond what the CPU caches or GPU memory hold. The
    ``setup.measure`` switches apply: the edit's precision, the file round trip
    before scoring, and the scorer's train mode, whose dropout draws are seeded per
    vector from ``cases`` (the vectors' case numbers; default 0..v-1).
    """
    generator, scorer, layer, grid = setup.generator, setup.scorer, setup.layer, setup.grid
    settings = setup.measure
    v, m = latents.shape[0], setup.m
    cases = list(range(v)) if cases is None else [int(c) for c in cases]
    step = max(1, int(getattr(generator, "batch_size", 512)) // m)
    scores = np.zeros((v, m, len(CORE_PROPERTIES)), np.float32)
    extras: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode(), scorer_mode(scorer, settings):
        mid = to_mid(generator, latents, layer)
        groups = _groups(groups_of, mid, cases, settings)
        dirs = setup.directions.for_vectors(
            mid, groups if setup.directions.grouped else None, settings.edit_torch_dtype
        )
        for lo in range(0, v, step):
            hi = min(v, lo + step)
            part = {p: d[lo:hi] for p, d in dirs.items()}
            edited = edited_mids(mid[lo:hi], part, grid, settings.edit_torch_dtype)
            padded, n = pad_rows(edited, joint_pad_multiple(generator, scorer))
            images = generator.synthesize(padded, layer)
            seen = round_trip(images, settings)  # what the scorer sees (the file, if any)
            if settings.train:
                s = _score_per_vector(scorer, seen[:n], m, cases[lo:hi], settings)
            else:
                s = {p: x[:n] for p, x in scorer.score(seen).items()}
            images = images[:n]
            scores[lo:hi] = np.stack(
                [s[p].detach().float().cpu().numpy() for p in CORE_PROPERTIES], -1
            ).reshape(hi - lo, m, len(CORE_PROPERTIES))
            for k, a in (image_stats(images, m) if image_stats is not None else {}).items():
                extras.setdefault(k, []).append(np.asarray(a))
    return scores, {k: np.concatenate(a) for k, a in extras.items()}, groups


def _groups(
    groups_of: GroupFn | None, mid: Tensor, cases: Sequence[int], settings: MeasureSettings
) -> list[str]:
    """Each vector's look-alike group; in train mode each from its own seeded draws (the
    original grouped with dropout on too, so a vector's group could change between runs)."""
    if groups_of is None:
        return [""] * mid.shape[0]
    if not settings.train:
        return groups_of(mid)
    out: list[str] = []
    for i, case in enumerate(cases):
        with seeded(vector_seed(settings.dropout_seed, case) + 1):
            out += groups_of(mid[i : i + 1])
    return out


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
            parts.append(score(scorer, images[i * m : (i + 1) * m]))
    return {p: torch.cat([s[p] for s in parts]) for p in CORE_PROPERTIES}


@dataclass
class Measured:
    """Every vector's per-image scores, with where they came from."""

    scores: np.ndarray  # (n, m, 3) float32
    extras: dict[str, np.ndarray]  # per-vector image statistics (the image_stats hook)
    groups: list[str]
    compute_seconds: float  # summed over chunks, whenever they were computed
    reused: int  # chunks read from the cache
    computed: int  # chunks measured now

    def metrics(self, m: int) -> dict[str, float]:
        n = self.scores.shape[0]
        return {
            "images_per_sec": n * m / max(self.compute_seconds, 1e-9),
            "measure_seconds": self.compute_seconds,
            "reused_chunks": float(self.reused),
            "measured_chunks": float(self.computed),
        }


def measure(
    setup: EditSetup,
    latents: Tensor,
    chunk: int,
    *,
    groups_of: GroupFn | None = None,
    image_stats: ImageStats | None = None,
    cache: MeasurementCache | None = None,
    progress: bool = True,
    cases: Sequence[int] | None = None,
) -> Measured:
    """Every vector's scores, ``chunk`` vectors at a time: from the cache where a trustworthy
    chunk exists, else computed (and stored at once, so a run killed at any point loses at
    most one chunk). Chunks start at multiples of ``chunk``: a resumed run computes exactly
    the batches an uninterrupted one would. ``cases`` numbers the vectors (default
    0..n-1): with ``setup.measure.scorer_mode=train`` they seed each vector's dropout."""
    n, m = latents.shape[0], setup.m
    scores = np.zeros((n, m, len(CORE_PROPERTIES)), np.float32)
    extras: dict[str, np.ndarray] = {}
    groups = [""] * n
    seconds, reused, computed = 0.0, 0, 0
    with (
        cache.lock() if cache else nullcontext(),
        tqdm(
            total=n, desc="screening", unit="vec", disable=not progress, dynamic_ncols=True
        ) as bar,
    ):
        t0 = time.perf_counter()
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            got = cache.load(lo, hi) if cache else None
            if got is None:
                t = time.perf_counter()
                ids = list(range(lo, hi)) if cases is None else list(cases[lo:hi])
                s, extra, g = measure_chunk(setup, latents[lo:hi], groups_of, image_stats, ids)
                got = {
                    "scores": s,
                    "groups": np.array(g, dtype="<U16"),
                    "seconds": np.array(time.perf_counter() - t),
                    **{f"x_{k}": v for k, v in extra.items()},
                }
                if cache:
                    cache.save(lo, hi, got)
                computed += 1
            else:
                reused += 1
            scores[lo:hi] = got["scores"]
            groups[lo:hi] = [str(x) for x in got["groups"]]
            seconds += float(got["seconds"])
            for k, v in got.items():
                if k.startswith("x_"):
                    extras.setdefault(k[2:], np.full(n, np.nan))[lo:hi] = v
            bar.update(hi - lo)
            rate = hi * m / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix_str(f"{rate:,.0f} images/s" + (f", {reused} cached" if reused else ""))
    return Measured(scores, extras, groups, seconds, reused, computed)


def measurement_key(
    setup: EditSetup,
    latents: Tensor,
    chunk: int,
    model_configs: Mapping[str, Any],
    noise_seed: int | None = None,
) -> tuple[str, dict]:
    """Everything that decides the per-image scores, and nothing that only judges them.

    ``model_configs`` are the generator's and scorer's settings as configured (without
    the device: where a model runs does not change what it computes).
    """
    meta = {
        "version": MEASURE_VERSION,
        "generator": model_identity(setup.generator),
        "scorer": model_identity(setup.scorer),
        **{k: dict(v) for k, v in model_configs.items()},
        "layer": setup.layer,
        "grid": setup.grid.tolist(),
        "vectors_per_batch": chunk,
        "noise_seed": noise_seed,
        "directions_run_id": setup.directions.run_id,
        "n_vectors": int(latents.shape[0]),
    }
    if setup.measure.identity() is not None:  # only when not the clean default
        meta["measure"] = setup.measure.identity()
    key = digest(
        {**meta, "directions": setup.directions.identity(), "latents": latents.cpu().numpy()}
    )
    return key[:32], meta
