"""A command killed with SIGKILL takes its workers with it (ohlora_eval/lifeline.py): a
parallel sweep's loky workers and their resource trackers, a real-faces run's landmark
processes. Every process a command starts carries its pid (``OHLORA_COMMAND_PID``), which
is how the test finds them; and the next command marks the dead sweep's parent run FAILED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, clean_env, real_faces_or_skip
from mlflow.tracking import MlflowClient

from ohlora_eval.lifeline import COMMAND_PID
from ohlora_eval.tracking import store as tracking

TINY = [
    "sampling.n_vectors=400",
    "sampling.vectors_per_batch=8",
    "directions.n=1500",
    "directions.gradient.epochs=3",
    "tracking.progress=false",
    "review.page=false",
    "device=cpu",
]


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # state, ppid, ...


def _living(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def command_processes(pid: int) -> list[int]:
    """Every living process of command ``pid``: its descendants, and whatever carries its
    mark (processes it started with exec; those outlive the tree when it is killed)."""
    mark = f"{COMMAND_PID}={pid}".encode()
    children: dict[int, list[int]] = {}
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == pid:
            continue
        st = _stat(int(entry.name))
        if st is None or st[0] == "Z":
            continue
        children.setdefault(int(st[1]), []).append(int(entry.name))
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                found.add(int(entry.name))
        except OSError:
            continue
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return sorted(found)


def _wait_for(check, timeout: float, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    return check()


def _kill_when_working(argv: list[str], workers: int, timeout: float = 240) -> list[int]:
    """Start a command, SIGKILL it once ``workers`` of its processes run, and return what of
    it is still alive 10 s later."""
    proc = subprocess.Popen(
        [sys.executable, *argv], cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    seen: list[int] = []
    try:
        started = _wait_for(lambda: len(command_processes(proc.pid)) >= workers, timeout)
        assert started, f"fewer than {workers} workers of {argv} ever ran"
        seen = command_processes(proc.pid)  # the tree as it was when it was killed
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

        def left() -> list[int]:
            return sorted({p for p in seen if _living(p)} | set(command_processes(proc.pid)))

        _wait_for(lambda: not left(), 10)
        return left()
    finally:
        for pid in {*seen, *command_processes(proc.pid)}:  # never leave them to the next test
            if _living(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigkill_of_a_parallel_sweep_leaves_no_worker(tmp_path):
    argv = [
        "-m", "ohlora_eval", "-m", "hydra/launcher=local_parallel", *TINY,
        "cutoff.eyes=0.86,0.88,0.9,0.92", f"tracking.root={tmp_path}",
    ]  # fmt: skip
    left = _kill_when_working(argv, workers=2)
    assert left == [], f"processes of the killed sweep still alive 10 s later: {left}"
    # The next command closes the dead sweep's parent run.
    client = MlflowClient(tracking.resolve_uri(None, tmp_path))
    exp = client.get_experiment_by_name("ohlora-eval")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`ohlora.kind` = 'sweep'")
    assert parent.info.status == "RUNNING"
    done = subprocess.run(
        [sys.executable, "-m", "ohlora_eval", *TINY, "sampling.n_vectors=8",
         f"tracking.root={tmp_path}"],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FAILED"
    assert "died before it ended the run" in parent.data.tags["ohlora.failure_reason"]


def test_sigkill_of_a_real_faces_run_leaves_no_landmark_process(tmp_path):
    real_faces_or_skip()
    argv = [
        "-m", "ohlora_eval", "experiment=real_faces", *TINY, "scorer.workers=2",
        f"tracking.root={tmp_path}",
    ]  # fmt: skip
    left = _kill_when_working(argv, workers=2)
    assert left == [], f"landmark processes of the killed run still alive 10 s later: {left}"


@pytest.mark.parametrize("kind", ["child", "grandchild"])
def test_a_worker_ends_when_its_parent_is_gone(tmp_path, kind):
    """The watch itself, in a forked child whose parent is SIGKILLed (and in a grandchild:
    a forked process inherits no thread, so its watch starts again)."""
    script = f"""
import os, sys, time
sys.path.insert(0, {str(ROOT)!r})
from ohlora_eval import lifeline
pid = os.fork()
if pid == 0:
    lifeline.start()
    if {kind == "grandchild"!r}:
        if os.fork() == 0:
            lifeline.start()
            open({str(tmp_path / "pid")!r}, 'w').write(str(os.getpid()))
            time.sleep(600)
        time.sleep(600)
    open({str(tmp_path / "pid")!r}, 'w').write(str(os.getpid()))
    time.sleep(600)
time.sleep(600)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        pid_file = tmp_path / "pid"
        assert _wait_for(pid_file.exists, 30)
        time.sleep(0.2)
        worker = int(pid_file.read_text())
        if kind == "grandchild":  # its parent is the child: kill that one
            parent = int(_stat(worker)[1])
            os.kill(parent, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)

        assert _wait_for(lambda: not _living(worker), 5), "the worker outlived its parent"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


def test_a_ray_actor_starts_landmark_processes_for_its_share_of_cpus(tmp_path):
    """With execution=ray each actor built a pool of one landmark process per core of the
    node (workers x cores processes); now one per CPU of its own share."""
    real_faces_or_skip()
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ohlora_eval.apps import execution
    from ohlora_eval.apps.config import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=real_faces", "device=cpu"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    _, here, _ = execution.models(resolved)  # this process: one per core
    _, actor, _ = execution.models(resolved, cpus=1.0)
    assert here.workers == (os.cpu_count() or 1) and actor.workers == 1
    resolved["scorer"]["workers"] = 3  # an explicit setting stands
    assert execution.models(resolved, cpus=1.0)[1].workers == 3
