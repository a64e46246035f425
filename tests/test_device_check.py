"""scripts/device_check.sh, the one-go GPU check, run on a CPU with tiny sizes: its steps,
time budget and JSON report (the GPU itself is only there when a machine is lent)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, clean_env

from ohlora_eval.bench import device_report

SCRIPT = ROOT / "scripts" / "device_check.sh"
TINY = {
    "DEVICE": "cpu",
    "MODELS": "synthetic",
    "N_SMALL": "2",
    "N_LARGE": "3",
    "SCREEN_N": "4",
    "FIT_N": "600",
    "SWITCHES": "bf16",
    "OMP_NUM_THREADS": "1",
}


def _run(tmp_path: Path, **extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**clean_env(), **TINY, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "w")}
    env.update(extra)
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=400
    )
    report = json.loads((tmp_path / "out" / "device_check.json").read_text())
    return done, report


def test_script_is_executable_and_bash_syntax_is_valid():
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_budget_skips_steps_that_would_not_finish_and_reports_them(tmp_path):
    done, report = _run(tmp_path, BUDGET_S="100")  # setup (90 s timeout) only
    assert done.returncode == 0, done.stderr
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == [
        "setup",
        "bench",
        "screen",
        "select",
        "verify",
        "bench_large",
        "compile",
    ]
    assert steps["setup"]["rc"] == 0 and steps["setup"]["ok"]
    assert "BUDGET_S=100" in steps["bench"]["reason"]
    assert steps["select"]["reason"] == "the screen step did not finish"
    assert "torch.compile on a CPU" in steps["compile"]["reason"]
    assert report["environment"]["torch"] and report["environment"]["mlflow"]
    assert report["settings"]["device"] == "cpu" and report["settings"]["n_small"] == 2
    assert report["benchmarks"] == {} and report["all_steps_ok"]


@pytest.mark.slow
def test_device_check_runs_end_to_end_on_cpu(tmp_path):
    done, report = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    steps = {s["name"]: s for s in report["steps"]}
    for name in ("setup", "bench", "screen", "select", "bench_large"):
        assert steps[name]["rc"] == 0, steps[name]["log_tail"]
    assert report["all_steps_ok"], report["steps"]
    # The exactness check: the recorded vectors re-measured on the same device, bit for bit.
    assert report["verification"]["selected"] == 3
    assert report["verification"]["max_abs_r_diff"] == 0.0 and report["verification"]["exact"]
    small = report["benchmarks"]["bench_small"]["switches"]["synthetic"]
    assert small["settings"]["vectors"] == 2
    assert small["runs"]["fp32"]["images_per_sec"] > 0
    bf16 = small["runs"]["bf16"]
    assert set(bf16["max_abs_delta_r"]) == {"eyes", "mouth", "pose"}
    assert 0.0 <= bf16["same_verdict_share"] <= 1.0
    assert report["benchmarks"]["bench_large"]["switches"]["synthetic"]["settings"]["vectors"] == 3


def test_report_reads_steps_logs_and_the_verify_line(tmp_path):
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "ORDER").write_text("screen\nverify\nbench\n")
    (steps / "screen.rc").write_text("0\n")
    (steps / "screen.seconds").write_text("12.5\n")
    run = "ab" * 16
    (steps / "screen.log").write_text(
        f"... run {run} (eyes0.92 mouth0.88 pose0.88 | 4 vectors) in experiment 'ohlora-eval'\n"
    )
    (steps / "verify.rc").write_text("1\n")
    (steps / "verify.seconds").write_text("3\n")
    (steps / "verify.log").write_text(
        "ohlora_eval.verify: device-check/1: 0 of 3 still pass (SOME NO LONGER PASS);"
        " max |recorded r - re-measured r| = 2.3e-07\n"
    )
    (steps / "bench.rc").write_text("124\n")
    (steps / "bench.log").write_text("")
    out = tmp_path / "r" / "report.json"
    assert device_report.main([str(tmp_path), str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["screen_run_id"] == run
    assert report["verification"] == {
        "still_pass": 0,
        "selected": 3,
        "max_abs_r_diff": 2.3e-07,
        "exact": False,
    }
    by_name = {s["name"]: s for s in report["steps"]}
    assert by_name["verify"]["ok"]  # exit 1 = "no longer pass", its verdict was printed
    assert by_name["bench"]["timed_out"] and not by_name["bench"]["ok"]
    assert not report["all_steps_ok"]
