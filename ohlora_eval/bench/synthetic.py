"""Section 1, synthetic pipeline: the embedded synthetic generator and scorer of the default
config, same vectors in one process, interleaved repeats, medians reported.

Times (images/s, wall and CPU):

(p)  the shipped ``pipeline.measure.measure`` (no cache, no progress bar), as the
     screening's hot loop: edit, synthesize, score, chunk by chunk;
(p+) the same call with what a screening run adds per chunk: the look-alike
     groups from the unedited images (``pipeline.model_calls.group_fn``) and the
     review's per-image statistics (``review.image_stats``);
(a)  the bare forward ceiling at each ``--batch-sizes`` (``forward.bare_forward``);
(b)  the original-style loop on a ``--per-image-vectors`` subset (``original``).

Ratios p/a (target >= 0.8) and p/b (target >= 5), plus checks that (a) scores
the very images (p) scores and how far the JPEG round trip moves the scores.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from torch import Tensor

from ohlora_eval.apps.build import build_models
from ohlora_eval.bench.config import GRID_SOURCE, compose, config_grid, model_settings
from ohlora_eval.bench.forward import all_edited_mids, bare_forward, pipeline_scores
from ohlora_eval.bench.original import JPEG_NOTE, original_style_scores
from ohlora_eval.bench.timing import Runs, ratio, timed
from ohlora_eval.directions.svm import fit_svm_direction
from ohlora_eval.pipeline.directions import ALL_GROUPS, Directions
from ohlora_eval.pipeline.edit import EditSetup
from ohlora_eval.pipeline.groups import medians
from ohlora_eval.pipeline.measure import ImageStats
from ohlora_eval.pipeline.model_calls import GroupFn, group_fn
from ohlora_eval.pipeline.protocols import (
    CORE_PROPERTIES,
    GROUP_PROPERTIES,
    Generator,
    PropertyScorer,
)
from ohlora_eval.pipeline.sample import FaceSetup, sample_and_score
from ohlora_eval.review import ReviewSettings, image_stats

TARGET_P_OVER_A = 0.8
TARGET_P_OVER_B = 5.0


def fit_directions(
    cfg: DictConfig, generator: Generator, scorer: PropertyScorer, layer: str, n: int
) -> tuple[Directions, float, str]:
    """A linear SVM per property on ``n`` sampled faces, ungrouped, with the sample's
    grouping medians: (directions, seconds spent sampling and scoring the faces, a note)."""
    ratio_, seed = float(cfg.directions.ratio), int(cfg.directions.seed)
    t_fit, (_, fit_mid, fit_scores) = timed(
        lambda: sample_and_score(FaceSetup(generator, scorer, layer), n, seed)
    )
    x = fit_mid.cpu().numpy()
    vectors = {
        p: {ALL_GROUPS: fit_svm_direction(x, fit_scores[p], ratio_, seed=seed)[0]}
        for p in CORE_PROPERTIES
    }
    directions = Directions(
        layer=layer,
        dim=x.shape[1],
        vectors=vectors,
        method=dict.fromkeys(CORE_PROPERTIES, "svm"),
        source=f"bench: svm n={n} ratio={ratio_}",
        medians=medians(fit_scores) if set(GROUP_PROPERTIES) <= set(fit_scores) else None,
    )
    note = f"fit_svm_direction on {n} sampled faces, ratio {ratio_}, seed {seed}, ungrouped"
    return directions, t_fit, note + " (not timed)"


def evaluation_hooks(cfg: DictConfig, setup: EditSetup) -> tuple[GroupFn | None, ImageStats, str]:
    """What a screening run passes to ``measure`` besides the grid, built by the shipped code."""
    groups_of = group_fn(setup)
    stats = image_stats(ReviewSettings.from_cfg(cfg.get("review")))
    if groups_of is None:
        return None, stats, "review image_stats (this scorer cannot group)"
    return groups_of, stats, "groups from unedited images (group_fn) + review image_stats"


def time_variants(
    args: argparse.Namespace,
    setup: EditSetup,
    latents: Tensor,
    chunk: int,
    hooks: tuple[GroupFn | None, ImageStats, str],
    batch_sizes: list[int],
    n_b: int,
) -> tuple[Runs, np.ndarray, np.ndarray, dict[int, float]]:
    """The timed part: every variant once per repeat, interleaved, so noise from other
    processes spreads over all of them. Returns the runs, the last (p) and (b) scores and
    the max |p - a| score per batch size."""
    generator, scorer, layer = setup.generator, setup.scorer, setup.layer
    n, m, device = latents.shape[0], setup.m, args.device
    groups_of, stats, _ = hooks
    mids = all_edited_mids(setup, latents)  # the ceiling's input, not timed
    # Warm-up of both paths (allocator, first-call paths), not timed: else the variant
    # that happens to run first pays for it.
    bare_forward(generator, scorer, mids[: min(len(mids), 256)], layer, 256)
    pipeline_scores(setup, latents[:chunk], chunk, groups_of, stats)
    runs = Runs()
    a_diff: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="ohlora-bench-jpeg-") as tmp:
        for _ in range(args.repeats):
            # (p) the shipped measuring step, as the hot loop of a screening run ...
            p = runs.time("p", lambda: pipeline_scores(setup, latents, chunk), device)
            # (p+) ... and with the groups and image statistics a screening run adds.
            runs.time(
                "p_eval", lambda: pipeline_scores(setup, latents, chunk, groups_of, stats), device
            )
            # (a) the ceiling: the same images, bare forward, one batch size at a time.
            for b in batch_sizes:
                a = runs.time(
                    f"a{b}", lambda b=b: bare_forward(generator, scorer, mids, layer, b), device
                )
                a_diff[b] = float(np.abs(a.reshape(n, m, -1) - p).max())
            # (b) the original's way on the first n_b vectors.
            one_at_a_time = runs.time(
                "b", lambda: original_style_scores(setup, latents[:n_b], Path(tmp)), device
            )
    return runs, p, one_at_a_time, a_diff


def _rates(
    rate_of: Callable[[str, int], float], images: dict[str, int], batch_sizes: list[int]
) -> dict[str, Any]:
    """Images per (wall or CPU) second of each variant, named as the JSON names them."""
    rate = {k: rate_of(k, n) for k, n in images.items()}
    best = max(batch_sizes, key=lambda b: rate[f"a{b}"])
    return {
        "p_pipeline": rate["p"],
        "p_eval_chunk": rate.get("p_eval"),
        "a_ceiling_best": rate[f"a{best}"],
        "a_ceiling_best_batch": best,
        "a_ceiling_by_batch": {str(b): rate[f"a{b}"] for b in batch_sizes},
        "b_one_at_a_time": rate["b"],
    }


def synthetic_section(args: argparse.Namespace) -> dict[str, Any]:
    """(p) pipeline vs (a) bare forward at several batch sizes vs (b) one at a time + JPEG."""
    cfg = compose([f"device={args.device}"])
    layer, chunk, grid = str(cfg.layer), int(cfg.sampling.vectors_per_batch), config_grid(cfg)
    t_build, (generator, scorer) = timed(lambda: build_models(cfg))
    directions, t_fit, directions_note = fit_directions(cfg, generator, scorer, layer, args.fit_n)
    setup = EditSetup(generator, scorer, directions, grid, layer)
    hooks = evaluation_hooks(cfg, setup)

    n, m = args.vectors, setup.m
    latents = generator.sample_latents(n, int(cfg.sampling.seed))
    n_b = min(args.per_image_vectors, n)
    batch_sizes = sorted({int(b) for b in args.batch_sizes})
    runs, p, one_at_a_time, a_diff = time_variants(
        args, setup, latents, chunk, hooks, batch_sizes, n_b
    )
    images = n * m
    sizes = {k: n_b * m if k == "b" else images for k in runs.wall}
    rate = _rates(runs.rate, sizes, batch_sizes)
    cpu_rate = _rates(runs.cpu_rate, sizes, batch_sizes)
    jpeg_gap = np.abs(one_at_a_time - p[:n_b])
    return {
        "settings": {
            "config": f"conf/config.yaml defaults, device={args.device}",
            "generator": f"{type(generator).__name__}({model_settings(cfg.generator)})",
            "scorer": f"{type(scorer).__name__}({model_settings(cfg.scorer)})",
            "layer": layer,
            "vectors": n,
            "grid": GRID_SOURCE,
            "images_per_vector": m,
            "images": images,
            "vectors_per_batch": chunk,
            "images_per_chunk": chunk * m,
            "latent_seed": int(cfg.sampling.seed),
            "directions": directions_note,
            "p_eval_extra": hooks[2],
            "ceiling_batch_sizes": batch_sizes,
            "ceiling_note": "edited mid vectors precomputed (not timed); the models' own"
            " batch_size chunking raised to the batch size",
            "per_image_vectors": n_b,
            "per_image_images": n_b * m,
            "jpeg": f"{JPEG_NOTE} (the original: genforce save_image = cv2.imwrite defaults)",
            "repeats": args.repeats,
        },
        "build_seconds": t_build,
        "fit_sampling_seconds": t_fit,
        "runs_seconds": runs.wall,
        "runs_cpu_seconds": runs.cpu,
        "runs_page_faults": runs.faults,
        "images_per_sec": rate,
        "images_per_cpu_sec": cpu_rate,
        "ratios": {
            "p_over_a": ratio(rate["p_pipeline"], rate["a_ceiling_best"]),
            "p_over_b": ratio(rate["p_pipeline"], rate["b_one_at_a_time"]),
            "p_over_a_cpu": ratio(cpu_rate["p_pipeline"], cpu_rate["a_ceiling_best"]),
            "p_over_b_cpu": ratio(cpu_rate["p_pipeline"], cpu_rate["b_one_at_a_time"]),
            "target_p_over_a": TARGET_P_OVER_A,
            "target_p_over_b": TARGET_P_OVER_B,
        },
        "checks": {
            "max_abs_diff_p_vs_a_by_batch": {str(b): v for b, v in a_diff.items()},
            "jpeg_loop_vs_p_abs_diff_mean": float(jpeg_gap.mean()),
            "jpeg_loop_vs_p_abs_diff_max": float(jpeg_gap.max()),
        },
    }
