"""Scale section: ``python -m ohlora_eval.bench.scale`` (``make bench-scale``).

Times the shipped ``pipeline.measure.measure`` (no cache, the hooks a screening passes) on
the same vectors: in this process (``local``), then on a local Ray with 1 worker (all the
machine's CPUs) and with N workers (the CPUs split between them). Worker start-up (Ray,
torch import, building the models) is timed apart: it is paid once per run, not per chunk.

Reports images/s of each, the ratio Ray 1 worker / local (target >= 0.85), each worker's
own compute rate, and the driver's per-chunk overhead: (wall - compute of the slowest
path) / chunks for 1 worker, i.e. what shipping a chunk out and its scores back costs
beyond measuring it, plus what writing one chunk to the cache costs the driver. Checks
that every layout gave bit-identical scores. A benchmark: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from ohlora_eval.apps import execution
from ohlora_eval.apps.build import build_models
from ohlora_eval.bench.config import compose, config_grid
from ohlora_eval.bench.synthetic import fit_directions
from ohlora_eval.bench.timing import machine_info, timed
from ohlora_eval.pipeline.cache import MeasurementCache
from ohlora_eval.pipeline.context import MeasureContext
from ohlora_eval.pipeline.edit import EditSetup
from ohlora_eval.pipeline.executor import RayExecutor
from ohlora_eval.pipeline.measure import measure
from ohlora_eval.pipeline.model_calls import group_fn
from ohlora_eval.pipeline.sample import BATCH, FaceSetup, sample_and_score
from ohlora_eval.review import ReviewSettings, image_stats

TARGET_RAY1_OVER_LOCAL = 0.85


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ohlora_eval.bench.scale", description=__doc__)
    p.add_argument("--vectors", type=int, default=400, help="latent vectors timed (x50 images)")
    p.add_argument("--workers", type=int, default=2, help="workers of the multi-worker case")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the local run = CPUs of each Ray worker (like for like; on a"
        " shared 2-core machine 1 thread per process is the stable choice)",
    )
    p.add_argument("--repeats", type=int, default=2, help="timed repeats of each layout (best)")
    p.add_argument("--fit-n", type=int, default=2000, help="faces sampled to fit the directions")
    p.add_argument(
        "--faces",
        type=int,
        default=8000,
        help="faces of the direction-fit timing (sampled, generated and scored in batches of"
        " --faces-batch; 0 skips it)",
    )
    p.add_argument(
        "--faces-batch",
        type=int,
        default=BATCH,
        help=f"faces per batch of the direction-fit timing (default {BATCH:,}, as find_directions)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m ohlora_eval.bench.scale``: measure, print the report, write the JSON."""
    args = parse(argv)
    out = measure_scale(args)
    print(report(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return out


def measure_scale(args: argparse.Namespace) -> dict[str, Any]:
    """The scale figures (also section [5] of ``python -m ohlora_eval.bench``)."""
    import ray

    cfg = compose(["device=cpu"])
    generator, scorer = build_models(cfg)
    layer, chunk = str(cfg.layer), int(cfg.sampling.vectors_per_batch)
    directions, _, note = fit_directions(cfg, generator, scorer, layer, args.fit_n)
    setup = EditSetup(generator, scorer, directions, config_grid(cfg), layer)
    review = ReviewSettings.from_cfg(cfg.get("review"))
    hooks = {"groups_of": group_fn(setup), "image_stats": image_stats(review)}
    latents = generator.sample_latents(args.vectors, int(cfg.sampling.seed))
    images = args.vectors * setup.m
    chunks = -(-args.vectors // chunk)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    build = partial(
        execution.worker_build, resolved, directions, setup.grid, setup.measure_settings, review
    )
    default_threads = torch.get_num_threads()
    measure(setup, latents[:chunk], chunk, **hooks)  # warm-up, not timed
    t_default, _ = _best(lambda: measure(setup, latents, chunk, **hooks), args.repeats)
    torch.set_num_threads(args.threads)
    t_local, local = _best(lambda: measure(setup, latents, chunk, **hooks), args.repeats)
    fit = partial(
        sample_and_score,
        FaceSetup(generator, scorer, layer, setup.measure_settings),
        args.faces,
        1,
        batch=args.faces_batch,
    )
    if args.faces:
        t_faces, faces_local = _best(fit, args.repeats)
    torch.set_num_threads(default_threads)
    out: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {
            "vectors": args.vectors,
            "images": images,
            "vectors_per_chunk": chunk,
            "chunks": chunks,
            "directions": note,
            "hooks": "groups (group_fn) + review image_stats, as a screening",
            "repeats": f"best of {args.repeats}",
        },
        "local": _local(args.threads, t_local, images),
        "local_default_threads": _local(default_threads, t_default, images),
    }
    ray.init(
        num_cpus=max(os.cpu_count() or 1, args.workers * args.threads),
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        for workers in sorted({1, args.workers}):
            with RayExecutor(build, workers=workers, cpus_per_worker=args.threads) as ex:
                startup, _ = timed(ex.start)
                context = MeasureContext(executor=ex)
                measure(setup, latents[:chunk], chunk, context=context, **hooks)  # warm-up
                on_ray = partial(measure, setup, latents, chunk, context=context, **hooks)
                ray_runs = []
                for _ in range(args.repeats):
                    before = dict(ex.stats.seconds)
                    wall, got = timed(on_ray)
                    spent = {w: s - before.get(w, 0.0) for w, s in ex.stats.seconds.items()}
                    ray_runs.append((wall, spent))
            if args.faces:
                faces_build = partial(execution.face_build, resolved, setup.measure_settings)
                out[f"faces_ray_{workers}"] = _time_faces(
                    args, faces_build, workers, fit, faces_local
                )
            wall, spent = min(ray_runs, key=lambda r: r[0])
            share = chunks / workers  # chunks per worker, about
            out[f"ray_{workers}"] = {
                "workers": workers,
                "cpus_per_worker": args.threads,
                "startup_seconds": startup,
                "seconds": wall,
                "images_per_sec": images / wall,
                "worker_compute_seconds": spent,
                "worker_images_per_sec": {
                    w: share * chunk * setup.m / max(s, 1e-9) for w, s in spent.items() if s > 0
                },
                # what a chunk costs beyond measuring it: sending it, the scores back, placing
                "driver_overhead_per_chunk_ms": 1000 * max(wall - max(spent.values()), 0.0) / share,
                "identical_to_local": bool(np.array_equal(got.scores, local.scores)),
            }
    finally:
        ray.shutdown()
    with tempfile.TemporaryDirectory(prefix="ohlora-bench-cache-") as tmp:
        cache = MeasurementCache(tmp, "bench", {})
        arrays = {"scores": local.scores[:chunk], "groups": np.array(local.groups[:chunk])}
        t0 = time.perf_counter()
        for i in range(20):
            cache.save(i * chunk, (i + 1) * chunk, arrays)
        out["driver_cache_write_ms_per_chunk"] = 1000 * (time.perf_counter() - t0) / 20
    out["ray1_over_local"] = out["ray_1"]["images_per_sec"] / out["local"]["images_per_sec"]
    if args.faces:
        out["faces_local"] = {
            "faces": args.faces,
            "batch": args.faces_batch,
            "seconds": t_faces,
            "faces_per_sec": args.faces / t_faces,
        }
    return out


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The fastest of ``repeats`` calls of ``fn``: (its seconds, its result)."""
    return min((timed(fn) for _ in range(repeats)), key=lambda run: run[0])


def _local(threads: int, seconds: float, images: int) -> dict[str, Any]:
    """The local run's figures with ``threads`` torch threads."""
    return {"threads": threads, "seconds": seconds, "images_per_sec": images / seconds}


def _time_faces(
    args: argparse.Namespace, build: Any, workers: int, fit: Any, local: Any
) -> dict[str, Any]:
    """A direction fit's sampling on ``workers`` Ray workers (find_directions' FaceJobs)."""
    with RayExecutor(build, workers=workers, cpus_per_worker=args.threads) as ex:
        startup, _ = timed(ex.start)
        wall, got = _best(lambda: fit(context=MeasureContext(executor=ex)), args.repeats)
    same = all(np.array_equal(got[2][p], local[2][p]) for p in local[2])
    return {
        "workers": workers,
        "startup_seconds": startup,
        "seconds": wall,
        "faces_per_sec": args.faces / wall,
        "identical_to_local": bool(same and np.array_equal(got[1].numpy(), local[1].numpy())),
    }


def report(out: dict[str, Any]) -> str:
    s, m = out["settings"], out["machine"]
    lines = [
        f"scale: {s['vectors']} vectors = {s['images']:,} images in {s['chunks']} chunks of"
        f" {s['vectors_per_chunk']} ({s['hooks']}; {s['repeats']})",
        f"machine: {m.get('cpu', '?')}, {m.get('cores', os.cpu_count())} cores",
        f"  local, {out['local']['threads']} torch thread(s)      "
        f"{out['local']['images_per_sec']:8,.0f} images/s",
        f"  local, {out['local_default_threads']['threads']} torch thread(s) (default)"
        f" {out['local_default_threads']['images_per_sec']:6,.0f} images/s",
    ]
    rays = sorted(k for k in out if k.startswith("ray_"))
    for key in rays:
        r = out[key]
        per = ", ".join(f"{w} {v:,.0f}" for w, v in sorted(r["worker_images_per_sec"].items()))
        lines.append(
            f"  Ray {r['workers']} worker(s) x {r['cpus_per_worker']} CPU"
            f"    {r['images_per_sec']:8,.0f} images/s  (per worker: {per};"
            f" start-up {r['startup_seconds']:.1f} s, not timed;"
            f" identical to local: {r['identical_to_local']})"
        )
    over = ", ".join(
        f"{out[k]['workers']} worker(s) {out[k]['driver_overhead_per_chunk_ms']:.1f} ms"
        for k in rays
    )
    if "faces_local" in out:
        f = out["faces_local"]
        rays = "; ".join(
            f"Ray {out[k]['workers']} worker(s) {out[k]['faces_per_sec']:,.0f}"
            f" (identical: {out[k]['identical_to_local']})"
            for k in sorted(k for k in out if k.startswith("faces_ray_"))
        )
        batch = f.get("batch", BATCH)
        lines.append(
            f"  direction fit, {f['faces']:,} faces in batches of {batch:,}, faces/s:"
            f" local {f['faces_per_sec']:,.0f}; {rays}"
        )
    lines += [
        f"  Ray 1 worker / local: {out['ray1_over_local']:.2f} (target >="
        f" {TARGET_RAY1_OVER_LOCAL})",
        f"  per chunk beyond the workers' compute: {over};"
        f" the driver writes it to the cache in"
        f" {out['driver_cache_write_ms_per_chunk']:.1f} ms (on its writer thread)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
