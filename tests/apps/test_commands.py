"""The commands as a user meets them: console scripts that name themselves in --help, tab
completion, and each job's folder holding its log lines and the id of its run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, clean_env
from test_hardening import TINY, cli_run

from ohlora_eval.apps import screen

BIN = Path(sys.executable).parent
COMMANDS = {
    "ohlora-eval": "screen latent vectors",
    "ohlora-eval-directions": "fit the eyes/mouth/pose edit directions",
    "ohlora-eval-select": "record chosen vectors",
    "ohlora-eval-verify": "re-measure a recorded selection",
    "ohlora-eval-alias": "point an alias",
    "ohlora-eval-choose": "tag the screening run",
    "ohlora-eval-sheets": "render and log contact sheets",
    "ohlora-eval-import": "import the original Oh-LoRA test results",
    "ohlora-eval-rejudge": "judge a run's measured correlations again",
    "ohlora-eval-retest": "re-measure a run's passed vectors",
}


def _script(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{path} is not installed (pip install -e . makes the console scripts)")
    return path


@pytest.mark.parametrize("name", ["ohlora-eval", "ohlora-eval-verify"])
def test_help_names_the_command_and_only_groups_that_work(name):
    out = subprocess.run(
        [str(_script(name)), "--help"], capture_output=True, text=True, env=clean_env(), cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith(f"{name}: {COMMANDS[name]}")
    assert "powered by Hydra" not in out.stdout and "preset" not in out.stdout
    groups = out.stdout.split("== Configuration groups (group=option) ==")[1].split("==")[0]
    listed = {ln.split(":")[0] for ln in groups.strip().splitlines()}
    if name == "ohlora-eval":
        assert {"cutoff", "generator", "scorer", "sampling", "experiment"} <= listed
    else:
        assert listed == {"tracking"}


def test_every_stage_is_a_command():
    pyproject = (ROOT / "pyproject.toml").read_text()
    for name in COMMANDS:
        assert f'\n{name} = "ohlora_eval.apps.' in pyproject


def test_tab_completion_offers_the_keys():
    env = {**clean_env(), "COMP_LINE": "ohlora-eval cutoff.", "COMP_POINT": "19"}
    out = subprocess.run(
        [str(_script("ohlora-eval")), "-sc", "query=bash"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert out.stdout.split() == ["cutoff.eyes=", "cutoff.mouth=", "cutoff.pose="]


def test_the_job_folder_holds_the_log_and_names_the_run(tmp_path):
    code, err = cli_run(screen.main, [*TINY, f"tracking.root={tmp_path}", "review.page=false"])
    assert code == 0, err
    (folder,) = [p.parent for p in (tmp_path / "hydra").rglob("mlflow_run.txt")]
    run_id = (folder / "mlflow_run.txt").read_text().split()[0]
    log = (folder / "ohlora-eval.log").read_text()
    assert f"run {run_id} (" in log and "in experiment 'ohlora-eval'" in log
    assert "ohlora_eval: passed" in log and "fitting one now" in log
    assert "\r" not in log


def test_shims_and_scripts_run_the_same_entry(tmp_path):
    """python -m ohlora_eval.choose and ohlora-eval-choose: one entry point."""
    env = clean_env()
    a = subprocess.run(
        [sys.executable, "-m", "ohlora_eval.choose", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    b = subprocess.run(
        [str(_script("ohlora-eval-choose")), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert a.stdout == b.stdout and a.returncode == b.returncode == 0
    assert os.path.basename(a.stdout.split(":")[0]) == "ohlora-eval-choose"
