"""``execution.address=ray://host:port``: a screening run from outside a cluster, through Ray
Client, against a head node started by ``ray start`` (as a team's cluster is). Its
per_vector.csv is the one measured in one process. Marked slow (a head node and a screening
in subprocesses, about a minute on a 2-core CPU): ``make test-all``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import free_port
from mlflow.tracking import MlflowClient

from ohlora_eval.tracking import store as tracking

from .scale_common import ROOT, SMALL

ray = pytest.importorskip("ray", reason="Ray missing: pip install -e '.[scale]'")
RAY = Path(sys.executable).with_name("ray")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
    # Token authentication on both sides, with a token of this test's own (Ray >= 2.59 turns
    # it on for clusters started with `ray start`, and Ray Client sends the token only when
    # RAY_AUTH_MODE=token is set where it runs).
    env.update(OMP_NUM_THREADS="1", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="ohlora-test-" + "0" * 20)
    return env


@pytest.fixture
def head_node(tmp_path):
    if Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a Ray cluster already runs on this machine")
    gcs, client = free_port(), free_port()
    log = (tmp_path / "head.log").open("w")
    proc = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--num-cpus=2", f"--port={gcs}",
         f"--ray-client-server-port={client}", "--include-dashboard=false",
         "--disable-usage-stats", "--node-ip-address=127.0.0.1"],
        env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", client)) == 0:
                break
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    try:
        if proc.poll() is not None:
            pytest.fail(f"ray start failed: {(tmp_path / 'head.log').read_text()[-2000:]}")
        yield f"ray://127.0.0.1:{client}"
    finally:
        for sig in (signal.SIGINT, signal.SIGKILL):  # `ray start --block` stops on Ctrl-C
            try:
                os.killpg(proc.pid, sig)  # the head node's processes, nothing else
            except ProcessLookupError:
                break
            try:
                proc.wait(20)
                break
            except subprocess.TimeoutExpired:
                continue
        current = Path("/tmp/ray/ray_current_cluster")  # `ray start` notes its address there
        if current.exists() and current.read_text().strip().endswith(f":{gcs}"):
            current.unlink()


def _screen(store: Path, *extra: str) -> None:
    for _attempt in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "ohlora_eval", *SMALL, "sampling.n_vectors=24",
             f"tracking.root={store}", *extra],
            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        # Ray's client proxy sometimes loses the per-client server it forks when the CPU
        # is saturated ("Starting Ray client server failed", an empty log of its own): our
        # one-line error says so, and the command is simply run again (it resumes).
        if out.returncode == 0 or "Starting Ray client server failed" not in out.stderr:
            break
    assert out.returncode == 0, out.stderr[-3000:]


def _per_vector(store: Path) -> bytes:
    client = MlflowClient(tracking.resolve_uri(None, store))
    exp = client.get_experiment_by_name("ohlora-eval")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    return Path(client.download_artifacts(run.info.run_id, "per_vector.csv")).read_bytes()


@pytest.mark.slow
def test_a_screening_through_ray_client(head_node, tmp_path):
    _screen(tmp_path / "local")
    _screen(tmp_path / "client", "execution=ray", f"execution.address={head_node}")
    assert _per_vector(tmp_path / "client") == _per_vector(tmp_path / "local")
