"""Throughput benchmark of the screening pipeline: ``python -m ohlora_eval.bench`` (``make bench``).

Why it exists: "batched, in memory" is only worth its complexity if it is much
faster than the original Oh-LoRA test (one image at a time through a JPEG file)
and close to what the models themselves can do. This prints, for the same
vectors in one process:

1. Synthetic pipeline (issue 2): images/s of (p) ``measure_chunks`` exactly as
   the evaluation runs it, (a) the bare ``synthesize`` + ``score`` forward at
   several batch sizes (the ceiling), (b) the original's way, one image at a
   time with a JPEG round trip; ratios p/a (target >= 0.8) and p/b (target >= 5).
2. Real Oh-LoRA networks (issue 5) with deterministic recipe weights on one
   vector x 50 edits: the batched pipeline vs the original-style loop vs the
   bare batched forward.
3. Cutoff sweep cost (issue 6): one full evaluation vs a 4-point
   ``cutoff.eyes`` sweep in the same store (:func:`sweep_section`).

It is a benchmark, not a test: it asserts nothing about speed and only reports
what it measured (medians of ``--repeats`` runs where runs are cheap, since a
shared machine is noisy), with the machine, threads and exact settings, as a
table on stdout and a JSON file (``mlruns/bench/<timestamp>.json`` by default).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import tracking
from .directions import Directions
from .directions.base import ALL_GROUPS
from .directions.svm import fit_svm_direction
from .grid import OHLORA_GRID, grid_points
from .measure import edited_mids, joint_pad_multiple, measure_chunks, to_mid
from .protocols import CORE_PROPERTIES, Generator, PropertyScorer
from .sample import sample_and_score

SCHEMA = "ohlora_eval.bench/1"
SWEEP_CUTOFFS: tuple[float, ...] = (0.88, 0.90, 0.92, 0.94)
TARGET_P_OVER_A = 0.8
TARGET_P_OVER_B = 5.0
TARGET_SWEEP_WITH_CACHE = 1.3
# The original wrote JPEGs with OpenCV's ``cv2.imwrite`` defaults: quality 95, 4:2:0 chroma.
JPEG_QUALITY = 95
JPEG_SUBSAMPLING = "4:2:0"


# --- small helpers ---------------------------------------------------------------------------
def _timed(fn: Callable[[], Any], device: str = "cpu") -> tuple[float, Any]:
    """Wall seconds of ``fn()`` (waiting for the device to finish) and its result."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _minor_faults() -> int:
    """Page faults of this process so far (0 where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # not on Unix
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


class _Runs:
    """Wall and process-CPU seconds (and page faults) of repeated runs of named variants.

    CPU seconds (all threads of this process) are kept next to wall seconds
    because a shared machine inflates wall time far more than CPU time; with a
    quiet machine, CPU s is about threads x wall s. Minor page faults are kept
    because fresh large buffers (which the C allocator maps and unmaps on every
    big tensor) cost more than the arithmetic on CPU.
    """

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.faults: dict[str, list[int]] = {}

    def time(self, name: str, fn: Callable[[], Any], device: str = "cpu") -> Any:
        c0, f0 = time.process_time(), _minor_faults()
        seconds, out = _timed(fn, device)
        self.wall.setdefault(name, []).append(seconds)
        self.cpu.setdefault(name, []).append(time.process_time() - c0)
        self.faults.setdefault(name, []).append(_minor_faults() - f0)
        return out

    def rate(self, name: str, images: int) -> float:
        return _ratio(images, _median(self.wall.get(name, [])))

    def cpu_rate(self, name: str, images: int) -> float:
        return _ratio(images, _median(self.cpu.get(name, [])))


def _sync(device: str) -> None:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not np.isfinite(b) or b <= 0:
        return float("nan")
    return float(a / b)


@contextlib.contextmanager
def _batch_cap(*models: Any, size: int) -> Iterator[None]:
    """Temporarily raise the models' own ``batch_size`` chunking so a call runs at ``size``.

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


def _score_matrix(scores: dict[str, Tensor]) -> np.ndarray:
    return np.stack([scores[p].detach().float().cpu().numpy() for p in CORE_PROPERTIES], -1)


def _compose(overrides: Sequence[str]):
    """The app's config (``conf/config.yaml``) composed with ``overrides``, as the CLI would."""
    from hydra import compose, initialize_config_dir

    from .cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


# --- machine -----------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, torch build and threads, load at the start."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with contextlib.suppress(OSError):
        info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


# --- the original's way: one image at a time through a JPEG file ------------------------------
def _to_uint8_hwc(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) float image in [-1, 1] -> (H, W, 3) uint8, with the original's arithmetic.

    genforce ``postprocess_image``: float64 ``(x + 1) * 127.5 + 0.5`` clipped to
    [0, 255] and truncated.
    """
    x = image[0].detach().cpu().double().numpy()
    levels = np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return levels.transpose(1, 2, 0)


def _jpeg_round_trip(pixels: np.ndarray, path: Path) -> Tensor:
    """Write ``pixels`` as a JPEG, read it back, normalise to [-1, 1]: (1, 3, H, W) float32.

    Read-back normalisation as the original's ``read_image`` + ``ToTensor`` +
    ``Normalize(0.5, 0.5)``: ``(q / 255 - 0.5) / 0.5``.
    """
    Image.fromarray(pixels).save(path, quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)
    with Image.open(path) as img:
        back = np.asarray(img.convert("RGB"))
    q = torch.from_numpy(back.copy()).permute(2, 0, 1)[None].float()
    return (q / 255.0 - 0.5) / 0.5


def original_style_scores(
    generator: Generator,
    scorer: PropertyScorer,
    latents: Tensor,
    directions: Directions,
    grid: np.ndarray,
    layer: str,
    workdir: Path,
) -> np.ndarray:
    """Score every edit of every vector the way Oh-LoRA v3.1's test did: (v, m, 3) float32.

    Per vector: its mid vector, then per grid point: move it, synthesize one
    image, convert to 8 bits, save a JPEG (``case_{i}_{vi}_pm_{k}.jpg``), read
    it back, normalise, score it alone, keep eyes/mouth/pose rounded to 4
    decimals. The correlation and the per-case CSV are left out (cheap, and the
    batched path does not time them either).
    """
    out = np.zeros((latents.shape[0], grid.shape[0], len(CORE_PROPERTIES)), np.float32)
    weights = torch.as_tensor(grid, dtype=torch.float32)
    with torch.inference_mode():
        for i in range(latents.shape[0]):
            mid = generator.to_mid(latents[i : i + 1], layer).float().cpu()
            dirs = {p: d.cpu() for p, d in directions.for_vectors(mid).items()}
            for k in range(grid.shape[0]):
                moved = mid.clone()
                for j, p in enumerate(CORE_PROPERTIES):
                    moved = moved + weights[k, j] * dirs[p]
                image = generator.synthesize(moved, layer)
                pixels = _to_uint8_hwc(image)
                back = _jpeg_round_trip(pixels, workdir / f"case_{i:03d}_000_pm_{k:03d}.jpg")
                scores = scorer.score(back)
                for j, p in enumerate(CORE_PROPERTIES):
                    out[i, k, j] = round(float(scores[p][0]), 4)
    return out


def _pipeline_scores(
    generator: Generator,
    scorer: PropertyScorer,
    latents: Tensor,
    directions: Directions,
    grid: np.ndarray,
    layer: str,
    chunk: int,
) -> np.ndarray:
    """The evaluation's hot loop, consumed completely: (n, m, 3) float32."""
    scores = np.zeros((latents.shape[0], grid.shape[0], len(CORE_PROPERTIES)), np.float32)
    for lo, hi, s, _ in measure_chunks(generator, scorer, latents, directions, grid, layer, chunk):
        scores[lo:hi] = s
    return scores


def _forward(
    generator: Generator, scorer: PropertyScorer, mids: Tensor, layer: str, batch: int
) -> np.ndarray:
    """Bare ``synthesize`` + ``score`` over ``mids`` in batches of ``batch``: (n, 3) scores."""
    parts = []
    with _batch_cap(generator, scorer, size=batch), torch.inference_mode():
        for lo in range(0, mids.shape[0], batch):
            parts.append(
                _score_matrix(scorer.score(generator.synthesize(mids[lo : lo + batch], layer)))
            )
    return np.concatenate(parts)


def _all_edited_mids(
    generator: Generator, latents: Tensor, directions: Directions, grid: np.ndarray, layer: str
) -> Tensor:
    """The images' mid vectors in pipeline order (vector-major), computed once, not timed."""
    with torch.inference_mode():
        mid = to_mid(generator, latents, layer)
        return edited_mids(mid, directions.for_vectors(mid), grid).clone()


# --- section 1: synthetic pipeline ------------------------------------------------------------
def _evaluation_chunk_hooks(
    cfg: Any, generator: Generator, scorer: PropertyScorer, layer: str, fit_scores: dict
) -> tuple[Callable[[Tensor], list[str]] | None, Any, str]:
    """What an evaluation run adds to each chunk besides the edit grid, if this package has it.

    The evaluation also scores each vector's unedited image to name its look-alike
    group and runs the review's per-image statistics on the chunk's images. Both
    are built from the package's own pieces; when they are missing (an older or
    newer package), the extra variant is left out and the reason recorded.
    """
    try:
        from .groups import group_names, medians
        from .measure import score, synthesize
        from .review import ReviewSettings, image_stats

        med = medians(fit_scores)
        stats_hook = image_stats(ReviewSettings.from_cfg(cfg.get("review")))
    except (ImportError, AttributeError, KeyError, TypeError, ValueError) as exc:
        return None, None, f"unavailable: {type(exc).__name__}: {exc}"

    def groups(mid: Tensor) -> list[str]:
        s = score(scorer, synthesize(generator, mid, layer))
        return group_names({p: s[p].float().cpu().numpy() for p in med}, med)

    return groups, stats_hook, "groups from unedited images + review image_stats"


def _evaluation_chunk_scores(
    generator: Generator,
    scorer: PropertyScorer,
    latents: Tensor,
    directions: Directions,
    grid: np.ndarray,
    layer: str,
    chunk: int,
    group_fn: Callable[[Tensor], list[str]],
    stats_hook: Any,
) -> np.ndarray:
    from .measure import measure_chunk

    scores = np.zeros((latents.shape[0], grid.shape[0], len(CORE_PROPERTIES)), np.float32)
    for lo in range(0, latents.shape[0], chunk):
        hi = min(latents.shape[0], lo + chunk)
        s, _, _ = measure_chunk(
            generator, scorer, latents[lo:hi], directions, grid, layer, group_fn, stats_hook
        )
        scores[lo:hi] = s
    return scores


def synthetic_section(args: argparse.Namespace) -> dict[str, Any]:
    """(p) pipeline vs (a) bare forward at several batch sizes vs (b) one at a time + JPEG."""
    from hydra.utils import instantiate

    cfg = _compose([f"device={args.device}"])
    layer = str(cfg.layer)
    chunk = int(cfg.sampling.vectors_per_batch)
    grid = grid_points(OHLORA_GRID)
    m = grid.shape[0]
    t_build, (generator, scorer) = _timed(
        lambda: (instantiate(cfg.generator), instantiate(cfg.scorer))
    )

    # Directions: a linear SVM per property on a fitting sample (not timed).
    ratio = float(cfg.directions.ratio)
    fit_seed = int(cfg.directions.seed)
    t_fit, (_, fit_mid, fit_scores) = _timed(
        lambda: sample_and_score(generator, scorer, args.fit_n, fit_seed, layer)
    )
    x = fit_mid.cpu().numpy()
    vectors = {
        p: {ALL_GROUPS: fit_svm_direction(x, fit_scores[p], ratio, seed=fit_seed)[0]}
        for p in CORE_PROPERTIES
    }
    directions = Directions(
        layer=layer,
        dim=x.shape[1],
        vectors=vectors,
        method=dict.fromkeys(CORE_PROPERTIES, "svm"),
        source=f"bench: svm n={args.fit_n} ratio={ratio}",
    )
    group_fn, stats_hook, eval_extra = _evaluation_chunk_hooks(
        cfg, generator, scorer, layer, fit_scores
    )

    n = args.vectors
    latents = generator.sample_latents(n, int(cfg.sampling.seed))
    n_b = min(args.per_image_vectors, n)
    mids = _all_edited_mids(generator, latents, directions, grid, layer)
    batch_sizes = sorted({int(b) for b in args.batch_sizes})

    # Warm-up (allocator, first-call paths), not timed.
    _forward(generator, scorer, mids[: min(len(mids), 256)], layer, 256)

    runs = _Runs()
    p_scores = b_scores = None
    a_diff: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="ohlora-bench-jpeg-") as tmp:
        # Interleaved repeats: noise from other processes spreads over all variants.
        for _ in range(args.repeats):
            p_scores = runs.time(
                "p",
                lambda: _pipeline_scores(
                    generator, scorer, latents, directions, grid, layer, chunk
                ),
                args.device,
            )
            if group_fn is not None:
                runs.time(
                    "p_eval",
                    lambda: _evaluation_chunk_scores(
                        generator,
                        scorer,
                        latents,
                        directions,
                        grid,
                        layer,
                        chunk,
                        group_fn,
                        stats_hook,
                    ),
                    args.device,
                )
            for b in batch_sizes:
                a = runs.time(
                    f"a{b}", lambda b=b: _forward(generator, scorer, mids, layer, b), args.device
                )
                a_diff[b] = float(np.abs(a.reshape(n, m, -1) - p_scores).max())
            b_scores = runs.time(
                "b",
                lambda: original_style_scores(
                    generator, scorer, latents[:n_b], directions, grid, layer, Path(tmp)
                ),
                args.device,
            )

    images = n * m
    sizes = {"b": n_b * m}
    rate = {k: runs.rate(k, sizes.get(k, images)) for k in runs.wall}
    cpu_rate = {k: runs.cpu_rate(k, sizes.get(k, images)) for k in runs.wall}
    best_b = max(batch_sizes, key=lambda b: rate[f"a{b}"])
    best_b_cpu = max(batch_sizes, key=lambda b: cpu_rate[f"a{b}"])
    a_best = rate[f"a{best_b}"]
    assert p_scores is not None and b_scores is not None
    jpeg_gap = np.abs(b_scores - p_scores[:n_b])
    return {
        "settings": {
            "config": "conf/config.yaml defaults" + f", device={args.device}",
            "generator": f"{type(generator).__name__}({_model_settings(cfg.generator)})",
            "scorer": f"{type(scorer).__name__}({_model_settings(cfg.scorer)})",
            "layer": layer,
            "vectors": n,
            "grid": "Oh-LoRA v3.1 2x5x5 (ohlora_eval.grid.OHLORA_GRID)",
            "images_per_vector": m,
            "images": images,
            "vectors_per_batch": chunk,
            "images_per_chunk": chunk * m,
            "latent_seed": int(cfg.sampling.seed),
            "directions": f"fit_svm_direction on {args.fit_n} sampled faces, ratio {ratio},"
            f" seed {fit_seed}, ungrouped (not timed)",
            "p_eval_extra": eval_extra,
            "ceiling_batch_sizes": batch_sizes,
            "ceiling_note": "edited mid vectors precomputed (not timed); the models' own"
            " batch_size chunking raised to the batch size",
            "per_image_vectors": n_b,
            "per_image_images": n_b * m,
            "jpeg": f"PIL, quality {JPEG_QUALITY}, {JPEG_SUBSAMPLING}"
            " (the original: genforce save_image = cv2.imwrite defaults)",
            "repeats": args.repeats,
        },
        "build_seconds": t_build,
        "fit_sampling_seconds": t_fit,
        "runs_seconds": runs.wall,
        "runs_cpu_seconds": runs.cpu,
        "runs_page_faults": runs.faults,
        "images_per_sec": {
            "p_pipeline": rate["p"],
            "p_eval_chunk": rate.get("p_eval"),
            "a_ceiling_best": a_best,
            "a_ceiling_best_batch": best_b,
            "a_ceiling_by_batch": {str(b): rate[f"a{b}"] for b in batch_sizes},
            "b_one_at_a_time": rate["b"],
        },
        "images_per_cpu_sec": {
            "p_pipeline": cpu_rate["p"],
            "p_eval_chunk": cpu_rate.get("p_eval"),
            "a_ceiling_best": cpu_rate[f"a{best_b_cpu}"],
            "a_ceiling_best_batch": best_b_cpu,
            "a_ceiling_by_batch": {str(b): cpu_rate[f"a{b}"] for b in batch_sizes},
            "b_one_at_a_time": cpu_rate["b"],
        },
        "ratios": {
            "p_over_a": _ratio(rate["p"], a_best),
            "p_over_b": _ratio(rate["p"], rate["b"]),
            "p_over_a_cpu": _ratio(cpu_rate["p"], cpu_rate[f"a{best_b_cpu}"]),
            "p_over_b_cpu": _ratio(cpu_rate["p"], cpu_rate["b"]),
            "target_p_over_a": TARGET_P_OVER_A,
            "target_p_over_b": TARGET_P_OVER_B,
        },
        "checks": {
            "max_abs_diff_p_vs_a_by_batch": {str(b): v for b, v in a_diff.items()},
            "jpeg_loop_vs_p_abs_diff_mean": float(jpeg_gap.mean()),
            "jpeg_loop_vs_p_abs_diff_max": float(jpeg_gap.max()),
        },
    }


def _model_settings(node: Any) -> str:
    keys = ("resolution", "batch_size", "edit_scale", "seed", "calibration_n", "postprocess")
    return ", ".join(f"{k}={node[k]}" for k in keys if k in node)


# --- section 2: real Oh-LoRA networks ----------------------------------------------------------
def _random_directions(layer: str, dim: int, seed: int) -> Directions:
    """One seeded random unit direction per property (speed does not depend on which)."""
    gen = torch.Generator().manual_seed(seed)
    vectors = {}
    for p in CORE_PROPERTIES:
        v = torch.randn(dim, generator=gen, dtype=torch.float32)
        vectors[p] = {ALL_GROUPS: (v / v.norm()).numpy()}
    return Directions(
        layer=layer,
        dim=dim,
        vectors=vectors,
        method=dict.fromkeys(CORE_PROPERTIES, "random"),
        source=f"bench: random unit, seed {seed}",
    )


def real_section(args: argparse.Namespace) -> dict[str, Any]:
    """StyleGAN-FineTune-v9 + merged CNN (recipe weights) on one vector: batched vs loop vs bare."""
    from .generators.stylegan_v9 import StyleGANV9Generator
    from .networks import MergedPropertyCNN, StyleGANV9Network
    from .networks.recipe import write_recipe_checkpoint
    from .scorers.ohlora_cnn import OhLoRACNNScorer

    layer = "mapping_split1"
    chunk = 40  # the default config's vectors_per_batch
    grid = grid_points(OHLORA_GRID)[: max(2, min(args.real_images, 50))]
    m = grid.shape[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ohlora-bench-real-") as tmp:
        work = Path(tmp)
        t_build, (generator, scorer) = _timed(
            lambda: (
                StyleGANV9Generator(
                    checkpoint=write_recipe_checkpoint(StyleGANV9Network(), work / "g.pth"),
                    device=args.device,
                ),
                OhLoRACNNScorer(
                    checkpoint=write_recipe_checkpoint(MergedPropertyCNN(), work / "s.pth"),
                    device=args.device,
                ),
            )
        )
        latents = generator.sample_latents(1, args.seed)
        directions = _random_directions(layer, generator.mid_dims[layer], args.seed)
        mids = _all_edited_mids(generator, latents, directions, grid, layer)
        _forward(generator, scorer, mids[:1], layer, 1)  # warm-up, not timed

        runs = _Runs()
        p_scores = runs.time(
            "pipeline",
            lambda: _pipeline_scores(generator, scorer, latents, directions, grid, layer, chunk),
            args.device,
        )
        b_scores = runs.time(
            "loop",
            lambda: original_style_scores(
                generator, scorer, latents, directions, grid, layer, work
            ),
            args.device,
        )
        sizes = sorted({min(int(b), m) for b in args.real_batch_sizes})
        for b in sizes:
            runs.time(
                f"a{b}", lambda b=b: _forward(generator, scorer, mids[:b], layer, b), args.device
            )
    ceiling = {str(b): runs.rate(f"a{b}", b) for b in sizes}
    ceiling_cpu = {str(b): runs.cpu_rate(f"a{b}", b) for b in sizes}
    best = max(ceiling, key=ceiling.get) if ceiling else None
    t_p, t_b = runs.wall["pipeline"][0], runs.wall["loop"][0]
    rate_p, rate_b = m / t_p, m / t_b
    rate_a = ceiling[best] if best else float("nan")
    cpu_p, cpu_b = runs.cpu_rate("pipeline", m), runs.cpu_rate("loop", m)
    best_cpu = max(ceiling_cpu, key=ceiling_cpu.get) if ceiling_cpu else None
    pad = joint_pad_multiple(generator, scorer)
    padded = -(-m // pad) * pad
    return {
        "settings": {
            "generator": f"StyleGANV9Generator(recipe weights, batch_size={generator.batch_size},"
            f" postprocess={generator.postprocess}, device={args.device})",
            "scorer": f"OhLoRACNNScorer(recipe weights, batch_size={scorer.batch_size},"
            f" device={args.device})",
            "weights": "deterministic recipe of shared/reference/parity"
            " (ohlora_eval.networks.recipe), written to .pth and loaded strictly",
            "generator_weights_id": generator.weights_id,
            "scorer_weights_id": scorer.weights_id,
            "layer": layer,
            "vectors": 1,
            "images": m,
            "pipeline_rows_after_padding": padded,
            "vectors_per_batch": chunk,
            "directions": directions.source,
            "latent_seed": args.seed,
            "ceiling_batch_sizes": sizes,
            "ceiling_note": "the first B edited images in one batch per batch size B,"
            " the models' batch_size chunking raised to B; warm-up: one image, not timed",
            "jpeg": f"PIL, quality {JPEG_QUALITY}, {JPEG_SUBSAMPLING}",
            "repeats": 1,
        },
        "build_seconds": t_build,
        "seconds": {"pipeline": t_p, "loop": t_b, "section_total": time.perf_counter() - t0},
        "runs_seconds": runs.wall,
        "runs_cpu_seconds": runs.cpu,
        "runs_page_faults": runs.faults,
        "images_per_sec": {
            "pipeline": rate_p,
            "loop": rate_b,
            "ceiling_best": rate_a,
            "ceiling_best_batch": int(best) if best else None,
            "ceiling_by_batch": ceiling,
        },
        "images_per_cpu_sec": {
            "pipeline": cpu_p,
            "loop": cpu_b,
            "ceiling_best": ceiling_cpu[best_cpu] if best_cpu else None,
            "ceiling_best_batch": int(best_cpu) if best_cpu else None,
            "ceiling_by_batch": ceiling_cpu,
        },
        "ratios": {
            "batched_over_loop": _ratio(rate_p, rate_b),
            "batched_over_ceiling": _ratio(rate_p, rate_a),
            "batched_over_loop_cpu": _ratio(cpu_p, cpu_b),
            "batched_over_ceiling_cpu": _ratio(cpu_p, ceiling_cpu[best_cpu] if best_cpu else None),
        },
        "checks": {
            "jpeg_loop_vs_pipeline_abs_diff_mean": float(np.abs(b_scores - p_scores).mean()),
            "jpeg_loop_vs_pipeline_abs_diff_max": float(np.abs(b_scores - p_scores).max()),
        },
    }


# --- section 3: cutoff sweep ---------------------------------------------------------------------
@contextlib.contextmanager
def _private_tracking() -> Iterator[None]:
    """Keep an inherited ``MLFLOW_TRACKING_URI`` from pointing the sweep at a real server."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def _timed_evaluation(overrides: Sequence[str]) -> dict[str, Any]:
    """One ``evaluate(cfg)`` on the composed app config; its summary print is kept out of
    the benchmark's table (and stored in the result)."""
    from .evaluate import evaluate

    cfg = _compose(overrides)
    printed = io.StringIO()
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(printed):
        result = evaluate(cfg)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    metrics = {k: float(v) for k, v in result.metrics.items()}
    return {
        "overrides": list(overrides),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "run_id": result.run_id,
        "measure_seconds": metrics.get("measure_seconds", float("nan")),
        "images_per_sec": metrics.get("images_per_sec", float("nan")),
        "reused_chunks": metrics.get("reused_chunks"),
        "measured_chunks": metrics.get("measured_chunks"),
        "passed": int(metrics.get("passed", -1)),
        "summary": printed.getvalue().strip(),
    }


def sweep_section(
    n_vectors: int = 2000,
    cutoffs: Sequence[float] = SWEEP_CUTOFFS,
    device: str = "cpu",
) -> dict[str, Any]:
    """Cost of a cutoff sweep relative to one run, both in one private store.

    Judging is cheap and measuring is not, so with a measurement cache
    (``ohlora_eval/cache.py``) the sweep should cost little more than one run
    (target ratio <= 1.3); without one every point measures again (ratio about
    ``len(cutoffs)``). This only reports what it measures.

    Steps, all with ``evaluate(cfg)`` on the composed app config in a private
    store under a temp dir (an inherited ``MLFLOW_TRACKING_URI`` is ignored):

    0. not timed: a 1-vector evaluation, so that directions the config finds in
       the store (``directions=latest`` fits them when missing) exist before the
       timed runs and "one run" is an ordinary run, not a direction fit;
    1. one run of ``n_vectors`` (timed);
    2. one run per ``cutoff.eyes`` value, one after another (timed, summed).
    """
    cache_present = importlib.util.find_spec("ohlora_eval.cache") is not None
    with tempfile.TemporaryDirectory(prefix="ohlora-bench-sweep-") as tmp, _private_tracking():
        base = [
            f"tracking.root={Path(tmp) / 'mlruns'}",
            f"sampling.n_vectors={int(n_vectors)}",
            "tracking.progress=false",
            f"device={device}",
        ]
        prep = _timed_evaluation([*base, "sampling.n_vectors=1"])
        one = _timed_evaluation(base)
        points = [_timed_evaluation([*base, f"cutoff.eyes={c}"]) for c in cutoffs]
        cache_enabled = _compose(base).get("cache", {}).get("enabled")
    total = sum(p["seconds"] for p in points)
    return {
        "settings": {
            "config": "conf/config.yaml defaults",
            "overrides": [*base[1:], "tracking.root=<temp dir>"],
            "sweep": f"cutoff.eyes={','.join(str(c) for c in cutoffs)} (sequential, same store)",
            "prep": "untimed 1-vector evaluation first (directions in the store)",
            "cache_module_present": cache_present,
            "cache_enabled": cache_enabled,
            "target_ratio_with_cache": TARGET_SWEEP_WITH_CACHE,
        },
        "prep_run": prep,
        "one_run": one,
        "sweep_runs": points,
        "one_run_seconds": one["seconds"],
        "sweep_total_seconds": total,
        "sweep_over_one": _ratio(total, one["seconds"]),
        "sweep_over_one_cpu": _ratio(sum(p["cpu_seconds"] for p in points), one["cpu_seconds"]),
    }


# --- report --------------------------------------------------------------------------------------
def _table(rows: list[list[str]], indent: str = "  ") -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append(indent + "  ".join(cells).rstrip())
        if k == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _f(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:,.{digits}f}"


def _verdict(value: float | None, target: float, higher: bool = True) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    ok = value >= target if higher else value <= target
    return "meets target" if ok else "BELOW target" if higher else "ABOVE target"


def _settings_lines(settings: dict[str, Any]) -> str:
    return "\n".join(f"    {k}: {v}" for k, v in settings.items())


def format_report(result: dict[str, Any]) -> str:
    """The human-readable table (everything in it is also in the JSON)."""
    mi = result["machine"]
    threads = "torch default" if result["threads_requested"] is None else "--threads"
    out = [
        "ohlora_eval benchmark",
        f"  date: {result['date']}   git commit: {result['git_commit']}",
        f"  machine: {mi['cpu']}, {mi['cores']} cores ({mi['cores_usable']} usable),"
        f" {mi['platform']}, Python {mi['python']}",
        f"  torch {mi['torch']}: {mi['torch_threads']} threads ({threads}),"
        f" {mi['torch_interop_threads']} interop threads, device {result['device']}",
        f"  load average at start: {mi.get('loadavg_start')}, at end: {mi.get('loadavg_end')}"
        " (a busy machine inflates wall time; CPU s = this process, all threads)",
    ]
    out += _synthetic_report(result["synthetic"])
    out += _real_report(result["real"])
    out += _sweep_report(result["sweep"])
    out.append(f"\nJSON: {result['json_path']}")
    return "\n".join(out)


def _runs_text(xs: Sequence[float]) -> str:
    return " ".join(f"{x:.2f}" for x in xs)


def _synthetic_report(syn: dict[str, Any]) -> list[str]:
    out = ["\n[1] Synthetic pipeline (issue 2): one process, same vectors"]
    if syn.get("skipped"):
        return [*out, f"  skipped ({syn['reason']})"]
    st, ips = syn["settings"], syn["images_per_sec"]
    wall, cpu, faults = syn["runs_seconds"], syn["runs_cpu_seconds"], syn["runs_page_faults"]
    out.append(_settings_lines(st))
    rows = [
        ["variant", "images", "median s", "images/s", "CPU s", "img/CPU-s", "faults/img"]
        + ["runs (wall s)"]
    ]

    def row(label: str, key: str, images: int) -> list[str]:
        return [
            label,
            f"{images:,}",
            _f(_median(wall[key]), 2),
            _f(_ratio(images, _median(wall[key]))),
            _f(_median(cpu[key]), 2),
            _f(_ratio(images, _median(cpu[key]))),
            _f(_median(faults[key]) / images, 1),
            _runs_text(wall[key]),
        ]

    n = st["images"]
    rows.append(row(f"(p) measure_chunks, {st['vectors_per_batch']} vec/chunk", "p", n))
    if "p_eval" in wall:
        rows.append(row("(p+) same + groups + review image_stats", "p_eval", n))
    for b in ips["a_ceiling_by_batch"]:
        mark = " <- best" if int(b) == ips["a_ceiling_best_batch"] else ""
        rows.append(row(f"(a) bare synthesize+score, batch {b}{mark}", f"a{b}", n))
    rows.append(row("(b) one at a time + JPEG round trip", "b", st["per_image_images"]))
    out.append(_table(rows))
    ra = syn["ratios"]
    out.append(
        f"  p/a = {_f(ra['p_over_a'], 3)} (target >= {TARGET_P_OVER_A}:"
        f" {_verdict(ra['p_over_a'], TARGET_P_OVER_A)}; by CPU s {_f(ra['p_over_a_cpu'], 3)})"
        f"   p/b = {_f(ra['p_over_b'], 2)} (target >= {TARGET_P_OVER_B}:"
        f" {_verdict(ra['p_over_b'], TARGET_P_OVER_B)}; by CPU s {_f(ra['p_over_b_cpu'], 2)})"
    )
    ch = syn["checks"]
    diffs = ", ".join(f"{b}: {v:.1e}" for b, v in ch["max_abs_diff_p_vs_a_by_batch"].items())
    out.append(
        f"  checks: max |p - a| score by batch ({diffs}); JPEG loop vs p:"
        f" mean |diff| {ch['jpeg_loop_vs_p_abs_diff_mean']:.4f},"
        f" max {ch['jpeg_loop_vs_p_abs_diff_max']:.4f} (scores ~ N(0, 1))"
    )
    return out


def _real_report(real: dict[str, Any]) -> list[str]:
    out = ["\n[2] Real Oh-LoRA networks (issue 5): recipe weights, one vector"]
    if real.get("skipped"):
        return [*out, f"  skipped ({real['reason']})"]
    st, wall, cpu = real["settings"], real["runs_seconds"], real["runs_cpu_seconds"]
    faults = real["runs_page_faults"]
    out.append(_settings_lines(st))
    rows = [
        ["variant", "images", "seconds", "images/s", "s/image", "CPU s", "CPU s/image"]
        + ["faults/img"]
    ]

    def row(label: str, key: str, images: int) -> list[str]:
        w, c = wall[key][0], cpu[key][0]
        return [
            label,
            str(images),
            _f(w, 2),
            _f(images / w, 3),
            _f(w / images, 3),
            _f(c, 2),
            _f(c / images, 3),
            _f(faults[key][0] / images, 0),
        ]

    m = st["images"]
    rows.append(row("batched pipeline (measure_chunks)", "pipeline", m))
    rows.append(row("original-style loop (batch 1, JPEG)", "loop", m))
    best = real["images_per_sec"]["ceiling_best_batch"]
    for b in st["ceiling_batch_sizes"]:
        mark = " <- best" if b == best else ""
        rows.append(row(f"bare synthesize+score, batch {b}{mark}", f"a{b}", b))
    out.append(_table(rows))
    ra, sec = real["ratios"], real["seconds"]
    out.append(
        f"  batched/loop = {_f(ra['batched_over_loop'], 2)}"
        f" (by CPU s {_f(ra['batched_over_loop_cpu'], 2)})"
        f"   batched/ceiling = {_f(ra['batched_over_ceiling'], 3)}"
        f" (by CPU s {_f(ra['batched_over_ceiling_cpu'], 3)})"
        f"   section time {_f(sec['section_total'], 1)} s"
    )
    ch = real["checks"]
    out.append(
        "  checks: JPEG loop vs pipeline: mean |diff|"
        f" {ch['jpeg_loop_vs_pipeline_abs_diff_mean']:.4f},"
        f" max {ch['jpeg_loop_vs_pipeline_abs_diff_max']:.4f} (recipe-weight scores are unscaled)"
    )
    return out


def _sweep_report(sw: dict[str, Any]) -> list[str]:
    out = ["\n[3] Cutoff sweep cost (issue 6)"]
    if sw.get("skipped"):
        return [*out, f"  skipped ({sw['reason']})"]
    out.append(_settings_lines(sw["settings"]))
    rows = [["run", "seconds", "CPU s", "chunks measured/reused", "passed"]]
    runs = [("(untimed prep, 1 vector)", sw["prep_run"]), ("one run", sw["one_run"])]
    runs += [(f"sweep {r['overrides'][-1]}", r) for r in sw["sweep_runs"]]
    for label, r in runs:
        measured, reused = r.get("measured_chunks"), r.get("reused_chunks")
        chunks = "n/a" if measured is None else f"{int(measured)}/{int(reused or 0)}"
        rows.append([label, _f(r["seconds"], 1), _f(r["cpu_seconds"], 1), chunks, str(r["passed"])])
    out.append(_table(rows))
    out.append(
        f"  sweep total {_f(sw['sweep_total_seconds'], 1)} s / one run"
        f" {_f(sw['one_run_seconds'], 1)} s = {_f(sw['sweep_over_one'], 2)}"
        f" (by CPU s {_f(sw['sweep_over_one_cpu'], 2)}; with a measurement cache the target"
        f" is <= {TARGET_SWEEP_WITH_CACHE}:"
        f" {_verdict(sw['sweep_over_one'], TARGET_SWEEP_WITH_CACHE, higher=False)})"
    )
    return out


# --- CLI -----------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ohlora_eval.bench",
        description=(
            "Throughput of the screening pipeline vs its ceiling and vs the original"
            " one-image-at-a-time test; real Oh-LoRA networks; cutoff sweep cost."
            " Prints a table and writes JSON. A benchmark: it asserts nothing."
        ),
    )
    p.add_argument(
        "--vectors",
        type=_positive,
        default=400,
        help="synthetic section: latent vectors (x 50 edits) (default 400)",
    )
    p.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=[250, 500, 1000, 2000, 4000],
        help="synthetic ceiling: images per bare forward (default 250,500,1000,2000,4000)",
    )
    p.add_argument(
        "--per-image-vectors",
        type=_positive,
        default=2,
        help="synthetic one-at-a-time subset, in vectors (x 50 images) (default 2)",
    )
    p.add_argument(
        "--fit-n",
        type=_positive,
        default=2000,
        help="faces sampled to fit the SVM directions, not timed (default 2000)",
    )
    p.add_argument(
        "--repeats",
        type=_positive,
        default=3,
        help="synthetic section: interleaved repeats, medians reported (default 3)",
    )
    p.add_argument("--skip-real", action="store_true", help="skip the real-network section")
    p.add_argument(
        "--real-images",
        type=_positive,
        default=50,
        help="real section: edits of the one vector, 2..50 (default 50); the batched pipeline"
        " pads its calls to a multiple of the models' batch_size (1 on a CPU, 16/64 on CUDA)",
    )
    p.add_argument(
        "--real-batch-sizes",
        type=_int_list,
        default=[1, 8, 50],
        help="real section ceiling: images per bare forward (default 1,8,50)",
    )
    p.add_argument("--skip-sweep", action="store_true", help="skip the cutoff-sweep section")
    p.add_argument(
        "--sweep-vectors",
        type=_positive,
        default=2000,
        help="sampling.n_vectors of each sweep evaluation (default 2000)",
    )
    p.add_argument("--device", default="cpu", help="device for every section (default cpu)")
    p.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="torch.set_num_threads for the whole run (default: torch's default)",
    )
    p.add_argument("--seed", type=int, default=0, help="real section: latent/direction seed")
    p.add_argument(
        "--out", type=Path, default=None, help="JSON path (default mlruns/bench/<timestamp>.json)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    now = dt.datetime.now().astimezone()
    out = args.out or Path("mlruns") / "bench" / f"{now.strftime('%Y%m%d-%H%M%S')}.json"
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "date": now.isoformat(timespec="seconds"),
        "git_commit": tracking.git_commit(),
        "machine": machine_info(),
        "threads_requested": args.threads,
        "device": args.device,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }

    def progress(msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    progress("synthetic pipeline ...")
    result["synthetic"] = synthetic_section(args)
    if args.skip_real:
        result["real"] = {"skipped": True, "reason": "--skip-real"}
    else:
        progress("real Oh-LoRA networks (slow on CPU) ...")
        result["real"] = real_section(args)
    if args.skip_sweep:
        result["sweep"] = {"skipped": True, "reason": "--skip-sweep"}
    else:
        progress(
            f"cutoff sweep: 1 + {len(SWEEP_CUTOFFS)} evaluations"
            f" of {args.sweep_vectors} vectors ..."
        )
        result["sweep"] = sweep_section(args.sweep_vectors, SWEEP_CUTOFFS, args.device)
    with contextlib.suppress(OSError):
        result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result["json_path"] = str(out)
    out.write_text(json.dumps(_jsonable(result), indent=2, allow_nan=False) + "\n")
    print(format_report(result))
    return 0


def _jsonable(obj: Any) -> Any:
    """Plain JSON: numpy scalars as numbers, NaN/inf as null (strict parsers reject NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


if __name__ == "__main__":
    sys.exit(main())
