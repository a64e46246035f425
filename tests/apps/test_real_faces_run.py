"""experiment=real_faces end to end on the real weights from PyPI: a small screening with
its own small direction fit, its contact sheets, near-misses and the re-test's answer."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, clean_env, compose_app, real_faces_or_skip
from mlflow.tracking import MlflowClient
from PIL import Image

from ohlora_eval.apps.retest import retest
from ohlora_eval.apps.screen import evaluate
from ohlora_eval.apps.sheets import render_sheets
from ohlora_eval.errors import UserError
from ohlora_eval.tracking import store as tracking

FAST = [
    "experiment=real_faces",
    "sampling.n_vectors=20",
    "sampling.vectors_per_batch=8",
    "directions.n=1200",
    "directions.gradient.epochs=3",
    "tracking.grids.passed=2",
    "tracking.grids.best=2",
    "tracking.progress=false",
    "device=cpu",
]


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    real_faces_or_skip()
    store = tmp_path_factory.mktemp("faces") / "mlruns"
    cfg = compose_app("config", store, *FAST)
    return store, evaluate(cfg)


def test_a_small_real_faces_screening_runs_end_to_end(screened):
    store, res = screened
    client = MlflowClient(tracking.resolve_uri(None, store))
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "ohlora-real-faces"
    assert run.data.tags["generator"] == "DCGANFaceGenerator"
    assert run.data.tags["scorer"] == "DlibLandmarkScorer"
    table = res.per_vector
    assert len(table) == 20 and res.scores.shape == (20, 50, 3)
    assert np.isfinite(res.scores).all()  # the fixed box: every face measured
    corr = table[["eyes_corr", "mouth_corr", "pose_corr"]].to_numpy()
    assert np.isfinite(corr).all() and np.abs(corr).mean() > 0.3  # the edits do something
    assert set(table["svm_group_name"]) <= {"ll", "lh", "hl", "hh"}
    # Sheets big enough to judge a face: 64-px faces at >= 128 px a cell (5 mouth rows).
    sheets = sorted((store / "artifacts").rglob("review/sheets/case_*.png"))
    assert sheets
    with Image.open(sheets[0]) as img:
        assert img.height >= 5 * 128


def test_near_miss_sheets_work_on_a_real_faces_run(screened):
    store, res = screened
    out = render_sheets(
        compose_app("sheets", store, f"run_id={res.run_id}", "near_miss=1.0", "max_cases=2")
    )
    assert out.files and all(p.is_file() for p in out.files)


def test_the_retest_says_plainly_that_nothing_is_random(screened):
    store, res = screened
    first = int(res.per_vector["case"].iloc[0])
    cfg = compose_app("retest", store, f"run_id={res.run_id}", f"cases=[{first}]", "k=3")
    with pytest.raises(UserError, match="nothing in this measurement is random.*fake 1.0"):
        retest(cfg)


def test_a_missing_package_is_one_line_with_the_install_command(tmp_path):
    """dlib not importable (a stand-in module that fails as a missing one does): exit 2,
    one line naming the install command, no run opened."""
    (tmp_path / "dlib.py").write_text("raise ImportError('No module named dlib')\n")
    env = {**clean_env(), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    store = tmp_path / "mlruns"
    proc = subprocess.run(
        [sys.executable, "-m", "ohlora_eval", "experiment=real_faces", f"tracking.root={store}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not _starting(ln)]
    assert len(lines) == 1 and "pip install dlib-bin" in lines[0], proc.stderr
    assert not (store / "mlflow.db").exists() or not list((store / "artifacts").glob("*/*"))


def _starting(line: str) -> bool:
    """A line the command says while it starts slowly (``progress.starting``), not an error."""
    return line.startswith("ohlora_eval: starting")
