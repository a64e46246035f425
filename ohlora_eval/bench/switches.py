"""Section 4, speed switches: the shipped measuring step under each switch of the ``measure``
settings, against float32 on the same vectors.

For each model set (``synthetic``: the default config's models and SVM directions;
``real``: StyleGAN-FineTune-v9 and the merged CNN built from the app's own config with
``allow_random_init=true``, random unit directions) and each switch it reports images/s
(one timed run after an untimed warm-up on one vector, which also pays any compile),
the speed relative to float32, and the agreement with float32: max |delta r| per
property and the share of identical pass/fail verdicts at the configured cutoffs.

A switch that cannot run here is skipped with the reason (``compile`` on a CPU unless
``--compile-on-cpu``, ``fp16`` on a CPU unless ``--fp16-on-cpu``; ``tf32`` and
``nondeterministic`` off CUDA; a precision the device's autocast refuses;
``channels_last``/``compile`` for models without the ``set_speed`` hook); one that
fails while running is reported with its error.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ohlora_eval.apps.build import build_models
from ohlora_eval.bench.config import compose, config_grid, model_settings
from ohlora_eval.bench.forward import pipeline_scores
from ohlora_eval.bench.real import random_directions
from ohlora_eval.bench.synthetic import fit_directions
from ohlora_eval.bench.timing import ratio, timed
from ohlora_eval.pipeline import device as dev
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.edit import EditSetup
from ohlora_eval.pipeline.measure_settings import MeasureSettings

BASELINE = "fp32"
# Each switch as measure settings; names join with "+" (e.g. bf16+channels_last).
SWITCHES: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "fp16": {"precision": "fp16"},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "tf32": {"tf32": True},
    "nondeterministic": {"deterministic": False},
}
CUDA_ONLY = ("tf32", "nondeterministic")
HOOKED = ("channels_last", "compile")  # need the models' set_speed hook
DEFAULT_SWITCHES = ["bf16", "fp16", "channels_last", "compile", "tf32", "nondeterministic"]
MODEL_SETS = ("synthetic", "real")
REAL_OVERRIDES = [
    "generator=stylegan_v9",
    "scorer=ohlora_cnn",
    "generator.allow_random_init=true",
    "scorer.allow_random_init=true",
]


def parse_switches(text: str) -> list[str]:
    """``bf16,channels_last,bf16+channels_last`` -> names, each part a known switch."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        unknown = [p for p in name.split("+") if p not in SWITCHES]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown switch {unknown[0]!r}; known: {', '.join(SWITCHES)} (join with +)"
            )
    return names


def parse_model_sets(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in MODEL_SETS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(MODEL_SETS)}, got {text!r}")
    return names


def switch_settings(name: str) -> MeasureSettings:
    """The measure settings of a switch name (parts joined with +)."""
    values: dict[str, Any] = {}
    for part in name.split("+"):
        values.update(SWITCHES[part])
    return MeasureSettings(**values).checked()


def skip_reason(
    name: str,
    setup: EditSetup,
    device: torch.device,
    compile_on_cpu: bool = False,
    fp16_on_cpu: bool = False,
) -> str:
    """Why a switch is not run here ("" when it is)."""
    parts = name.split("+")
    if device.type != "cuda":
        off = [p for p in parts if p in CUDA_ONLY]
        if off:
            return f"{off[0]} is a CUDA setting: no effect on {device.type}"
        if "compile" in parts and not compile_on_cpu:
            return (
                "torch.compile on a CPU needs a C++ compiler and minutes of compiling;"
                " --compile-on-cpu to try it"
            )
        if "fp16" in parts and not fp16_on_cpu:
            return (
                "fp16 autocast on a CPU runs slow fallback kernels (on this project's 2-core"
                " CPU the merged CNN took 4.7 s per image in fp16, 0.38 s in fp32);"
                " --fp16-on-cpu to run it"
            )
    hooked = [p for p in parts if p in HOOKED]
    models = (setup.generator, setup.scorer)
    if hooked and not any(hasattr(m, "set_speed") for m in models):
        return f"{hooked[0]}: neither model has the set_speed hook (no convolutions to speed up)"
    settings = switch_settings(name)
    try:
        dev.check_precision(settings.precision, device)
    except ValueError as exc:
        return str(exc)
    return ""


def verdicts(scores: np.ndarray, grid: np.ndarray, cutoffs: dict[str, float]) -> np.ndarray:
    """(n, 3) r of each vector's edit grid, and whether it passes: (r, passed)."""
    corr = np.stack([judge.pearson_rows(grid[:, k], scores[:, :, k]) for k in range(3)], 1)
    passed = judge.per_vector_table(corr, cutoffs)["passed"].to_numpy() == "O"
    return corr, passed


def _max_finite(x: np.ndarray) -> float | None:
    finite = x[np.isfinite(x)]
    return float(finite.max()) if finite.size else None


def agreement(
    base: np.ndarray, other: np.ndarray, grid: np.ndarray, cutoffs: dict[str, float]
) -> dict[str, Any]:
    """How far a switch's r is from float32's on the same vectors, and its verdicts."""
    r0, p0 = verdicts(base, grid, cutoffs)
    r1, p1 = verdicts(other, grid, cutoffs)
    delta = np.abs(r1 - r0)
    return {
        "max_abs_delta_r": {
            p: _max_finite(delta[:, k]) for k, p in enumerate(("eyes", "mouth", "pose"))
        },
        "undefined_r": int(np.isnan(r1).any(axis=1).sum()),  # constant scores: no r
        "same_verdict_share": float((p0 == p1).mean()) if p0.size else float("nan"),
        "passed": int(p1.sum()),
        "passed_fp32": int(p0.sum()),
        "max_abs_score_diff": float(np.abs(other - base).max()) if base.size else 0.0,
    }


def _timed_run(setup: EditSetup, latents: Tensor, chunk: int, device: str) -> dict[str, Any]:
    """Warm-up on one vector (untimed; pays the compile), then the whole set, timed."""
    warm, _ = timed(lambda: pipeline_scores(setup, latents[:1], chunk), device)
    c0 = time.process_time()
    seconds, scores = timed(lambda: pipeline_scores(setup, latents, chunk), device)
    cpu = time.process_time() - c0
    return {"warmup_seconds": warm, "seconds": seconds, "cpu_seconds": cpu, "scores": scores}


def model_set(which: str, args: argparse.Namespace, switches: Sequence[str]) -> dict[str, Any]:
    """One model set: fp32 first, then each switch on the same vectors."""
    overrides = [f"device={args.device}", *(REAL_OVERRIDES if which == "real" else [])]
    cfg = compose([*overrides, *args.override])
    layer, chunk = str(cfg.layer), int(cfg.sampling.vectors_per_batch)
    cutoffs = judge.check_cutoffs(cfg.cutoff)
    generator, scorer = build_models(cfg)
    grid = config_grid(cfg)
    if which == "real":  # random directions; evenly spread grid points, every property varies
        directions = random_directions(layer, generator.mid_dims[layer], args.seed)
        note, n = directions.source, args.switch_real_vectors
        k = max(2, min(args.switch_images, grid.shape[0]))
        grid = grid[np.unique(np.linspace(0, grid.shape[0] - 1, k).round().astype(int))]
    else:
        directions, _, note = fit_directions(cfg, generator, scorer, layer, args.fit_n)
        n = args.switch_vectors
    images = n * int(grid.shape[0])
    latents = generator.sample_latents(n, int(cfg.sampling.seed))
    base_setup = EditSetup(generator, scorer, directions, grid, layer)
    device = dev.model_device(generator, scorer)
    out: dict[str, Any] = {
        "settings": {
            "config": "conf/config.yaml, " + " ".join([*overrides, *args.override]),
            "generator": f"{type(generator).__name__}({model_settings(cfg.generator)});"
            f" in use: batch_size={getattr(generator, 'batch_size', None)}",
            "scorer": f"{type(scorer).__name__}({model_settings(cfg.scorer)});"
            f" in use: batch_size={getattr(scorer, 'batch_size', None)}",
            "layer": layer,
            "vectors": n,
            "images_per_vector": int(grid.shape[0]),
            "images": images,
            "vectors_per_batch": chunk,
            "directions": note,
            "cutoffs": cutoffs,
            "timing": "one timed run after an untimed one-vector warm-up (which pays compiles)",
        },
        "runs": {},
    }
    base: dict[str, Any] | None = None
    for name in [BASELINE, *[s for s in switches if s != BASELINE]]:
        setup = dataclasses.replace(base_setup, measure_settings=switch_settings(name))
        reason = skip_reason(name, setup, device, args.compile_on_cpu, args.fp16_on_cpu)
        if reason:
            out["runs"][name] = {"skipped": True, "reason": reason}
            continue
        try:
            run = _timed_run(setup, latents, chunk, args.device)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports what failed and goes on
            out["runs"][name] = {"failed": True, "error": f"{type(exc).__name__}: {exc}"[:500]}
            continue
        scores = run.pop("scores")
        row: dict[str, Any] = {
            **run,
            "images_per_sec": ratio(images, run["seconds"]),
            "images_per_cpu_sec": ratio(images, run["cpu_seconds"]),
        }
        if base is None:
            if name != BASELINE:
                break
            base = {"scores": scores, "rate": row["images_per_sec"]}
        row["speed_vs_fp32"] = ratio(row["images_per_sec"], base["rate"])
        row.update(agreement(base["scores"], scores, grid, cutoffs))
        out["runs"][name] = row
    return out


def switches_section(args: argparse.Namespace) -> dict[str, Any]:
    """Every requested model set under every requested switch."""
    return {
        "switches": list(args.switches),
        "model_sets": {
            which: model_set(which, args, args.switches) for which in args.switch_models
        },
    }
