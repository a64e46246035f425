"""What identity costs a real-faces screening: the same 500-vector run (experiment=real_faces)
with the identity stage at its default scope and without it (identity=none), each measuring
everything (cache.enabled=false), on directions fitted once before, in the order
with, without, without, with (so a slow spell of the machine weighs on both). Prints each
run's wall time (the whole command, as a user waits for it), the identity stage's own
seconds and faces/s (its run metrics), and the ratio of the medians.

    PYTHONPATH=. python scripts/identity_cost.py [--vectors 500] [--root /tmp/identity_cost]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient


def run(args: list[str], root: Path, look: bool = True) -> tuple[float, str]:
    """One command's wall seconds and the id of the screening run it made (the newest)."""
    cmd = [sys.executable, "-m", *args, f"tracking.root={root}", "tracking.progress=false"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if not look:
        return seconds, ""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ohlora-real-faces")
    newest = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]
    return seconds, newest.info.run_id


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vectors", type=int, default=500)
    p.add_argument("--root", type=Path, default=Path("/tmp/identity_cost"))
    a = p.parse_args()
    base = ["experiment=real_faces", f"sampling.n_vectors={a.vectors}", "cache.enabled=false"]
    print("fitting the directions once (not timed) ...", flush=True)
    run(["ohlora_eval.find_directions", "experiment=real_faces"], a.root, look=False)
    client = MlflowClient(f"sqlite:///{a.root / 'mlflow.db'}")
    times: dict[str, list[float]] = {"with": [], "without": []}
    for label in ("with", "without", "without", "with"):
        extra = [] if label == "with" else ["identity=none"]
        seconds, run_id = run(["ohlora_eval", *base, *extra], a.root)
        times[label].append(seconds)
        m = client.get_run(run_id).data.metrics
        stage = ""
        if label == "with":
            stage = (
                f"; identity stage {m['identity_seconds']:.1f} s for"
                f" {int(m['identity_measured_now'])} vectors"
                f" at {m.get('identity_faces_per_sec', float('nan')):.0f} faces/s;"
                f" passed {int(m['passed'])}, of them same person {int(m['r_passed_same_person'])}"
            )
        print(f"{label:>7} identity: {seconds:6.1f} s (run {run_id}){stage}", flush=True)
    w, wo = statistics.median(times["with"]), statistics.median(times["without"])
    print(f"median: with {w:.1f} s, without {wo:.1f} s: {w / wo:.2f}x")


if __name__ == "__main__":
    main()
