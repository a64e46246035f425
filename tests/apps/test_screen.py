"""A whole tracked run on the synthetic generator, composed as the app composes it."""

from __future__ import annotations

import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT, clean_env
from mlflow.tracking import MlflowClient

from ohlora_eval.apps.screen import ConfigError, evaluate
from ohlora_eval.pipeline import judge
from ohlora_eval.tracking import store as tracking
from ohlora_eval.tracking.read_back import FILES_TAG, run_file

CONTRACT_METRICS = {
    "passed",
    "pass_rate",
    "eyes_corr_mean",
    "mouth_corr_mean",
    "pose_corr_mean",
    "sum_abs_corr_mean",
    "eyes_pass_rate",
    "mouth_pass_rate",
    "pose_pass_rate",
    "images_per_sec",
}


@pytest.fixture(scope="module")
def first_run(make_cfg_module):
    cfg = make_cfg_module("cutoff.eyes=0.8", "cutoff.mouth=0.7", "cutoff.pose=0.6")
    return cfg, evaluate(cfg)


def _client(cfg) -> MlflowClient:
    uri = tracking.resolve_uri(None, cfg.tracking.root)
    return MlflowClient(uri)


def _artifact(client, run_id, path) -> str:
    """A file of the run, or of the run that stores its measurement files (a run that
    re-used a measurement made earlier in this test session's store links to them)."""
    return run_file(client, run_id, path, tempfile.mkdtemp())


def test_run_leaves_the_contract_in_mlflow(first_run):
    cfg, res = first_run
    client = _client(cfg)
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "ohlora-eval"
    assert CONTRACT_METRICS <= set(run.data.metrics)
    assert run.data.params["cutoff.eyes"] == "0.8"
    assert run.data.params["sampling.n_vectors"] == "24"
    for tag in ("generator", "git_commit", "directions.source", "directions.run_id"):
        assert tag in run.data.tags
    names = {a.path for a in client.list_artifacts(res.run_id)}
    assert {
        "per_vector.csv",
        "statistics.csv",
        "summary.png",
        "config.yaml",
        "grids",
        "review",
    } <= names
    # Its own measurement files, or a link to the run of the same measurement that has them.
    holder = run.data.tags.get(FILES_TAG, res.run_id)
    assert {"per_image.csv", "latents.npy"} <= {a.path for a in client.list_artifacts(holder)}
    assert "review/index.html" in {a.path for a in client.list_artifacts(res.run_id, "review")}
    grids = {a.path for a in client.list_artifacts(res.run_id, "grids")}
    assert "grids/best" in grids
    per_image = pd.read_csv(_artifact(client, res.run_id, "per_image.csv"))
    assert list(per_image.columns) == [
        "case",
        "pm_idx",
        "eyes_pm",
        "mouth_pm",
        "pose_pm",
        "eyes_score",
        "mouth_score",
        "pose_score",
    ]
    assert len(per_image) == 24 * 50
    latents = np.load(_artifact(client, res.run_id, "latents.npy"))
    assert latents.shape == (24, 519) and latents.dtype == np.float32


def test_rejudging_per_vector_csv_reproduces_the_logged_passed(first_run):
    cfg, res = first_run
    client = _client(cfg)
    table = pd.read_csv(
        _artifact(client, res.run_id, "per_vector.csv"), keep_default_na=False, na_values=[""]
    )
    assert list(table.columns[: len(judge.PER_VECTOR_COLUMNS)]) == judge.PER_VECTOR_COLUMNS
    verdict = judge.judge(table, dict(cfg.cutoff))
    logged = client.get_run(res.run_id).data.metrics["passed"]
    assert int((verdict["passed"] == "O").sum()) == logged
    assert (verdict["passed"] == table["passed"]).all()
    # Each correlation is the Pearson r of that vector's per-image rows.
    per_image = pd.read_csv(_artifact(client, res.run_id, "per_image.csv"))
    one = per_image[per_image["case"] == 3]
    r = np.corrcoef(one["mouth_pm"], one["mouth_score"])[0, 1]
    assert table.loc[3, "mouth_corr"] == pytest.approx(r, abs=1e-6)


def test_same_command_twice_gives_identical_per_vector_csv(make_cfg, store):
    runs = [evaluate(make_cfg()) for _ in range(2)]
    client = MlflowClient(tracking.resolve_uri(None, store))
    a, b = (open(_artifact(client, r.run_id, "per_vector.csv"), "rb").read() for r in runs)
    assert a == b


def test_batch_composition_does_not_change_results(make_cfg):
    a = evaluate(make_cfg("sampling.vectors_per_batch=8"))
    b = evaluate(make_cfg("sampling.vectors_per_batch=5"))
    assert np.array_equal(a.scores, b.scores)


@pytest.mark.parametrize(
    "override, message, opens_run",
    [
        ("cutoff.eyes=1.5", r"cutoff\.eyes=1\.5 is outside \[0, 1\]", False),
        ("sampling.n_vectors=0", r"sampling\.n_vectors=0 must be an integer in \[1, ", False),
        ("sampling.grid.eyes=[1.2]", r"sampling\.grid\.eyes needs at least 2 distinct", False),
        (
            "layer=w9",
            r"layer='w9' is not offered .* allowed: w, mapping_split1, mapping_split2",
            True,
        ),
    ],
)
def test_bad_input_is_refused_before_or_fails_the_run(
    make_cfg, store, override, message, opens_run
):
    """Cheap checks refuse a typo before any run opens; what needs the models (the layer a
    generator offers) fails the run it opened, with the reason."""
    cfg = make_cfg(override)
    client = MlflowClient(tracking.resolve_uri(None, store))
    tracking.setup("ohlora-eval", None, store)
    exp = client.get_experiment_by_name("ohlora-eval")
    before = {r.info.run_id for r in client.search_runs([exp.experiment_id])}
    with pytest.raises(ConfigError, match=message):
        evaluate(cfg)
    new = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_id not in before]
    if not opens_run:
        assert new == []
        return
    assert len(new) == 1 and new[0].info.status == "FAILED"
    assert "ConfigError" in new[0].data.tags["ohlora.failure_reason"]


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ohlora_eval",
            "cutoff.pose=2",
            f"tracking.root={tmp_path}",
            "tracking.progress=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if "ohlora_eval: error" in line]
    assert err == [
        "ohlora_eval: error: cutoff.pose=2.0 is outside [0, 1]; |r| can only be in [0, 1]"
    ]
    assert "Traceback" not in proc.stderr
