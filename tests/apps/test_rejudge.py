"""Re-judging a finished run's correlations with other cutoffs, generating nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from helpers import CONF_DIR, ROOT, clean_env, reference_file
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from ohlora_eval.apps.import_results import import_results
from ohlora_eval.apps.rejudge import rejudge
from ohlora_eval.apps.screen import evaluate
from ohlora_eval.pipeline import judge
from ohlora_eval.tracking import store as tracking

RESULT = "test_result_mapping_split1_160K_final_mixed.csv"


def compose_cfg(config: str, store: Path, *overrides: str):
    """compose(config, overrides) as the apps compose it, with the given store."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config, overrides=[f"tracking.root={store}", "tracking.progress=false", *overrides]
        )


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, str]:
    """The reference test result imported once into a store of this module: (store, run id)."""
    path = reference_file(RESULT)
    store = tmp_path_factory.mktemp("rejudge") / "mlruns"
    with pytest.MonkeyPatch.context() as mp:  # runs before the per-test autouse fixture
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        res = import_results(compose_cfg("import_results", store, f"path={path}"))
    return store, res.run_id


def rejudge_cfg(store: Path, run_id: str, *overrides: str):
    cfg = compose_cfg("rejudge", store, f"run_id={run_id}", *overrides)
    assert "generator" not in cfg and "scorer" not in cfg  # nothing to generate with
    return cfg


def client_for(store: Path) -> MlflowClient:
    return MlflowClient(tracking.resolve_uri(None, store))


def per_vector_of(client: MlflowClient, run_id: str) -> pd.DataFrame:
    path = client.download_artifacts(run_id, "per_vector.csv")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


@pytest.mark.parametrize("eyes, passed", [(0.88, 62), (0.90, 57), (0.92, 43), (0.94, 31)])
def test_rejudging_the_reference_import_sweeps_the_eyes_cutoff(imported, eyes, passed):
    store, source_id = imported
    res = rejudge(rejudge_cfg(store, source_id, f"cutoff.eyes={eyes}"))
    client = client_for(store)
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "ohlora-eval"
    assert run.data.metrics["passed"] == passed == res.metrics["passed"]
    assert run.data.metrics["pass_rate"] == passed / 2000
    assert "images_per_sec" not in run.data.metrics
    tags = run.data.tags
    assert tags["source"] == "rejudge" and tags["ohlora.kind"] == "rejudge"
    assert tags["rejudge.source_run_id"] == source_id
    assert tags["rejudge.source_kind"] == "imported"
    assert "sweep_id" not in tags  # not under a Hydra multirun
    assert run.data.params["cutoff.eyes"] == str(eyes)
    assert run.data.params["run_id"] == source_id

    table = per_vector_of(client, res.run_id)
    source = per_vector_of(client, source_id)
    assert list(table.columns) == judge.PER_VECTOR_COLUMNS
    for col in ["case", "svm_group_name", *judge.CORR_COLUMNS]:
        assert (table[col] == source[col]).all(), col
    statistics = pd.read_csv(client.download_artifacts(res.run_id, "statistics.csv"), index_col=0)
    assert statistics.loc[0, "passed"] == passed


def test_a_sweep_from_the_command_line_generates_nothing(imported, tmp_path):
    store, source_id = imported
    sweep_dir = tmp_path / "hydra" / "sweep-eyes"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ohlora_eval.rejudge",
            "-m",
            f"run_id={source_id}",
            "cutoff.eyes=0.88,0.94",
            f"tracking.root={store}",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "passed 62 of 2000" in proc.stdout and "passed 31 of 2000" in proc.stdout
    client = client_for(store)
    exp = client.get_experiment_by_name("ohlora-eval")
    swept = client.search_runs([exp.experiment_id], f"tags.sweep_id = '{sweep_dir.name}'")
    (parent,) = [r for r in swept if r.data.tags.get("ohlora.kind") == "sweep"]
    runs = [r for r in swept if r.data.tags.get("ohlora.kind") == "rejudge"]
    assert len(runs) == 2 and parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert {r.data.tags["rejudge.source_run_id"] for r in runs} == {source_id}
    assert sorted(r.data.metrics["passed"] for r in runs) == [31, 62]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_rejudging_a_native_run_reproduces_its_verdicts(make_cfg, store):
    native = evaluate(make_cfg())
    same = rejudge(rejudge_cfg(store, native.run_id))
    assert same.metrics["passed"] == native.metrics["passed"]
    client = client_for(store)
    logged = per_vector_of(client, native.run_id)
    again = per_vector_of(client, same.run_id)
    pd.testing.assert_frame_equal(again, logged)
    assert client.get_run(same.run_id).data.tags["rejudge.source_kind"] == "evaluation"
    # Its measurement params travel with the correlations they describe.
    params = client.get_run(same.run_id).data.params
    assert params["sampling.n_vectors"] == "24" and params["run_id"] == native.run_id

    looser = rejudge(rejudge_cfg(store, native.run_id, "cutoff.eyes=0.1"))
    verdict = judge.judge(logged, {"eyes": 0.1, "mouth": 0.88, "pose": 0.88})
    assert looser.metrics["passed"] == int((verdict["passed"] == "O").sum())


def test_what_cannot_be_rejudged_is_named(imported):
    store, source_id = imported
    with pytest.raises(ValueError, match=r"run_id=<id> is required"):
        rejudge(compose_cfg("rejudge", store))
    with pytest.raises(ValueError, match=r"run_id=nosuchrun: no such run in sqlite:"):
        rejudge(rejudge_cfg(store, "nosuchrun"))

    tracking.setup("ohlora-eval", None, store)
    with mlflow.start_run() as bare:
        mlflow.set_tag("ohlora.kind", "other")
    with pytest.raises(ValueError, match=rf"run_id={bare.info.run_id} .*has no per_vector\.csv"):
        rejudge(rejudge_cfg(store, bare.info.run_id))
    failed = client_for(store).create_run(bare.info.experiment_id)
    client_for(store).set_terminated(failed.info.run_id, "FAILED")
    with pytest.raises(ValueError, match=r"did not finish \(status FAILED\); only a FINISHED run"):
        rejudge(rejudge_cfg(store, failed.info.run_id))


def test_cli_refuses_a_missing_run_in_one_line(imported):
    store, _ = imported
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ohlora_eval.rejudge",
            "run_id=nosuchrun",
            f"tracking.root={store}",
            f"hydra.run.dir={store}/hydra/cli-error",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "ohlora_eval: error" in line]
    assert errors == [
        f"ohlora_eval: error: run_id=nosuchrun: no such run in sqlite:///{store}/mlflow.db"
    ]
    assert "Traceback" not in proc.stderr
