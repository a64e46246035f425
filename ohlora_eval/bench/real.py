"""Section 2, real Oh-LoRA networks: StyleGAN-FineTune-v9 and the merged property CNN with
deterministic recipe weights (``models.networks.recipe``; speed does not depend on the
weights), one vector x ``--real-images`` edits, each variant once (slow on a CPU).

Times: the batched pipeline (the shipped ``pipeline.measure.measure``, no cache),
the original-style loop (``original``, batch 1 + JPEG) and the bare batched
forward ceiling at each ``--real-batch-sizes``; ratios batched/loop and
batched/ceiling.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ohlora_eval.bench.config import compose, config_grid
from ohlora_eval.bench.forward import all_edited_mids, bare_forward, pipeline_scores
from ohlora_eval.bench.original import JPEG_NOTE, original_style_scores
from ohlora_eval.bench.timing import Runs, ratio, timed
from ohlora_eval.pipeline.directions import ALL_GROUPS, Directions
from ohlora_eval.pipeline.edit import EditSetup
from ohlora_eval.pipeline.model_calls import pad_multiple, padded_rows
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES, Generator, PropertyScorer


def random_directions(layer: str, dim: int, seed: int) -> Directions:
    """One seeded random unit direction per property (speed does not depend on which)."""
    gen = torch.Generator().manual_seed(seed)
    draws = {p: torch.randn(dim, generator=gen, dtype=torch.float32) for p in CORE_PROPERTIES}
    vectors = {p: {ALL_GROUPS: (v / v.norm()).numpy()} for p, v in draws.items()}
    return Directions(
        layer=layer,
        dim=dim,
        vectors=vectors,
        method=dict.fromkeys(CORE_PROPERTIES, "random"),
        source=f"bench: random unit, seed {seed}",
    )


def recipe_models(work: Path, device: str) -> tuple[Generator, PropertyScorer]:
    """The real generator and scorer, loading recipe-weight checkpoints written to ``work``."""
    from ohlora_eval.models.generators.stylegan_v9 import StyleGANV9Generator
    from ohlora_eval.models.networks import MergedPropertyCNN, StyleGANV9Network
    from ohlora_eval.models.networks.recipe import write_recipe_checkpoint
    from ohlora_eval.models.scorers.ohlora_cnn import OhLoRACNNScorer

    g_path = write_recipe_checkpoint(StyleGANV9Network(), work / "g.pth")
    s_path = write_recipe_checkpoint(MergedPropertyCNN(), work / "s.pth")
    return (
        StyleGANV9Generator(checkpoint=g_path, device=device),
        OhLoRACNNScorer(checkpoint=s_path, device=device),
    )


def _rates(rate_of: Callable[[str, int], float], m: int, sizes: list[int]) -> dict[str, Any]:
    """Images per (wall or CPU) second of each variant, named as the JSON names them."""
    ceiling = {str(b): rate_of(f"a{b}", b) for b in sizes}
    best = max(ceiling, key=ceiling.get) if ceiling else None
    return {
        "pipeline": rate_of("pipeline", m),
        "loop": rate_of("loop", m),
        "ceiling_best": ceiling[best] if best else float("nan"),
        "ceiling_best_batch": int(best) if best else None,
        "ceiling_by_batch": ceiling,
    }


def real_section(args: argparse.Namespace) -> dict[str, Any]:
    """StyleGAN-FineTune-v9 + merged CNN (recipe weights) on one vector: batched vs loop vs bare."""
    cfg = compose([f"device={args.device}"])
    layer, chunk = str(cfg.layer), int(cfg.sampling.vectors_per_batch)
    grid = config_grid(cfg)[: max(2, min(args.real_images, 50))]
    m, device = grid.shape[0], args.device
    t0 = time.perf_counter()
    runs = Runs()
    with tempfile.TemporaryDirectory(prefix="ohlora-bench-real-") as tmp:
        work = Path(tmp)
        t_build, (generator, scorer) = timed(lambda: recipe_models(work, device))
        latents = generator.sample_latents(1, args.seed)
        directions = random_directions(layer, generator.mid_dims[layer], args.seed)
        setup = EditSetup(generator, scorer, directions, grid, layer)
        mids = all_edited_mids(setup, latents)
        bare_forward(generator, scorer, mids[:1], layer, 1)  # warm-up, not timed

        p_scores = runs.time("pipeline", lambda: pipeline_scores(setup, latents, chunk), device)
        b_scores = runs.time("loop", lambda: original_style_scores(setup, latents, work), device)
        sizes = sorted({min(int(b), m) for b in args.real_batch_sizes})
        for b in sizes:
            runs.time(
                f"a{b}", lambda b=b: bare_forward(generator, scorer, mids[:b], layer, b), device
            )
    rate, cpu_rate = _rates(runs.rate, m, sizes), _rates(runs.cpu_rate, m, sizes)
    gap = np.abs(b_scores - p_scores)
    return {
        "settings": {
            "generator": f"StyleGANV9Generator(recipe weights, batch_size={generator.batch_size},"
            f" postprocess={generator.postprocess}, device={device})",
            "scorer": f"OhLoRACNNScorer(recipe weights, batch_size={scorer.batch_size},"
            f" device={device})",
            "weights": "deterministic recipe of shared/reference/parity"
            " (ohlora_eval.models.networks.recipe), written to .pth and loaded strictly",
            "generator_weights_id": generator.weights_id,
            "scorer_weights_id": scorer.weights_id,
            "layer": layer,
            "vectors": 1,
            "images": m,
            "pipeline_rows_after_padding": {
                "generator": padded_rows(m, pad_multiple(generator)),
                "scorer": padded_rows(m, pad_multiple(scorer)),
            },
            "vectors_per_batch": chunk,
            "directions": directions.source,
            "latent_seed": args.seed,
            "ceiling_batch_sizes": sizes,
            "ceiling_note": "the first B edited images in one batch per batch size B,"
            " the models' batch_size chunking raised to B; warm-up: one image, not timed",
            "jpeg": JPEG_NOTE,
            "repeats": 1,
        },
        "build_seconds": t_build,
        "seconds": {
            "pipeline": runs.wall["pipeline"][0],
            "loop": runs.wall["loop"][0],
            "section_total": time.perf_counter() - t0,
        },
        "runs_seconds": runs.wall,
        "runs_cpu_seconds": runs.cpu,
        "runs_page_faults": runs.faults,
        "images_per_sec": rate,
        "images_per_cpu_sec": cpu_rate,
        "ratios": {
            "batched_over_loop": ratio(rate["pipeline"], rate["loop"]),
            "batched_over_ceiling": ratio(rate["pipeline"], rate["ceiling_best"]),
            "batched_over_loop_cpu": ratio(cpu_rate["pipeline"], cpu_rate["loop"]),
            "batched_over_ceiling_cpu": ratio(cpu_rate["pipeline"], cpu_rate["ceiling_best"]),
        },
        "checks": {
            "jpeg_loop_vs_pipeline_abs_diff_mean": float(gap.mean()),
            "jpeg_loop_vs_pipeline_abs_diff_max": float(gap.max()),
        },
    }
