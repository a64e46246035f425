"""The driver killed mid-run (SIGKILL, ``execution=ray`` with its own local Ray): the same
command again resumes from the cache and gives the uninterrupted per_vector.csv. Marked
slow (two Ray start-ups in subprocesses, about a minute on a 2-core CPU): ``make test-all``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ohlora_eval.tracking import store as tracking

from .scale_common import ROOT, SMALL

pytest.importorskip("ray", reason="Ray missing: pip install -e '.[scale]'")

ARGS = [*SMALL, "sampling.n_vectors=80", "execution=ray", "execution.workers=2"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _cmd(store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ohlora_eval", *ARGS, f"tracking.root={store}", *extra]


def _group_gone(pgid: int) -> None:
    """The killed driver's process group (its local Ray's processes included) ended."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(pgid, signal.SIGKILL)  # what this test started, nothing else


@pytest.mark.slow
def test_a_killed_driver_resumes_from_the_cache(tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(
        [sys.executable, "-m", "ohlora_eval", *SMALL, "sampling.n_vectors=80",
         f"tracking.root={ref}"],
        cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    store = tmp_path / "mlruns"
    proc = subprocess.Popen(
        _cmd(store), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((store / "cache").glob("*/chunk_*.npz"))) >= 4:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(60)
    _group_gone(proc.pid)
    kept = len(list((store / "cache").glob("*/chunk_*.npz")))
    assert proc.returncode == -signal.SIGKILL and 4 <= kept < 20, f"not killed mid-run: {kept}"
    again = subprocess.run(
        _cmd(store), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-3000:]

    def last(root: Path):
        client = MlflowClient(tracking.resolve_uri(None, root))
        exp = client.get_experiment_by_name("ohlora-eval")
        run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]
        return run, Path(client.download_artifacts(run.info.run_id, "per_vector.csv")).read_bytes()

    run, csv = last(store)
    assert run.data.metrics["reused_chunks"] >= kept
    assert run.data.metrics["measured_chunks"] == 20 - run.data.metrics["reused_chunks"]
    assert csv == last(ref)[1]
