"""Section 6, real faces (``experiment=real_faces``): the DCGAN and dlib's landmarks from
PyPI, with their real weights, as the screening runs them.

Times, on the same vectors (``--faces-vectors`` x 50 edits, random unit directions: speed
does not depend on which): generating alone (the edited faces, the hot loop's step sizes),
scoring alone (every landmark worker), and the whole measuring step
(``pipeline.measure.measure``, no cache), where the next faces are generated while the
workers measure the last ones; then the identity stage (``identity=dlib_resnet``: each
vector's 51 faces generated and embedded) and the descriptor alone, ours against dlib's.
Ratios: the pipeline over the slower stage alone, and over the two stages one after the
other (what the overlap buys).

On a CPU both stages compete for the same cores, so the pipeline cannot reach the slower
stage alone when each stage alone already uses every core; the per-image core-seconds of
each stage say how close it comes to what the cores can do (``cpu_bound``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

from ohlora_eval.bench.config import compose, config_grid
from ohlora_eval.bench.real import random_directions
from ohlora_eval.bench.text import num, table
from ohlora_eval.bench.timing import Runs, median, ratio
from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline.edit import EditSetup, edited_mids
from ohlora_eval.pipeline.measure import measure
from ohlora_eval.pipeline.model_calls import computing, step_vectors


def faces_section(args: argparse.Namespace) -> dict[str, Any]:
    """Generating alone, scoring alone and the pipeline, on the real-faces models."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ohlora_eval.apps.build import check_installed
    from ohlora_eval.apps.config import measure_settings

    cfg = compose(["experiment=real_faces", f"device={args.device}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:
        check_installed(resolved)
    except ConfigError as exc:
        return {"skipped": True, "reason": str(exc)}
    t0 = time.perf_counter()
    generator, scorer = instantiate(cfg.generator), instantiate(cfg.scorer)
    layer, chunk = str(cfg.layer), int(cfg.sampling.vectors_per_batch)
    grid = config_grid(cfg)
    directions = random_directions(layer, generator.mid_dims[layer], args.seed)
    settings = measure_settings(resolved)
    setup = EditSetup(generator, scorer, directions, grid, layer, settings)
    latents = generator.sample_latents(args.faces_vectors, args.seed)
    n = latents.shape[0] * setup.m
    runs = Runs()

    with computing(setup) as device, torch.inference_mode():
        mid = generator.to_mid(latents, layer)
        edited = edited_mids(mid, directions.for_vectors(mid), setup.steps)
        step = step_vectors(latents.shape[0], setup.m, generator, scorer, device) * setup.m

        def generate() -> torch.Tensor:
            return torch.cat(
                [generator.synthesize(edited[i : i + step], layer) for i in range(0, n, step)]
            )

        images = generate()  # warm-up (and the scoring stage's input)
        scorer.score(images[:step])  # starts the landmark workers, not timed
        one = instantiate(cfg.scorer, workers=1)  # one core each: the per-image core-seconds
        one.score(images[:step])
        threads = torch.get_num_threads()
        for _ in range(args.repeats):
            runs.time("generate", generate)
            runs.time("score", lambda: scorer.score(images))
            torch.set_num_threads(1)
            try:
                runs.time("generate_1core", generate)
            finally:
                torch.set_num_threads(threads)
            runs.time("score_1core", lambda: one.score(images))
        one.close()
    measure(setup, latents[:1], chunk)  # warm-up
    for _ in range(args.repeats):
        runs.time("pipeline", lambda: measure(setup, latents, chunk))
    close = getattr(scorer, "close", None)
    if close:
        close()
    identity = _identity_rates(cfg, setup, latents, runs, args.repeats)

    rate = {k: runs.rate(k, n) for k in runs.wall}
    slower = min(rate["generate"], rate["score"])
    serial = 1.0 / (1.0 / rate["generate"] + 1.0 / rate["score"])
    # What the cores can do at best: each image costs its two stages' core-seconds.
    cores = os.cpu_count() or 1
    cpu_bound = cores / (1.0 / rate["generate_1core"] + 1.0 / rate["score_1core"])
    return {
        "settings": {
            "generator": repr(generator),
            "scorer": repr(scorer),
            "layer": layer,
            "vectors": int(latents.shape[0]),
            "images": n,
            "images_per_step": step,
            "measure": {"channels_last": settings.channels_last},
            "directions": directions.source,
            "repeats": args.repeats,
            "note": "scoring runs in worker processes: CPU s of this process leave it out",
        },
        "seconds": {k: median(v) for k, v in runs.wall.items()},
        "runs_seconds": runs.wall,
        "section_seconds": time.perf_counter() - t0,
        "images_per_sec": rate,
        "ratios": {
            "pipeline_over_slower_stage": ratio(rate["pipeline"], slower),
            "pipeline_over_stages_in_turn": ratio(rate["pipeline"], serial),
            "pipeline_over_cpu_bound": ratio(rate["pipeline"], cpu_bound),
        },
        "stages_in_turn_images_per_sec": serial,
        "cpu_bound_images_per_sec": cpu_bound,
        "cores": cores,
        "identity": identity,
    }


def _identity_rates(
    cfg: Any, setup: EditSetup, latents: torch.Tensor, runs: Runs, repeats: int
) -> dict[str, Any]:
    """The identity stage (``identity=dlib_resnet``) on the same vectors: each vector's
    unedited face and 50 edits generated and embedded (``pipeline.identity``, no cache), and
    the descriptor alone, ours (torch) against dlib's own ``compute_face_descriptor``."""
    from hydra.utils import instantiate

    from ohlora_eval.pipeline.identity import grid_faces, measure_identity
    from ohlora_eval.progress import quiet

    model = instantiate(cfg.identity)
    v = int(latents.shape[0])
    rows, groups = list(range(v)), [""] * v
    with quiet():
        measure_identity(setup, model, latents[:1], [0], [""])  # warm-up
        for _ in range(repeats):
            runs.time("identity", lambda: measure_identity(setup, model, latents, rows, groups))
    with torch.inference_mode():
        faces = grid_faces(setup, latents[:1], [""])  # 51 faces
    import dlib

    theirs = dlib.face_recognition_model_v1(model.path)
    model.embed(faces[:8])  # warm-up
    for _ in range(repeats):  # both from the same images, the same alignment included
        runs.time("descriptor", lambda: model.embed(faces))
        runs.time(
            "descriptor_dlib",
            lambda: [
                theirs.compute_face_descriptor(img, shp) for img, shp, _ in model.aligned(faces)
            ],
        )
    m1 = setup.m + 1
    return {
        "model": repr(model),
        "vectors": v,
        "faces": v * m1,
        "faces_per_sec": runs.rate("identity", v * m1),
        "descriptor_faces_per_sec": runs.rate("descriptor", m1),
        "descriptor_dlib_faces_per_sec": runs.rate("descriptor_dlib", m1),
    }


def faces_report(fc: dict[str, Any]) -> list[str]:
    out = ["\n[6] Real faces: the DCGAN and dlib's landmarks from PyPI (experiment=real_faces)"]
    if fc.get("skipped"):
        return [*out, f"  skipped ({fc['reason']})"]
    s, r, q = fc["settings"], fc["images_per_sec"], fc["ratios"]
    out.append(
        f"  {s['vectors']} vectors x 50 edits = {s['images']:,} images, layer {s['layer']},"
        f" {s['images_per_step']} images per step, median of {s['repeats']}"
    )
    out.append(f"  generator: {s['generator']}\n  scorer: {s['scorer']}")
    stages = (
        ("generating alone", "generate"),
        ("scoring alone", "score"),
        ("the whole measuring step", "pipeline"),
        ("generating, 1 thread", "generate_1core"),
        ("scoring, 1 worker", "score_1core"),
    )
    rows = [["stage", "images/s", "s"]]
    rows += [[label, num(r[key], 0), num(fc["seconds"][key], 2)] for label, key in stages]
    out.append(table(rows))
    out.append(
        f"  pipeline / slower stage alone: {num(q['pipeline_over_slower_stage'], 2)} (target 0.8);"
        f" pipeline / the two stages in turn ({num(fc['stages_in_turn_images_per_sec'], 0)}"
        f" images/s): {num(q['pipeline_over_stages_in_turn'], 2)}; pipeline / what"
        f" {fc['cores']} cores can do at best ({num(fc['cpu_bound_images_per_sec'], 0)} images/s,"
        f" from the 1-core rates): {num(q['pipeline_over_cpu_bound'], 2)}"
    )
    idn = fc.get("identity")
    if idn:
        out.append(
            f"  identity (identity=dlib_resnet, {idn['vectors']} vectors x 51 faces: the unedited"
            f" face and the 50 edits, generated and embedded): {num(idn['faces_per_sec'], 0)}"
            " faces/s; the descriptor alone (alignment included)"
            f" {num(idn['descriptor_faces_per_sec'], 0)} faces/s in torch,"
            f" {num(idn['descriptor_dlib_faces_per_sec'], 1)} faces/s by dlib's"
            " own compute_face_descriptor (one core, no BLAS in dlib-bin)"
        )
    return out
