"""The real MLflow UI in a headless browser: a small cutoff sweep, an MLflow server on a free
port of 127.0.0.1 serving its store, and Debian's Chromium driven by Playwright.

Skipped with the reason when Chromium or Playwright is missing. Screenshots go to the
test's tmp folder and, for people to look at, to ``$OHLORA_UI_SHOTS`` (default
/tmp/ui_shots); their paths are printed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import CHROMIUM, CHROMIUM_ARGS, free_port, playwright_or_skip

from .ui_common import CUTOFFS

ROOT = Path(__file__).resolve().parents[2]
MLFLOW = Path(sys.executable).with_name("mlflow")
# Small but real: the sweep measures once (its first point), the others re-use it.
SWEEP = [
    "device=cpu",
    "tracking.progress=false",
    "sampling.n_vectors=24",
    "sampling.vectors_per_batch=8",
    "tracking.grids.passed=2",
    "tracking.grids.best=1",
    "directions.method=svm",
    "directions.grouped=false",
    "directions.n=600",
    "cutoff.mouth=0.8",
    "cutoff.pose=0.8",
    "cutoff.eyes=" + ",".join(CUTOFFS),
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="session")
def browser_or_skip():
    """Playwright's ``sync_playwright``, or a skip saying what is missing."""
    return playwright_or_skip("the MLflow UI tests")


class Sweep:
    """The finished sweep: its store, what it printed and its runs."""

    def __init__(self, root: Path, stdout: str) -> None:
        from mlflow.tracking import MlflowClient

        self.root = root
        self.stdout = stdout
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        client = MlflowClient(self.uri)
        exp = client.get_experiment_by_name("ohlora-eval")
        self.experiment = exp
        runs = client.search_runs([exp.experiment_id])
        self.parent = next(r for r in runs if r.data.tags.get("ohlora.kind") == "sweep")
        self.points = sorted(
            (r for r in runs if r.data.tags.get("ohlora.kind") == "evaluation"),
            key=lambda r: int(r.data.tags["sweep.job"]),
        )

    def printed_link(self, label: str, port: int) -> str:
        """A link the sweep printed (after ``label``), pointed at ``port``."""
        match = re.search(re.escape(label) + r"\s*(http://\S+)", self.stdout)
        assert match, f"the sweep printed no link after {label!r}:\n{self.stdout[-2000:]}"
        return re.sub(r"^http://127\.0\.0\.1:\d+", f"http://127.0.0.1:{port}", match.group(1))


@pytest.fixture(scope="session")
def ui_sweep(tmp_path_factory, browser_or_skip) -> Sweep:
    root = tmp_path_factory.mktemp("ui") / "mlruns"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ohlora_eval", "-m", f"tracking.root={root}", *SWEEP],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"\nui: 3-point sweep in {time.perf_counter() - t0:.1f} s")
    return Sweep(root, proc.stdout)


@pytest.fixture(scope="session")
def mlflow_ui(ui_sweep, tmp_path_factory):
    """``http://127.0.0.1:<port>``: MLflow's server (one worker, no job runner, as ``make ui``)
    on the sweep's store."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "mlflow.log"
    env = {**_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                str(MLFLOW),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                ui_sweep.uri,
            ],
            cwd=ui_sweep.root.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: ended as one below
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def chromium(browser_or_skip, tmp_path_factory):
    """A fresh headless Chromium (its own profile: no saved MLflow UI state)."""
    with browser_or_skip() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()
