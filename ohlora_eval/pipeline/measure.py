"""The hot loop: edit, synthesize and score every vector's grid, in batches, in memory.

``measure`` is the one measuring step every command uses (screening, selection
of given vectors, verification, the benchmark): chunk by chunk through the
measurement cache when one is given, so a run that died resumes where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
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
) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """One chunk of vectors: (scores (v, m, 3) float32, per-vector image stats, groups).

    Groups (when ``groups_of`` is given) come from the unedited images, as in the
    original, and pick each vector's grouped directions. The edits are generated
    and scored a few vectors at a time (about ``generator.batch_size`` images), so
    images never pile up beyond what the CPU caches or GPU memory hold.
    """
    generator, scorer, layer, grid = setup.generator, setup.scorer, setup.layer, setup.grid
    v, m = latents.shape[0], setup.m
    step = max(1, int(getattr(generator, "batch_size", 512)) // m)
    scores = np.zeros((v, m, len(CORE_PROPERTIES)), np.float32)
    extras: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        mid = to_mid(generator, latents, layer)
        groups = groups_of(mid) if groups_of is not None else [""] * v
        dirs = setup.directions.for_vectors(mid, groups if setup.directions.grouped else None)
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
) -> Measured:
    """Every vector's scores, ``chunk`` vectors at a time: from the cache where a trustworthy
    chunk exists, else computed (and stored at once, so a run killed at any point loses at
    most one chunk). Chunks start at multiples of ``chunk``: a resumed run computes exactly
    the batches an uninterrupted one would."""
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
                s, extra, g = measure_chunk(setup, latents[lo:hi], groups_of, image_stats)
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
    key = digest(
        {**meta, "directions": setup.directions.identity(), "latents": latents.cpu().numpy()}
    )
    return key[:32], meta
