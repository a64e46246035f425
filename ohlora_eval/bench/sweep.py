"""Section 3, cutoff sweep cost: one full screening run vs a ``cutoff.eyes`` sweep of
``SWEEP_CUTOFFS`` in the same private store, all through the shipped evaluation
(``apps.screen.evaluate``) on the composed app config.

Times each evaluation end to end (wall and CPU seconds) and reports the ratio
sweep total / one run. Judging is cheap and measuring is not, so with the
measurement cache (``pipeline.cache``, on by default) the sweep should cost
little more than one run (target <= 1.3); without it every point measures again
(ratio about ``len(SWEEP_CUTOFFS)``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ohlora_eval.bench.config import compose
from ohlora_eval.bench.timing import ratio

SWEEP_CUTOFFS: tuple[float, ...] = (0.88, 0.90, 0.92, 0.94)
TARGET_SWEEP_WITH_CACHE = 1.3


@contextlib.contextmanager
def private_tracking() -> Iterator[None]:
    """Keep an inherited ``MLFLOW_TRACKING_URI`` from pointing the sweep at a real server."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def timed_evaluation(overrides: Sequence[str]) -> dict[str, Any]:
    """One ``evaluate(cfg)`` on the composed app config; its summary print is kept out of
    the benchmark's table (and stored in the result)."""
    from ohlora_eval.apps.screen import evaluate

    cfg = compose(overrides)
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

    Steps, all with ``evaluate(cfg)`` in a private store under a temp dir (an
    inherited ``MLFLOW_TRACKING_URI`` is ignored):

    0. not timed: a 1-vector evaluation, so that directions the config finds in
       the store (``directions=latest`` fits them when missing) exist before the
       timed runs and "one run" is an ordinary run, not a direction fit;
    1. one run of ``n_vectors`` (timed);
    2. one run per ``cutoff.eyes`` value, one after another (timed, summed).
    """
    cache_present = importlib.util.find_spec("ohlora_eval.pipeline.cache") is not None
    with tempfile.TemporaryDirectory(prefix="ohlora-bench-sweep-") as tmp, private_tracking():
        base = [
            f"tracking.root={Path(tmp) / 'mlruns'}",
            f"sampling.n_vectors={int(n_vectors)}",
            "tracking.progress=false",
            f"device={device}",
        ]
        prep = timed_evaluation([*base, "sampling.n_vectors=1"])
        one = timed_evaluation(base)
        points = [timed_evaluation([*base, f"cutoff.eyes={c}"]) for c in cutoffs]
        cache_enabled = compose(base).get("cache", {}).get("enabled")
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
        "sweep_over_one": ratio(total, one["seconds"]),
        "sweep_over_one_cpu": ratio(sum(p["cpu_seconds"] for p in points), one["cpu_seconds"]),
    }
