"""The command line: flags, the order of the sections, the JSON file and the printed report.

Times nothing itself; it runs ``synthetic``, ``real``, ``sweep``, ``switches``, ``scale``
and ``faces`` (each skippable), adds the machine (``timing.machine_info``) and the git commit,
writes the JSON (schema ``SCHEMA``; NaN written as null) and prints ``report``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ohlora_eval.bench import scale
from ohlora_eval.bench.faces import faces_section
from ohlora_eval.bench.real import real_section
from ohlora_eval.bench.report import format_report
from ohlora_eval.bench.sweep import SWEEP_CUTOFFS, sweep_section
from ohlora_eval.bench.switches import (
    DEFAULT_SWITCHES,
    MODEL_SETS,
    parse_model_sets,
    parse_switches,
    switches_section,
)
from ohlora_eval.bench.synthetic import synthetic_section
from ohlora_eval.bench.text import plain_json
from ohlora_eval.bench.timing import loadavg, machine_info
from ohlora_eval.tracking import store

SCHEMA = "ohlora_eval.bench/2"


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
    p.add_argument(
        "--skip-synthetic", action="store_true", help="skip the synthetic-pipeline section"
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
    p.add_argument("--skip-switches", action="store_true", help="skip the speed-switch section")
    p.add_argument(
        "--skip-scale", action="store_true", help="skip the scale section (local vs Ray workers)"
    )
    p.add_argument(
        "--skip-faces",
        action="store_true",
        help="skip the real-faces section (the DCGAN and dlib's landmarks from PyPI)",
    )
    p.add_argument(
        "--faces-vectors",
        type=_positive,
        default=40,
        help="real-faces section: latent vectors (x 50 edits) (default 40)",
    )
    p.add_argument(
        "--scale-vectors",
        type=int,
        default=400,
        help="scale section: latent vectors (x 50 edits), local vs Ray 1 and 2 workers",
    )
    p.add_argument(
        "--scale-faces",
        type=int,
        default=8000,
        help="scale section: faces a direction fit samples, local vs Ray (0 skips it)",
    )
    p.add_argument(
        "--scale-faces-batch",
        type=int,
        default=None,
        help="scale section: faces per batch of that sampling (default: a fit's, 2,000)",
    )
    p.add_argument(
        "--switches",
        type=parse_switches,
        default=list(DEFAULT_SWITCHES),
        help="speed switches compared with fp32, parts joined with + (default"
        f" {','.join(DEFAULT_SWITCHES)}); CUDA-only ones and compile on a CPU are skipped"
        " with the reason",
    )
    p.add_argument(
        "--switch-models",
        type=parse_model_sets,
        default=list(MODEL_SETS),
        help="switch section: model sets, synthetic and/or real (default synthetic,real)",
    )
    p.add_argument(
        "--switch-vectors",
        type=_positive,
        default=100,
        help="switch section, synthetic models: latent vectors (x 50 edits) (default 100)",
    )
    p.add_argument(
        "--switch-real-vectors",
        type=_positive,
        default=1,
        help="switch section, real networks: latent vectors (default 1; 200+ on a GPU)",
    )
    p.add_argument(
        "--switch-images",
        type=_positive,
        default=50,
        help="switch section, real networks: edits per vector, 2..50, evenly spread over"
        " the grid (default 50)",
    )
    p.add_argument(
        "--compile-on-cpu",
        action="store_true",
        help="switch section: run the compile switch on a CPU too (slow to compile)",
    )
    p.add_argument(
        "--fp16-on-cpu",
        action="store_true",
        help="switch section: run the fp16 switch on a CPU too (slow fallback kernels)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="switch section: a config override for its models, e.g."
        " generator.batch_size=64 (repeatable)",
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


def _progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, now: dt.datetime) -> dict[str, Any]:
    """Every section in order, into one result dict (without ``json_path``)."""
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "date": now.isoformat(timespec="seconds"),
        "git_commit": store.git_commit(),
        "machine": machine_info(),
        "threads_requested": args.threads,
        "device": args.device,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    if args.skip_synthetic:
        result["synthetic"] = {"skipped": True, "reason": "--skip-synthetic"}
    else:
        _progress("synthetic pipeline ...")
        result["synthetic"] = synthetic_section(args)
    if args.skip_real:
        result["real"] = {"skipped": True, "reason": "--skip-real"}
    else:
        _progress("real Oh-LoRA networks (slow on CPU) ...")
        result["real"] = real_section(args)
    if args.skip_sweep:
        result["sweep"] = {"skipped": True, "reason": "--skip-sweep"}
    else:
        _progress(
            f"cutoff sweep: 1 + {len(SWEEP_CUTOFFS)} evaluations"
            f" of {args.sweep_vectors} vectors ..."
        )
        result["sweep"] = sweep_section(args.sweep_vectors, SWEEP_CUTOFFS, args.device)
    if args.skip_switches:
        result["switches"] = {"skipped": True, "reason": "--skip-switches"}
    else:
        _progress(f"speed switches {','.join(args.switches)} on {','.join(args.switch_models)} ...")
        result["switches"] = switches_section(args)
    if args.skip_scale:
        result["scale"] = {"skipped": True, "reason": "--skip-scale"}
    elif importlib.util.find_spec("ray") is None:
        why = "ray is not installed (pip install -e '.[scale]')"
        result["scale"] = {"skipped": True, "reason": why}
    else:
        _progress(f"scale: local vs Ray with 1 and 2 workers, {args.scale_vectors} vectors ...")
        result["scale"] = scale.measure_scale(
            scale.parse(
                ["--vectors", f"{args.scale_vectors}", "--faces", f"{args.scale_faces}"]
                + (["--faces-batch", f"{args.scale_faces_batch}"] if args.scale_faces_batch else [])
                + ["--repeats", "1"]
            )
        )
    if args.skip_faces:
        result["faces"] = {"skipped": True, "reason": "--skip-faces"}
    else:
        _progress(f"real faces: generating, scoring, pipeline, {args.faces_vectors} vectors ...")
        result["faces"] = faces_section(args)
    end = loadavg()
    if end is not None:
        result["machine"]["loadavg_end"] = end
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    now = dt.datetime.now().astimezone()
    out = Path(args.out or Path("mlruns") / "bench" / f"{now.strftime('%Y%m%d-%H%M%S')}.json")
    result = run(args, now)
    out.parent.mkdir(parents=True, exist_ok=True)
    result["json_path"] = str(out)
    out.write_text(json.dumps(plain_json(result), indent=2, allow_nan=False) + "\n")
    print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
