"""Every command against a team server: PostgreSQL as MLflow's backend store and
``mlflow server`` with proxied artifacts, both started by the ``team_server`` fixture on free
ports of 127.0.0.1 (skipped with the reason when the PostgreSQL binaries are missing).

A screening, a 4-point parallel sweep (``hydra/launcher=local_parallel``: 0 runs lost,
counted in PostgreSQL and through the MLflow API), then ``select`` and ``verify`` through
the model registry, each as the user types it (``MLFLOW_TRACKING_URI=http://...``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from .scale_common import ROOT, SMALL

CUTOFFS = ["0.86", "0.88", "0.9", "0.92"]


def _cli(server, module: str, *args: str, root) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=server.uri, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", module, *args, f"tracking.root={root}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"{module} {args}: {done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def screened(team_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("team_root")
    _cli(team_server, "ohlora_eval", *SMALL, "cutoff.mouth=0.8", "cutoff.pose=0.7", root=root)
    client = MlflowClient(team_server.uri, registry_uri=team_server.uri)
    exp = client.get_experiment_by_name("ohlora-eval")
    (run,) = client.search_runs([exp.experiment_id])
    return root, run


def test_a_screening_lands_in_postgres_with_proxied_artifacts(team_server, screened):
    root, run = screened
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    (status,) = team_server.sql(f"SELECT status FROM runs WHERE run_uuid = '{run.info.run_id}'")
    assert status == ("FINISHED",)
    (n_metrics,) = team_server.sql(
        f"SELECT count(*) FROM latest_metrics WHERE run_uuid = '{run.info.run_id}'"
    )[0]
    assert n_metrics > 10
    csv = MlflowClient(team_server.uri, registry_uri=team_server.uri).download_artifacts(
        run.info.run_id, "per_vector.csv"
    )
    assert len(pd.read_csv(csv)) == 48
    stored = list((team_server.base / "artifacts").rglob("per_vector.csv"))
    assert len(stored) == 1  # through the server into its --artifacts-destination
    assert not (root / "mlflow.db").exists()  # nothing went to a local store


def test_a_parallel_sweep_loses_no_run(team_server, screened):
    root, _ = screened
    _cli(
        team_server, "ohlora_eval", "-m", "hydra/launcher=local_parallel", *SMALL,
        "cutoff.mouth=0.8", "cutoff.pose=0.7", "cutoff.eyes=" + ",".join(CUTOFFS), root=root,
    )  # fmt: skip
    client = MlflowClient(team_server.uri, registry_uri=team_server.uri)
    exp = client.get_experiment_by_name("ohlora-eval")
    parents = client.search_runs([exp.experiment_id], "tags.`ohlora.kind` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    jobs = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert sorted(r.data.params["cutoff.eyes"] for r in jobs) == sorted(CUTOFFS)
    assert {r.info.status for r in jobs} == {"FINISHED"}
    rows = team_server.sql(
        "SELECT r.status, count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid"
        f" WHERE t.key = 'mlflow.parentRunId' AND t.value = '{parent}' GROUP BY r.status"
    )
    assert rows == [("FINISHED", 4)]
    art = client.list_artifacts(parent)
    assert "sweep_comparison.csv" in {a.path for a in art}


def test_select_and_verify_through_the_registry(team_server, screened):
    root, run = screened
    client = MlflowClient(team_server.uri, registry_uri=team_server.uri)
    table = pd.read_csv(client.download_artifacts(run.info.run_id, "per_vector.csv"))
    passed = table.loc[table["passed"] == "O", "case"].tolist()[:2]
    assert passed, "no vector passed the lowered cutoffs: nothing to select"
    cases = "[" + ",".join(str(int(c)) for c in passed) + "]"
    _cli(
        team_server, "ohlora_eval.select", f"run_id={run.info.run_id}", f"cases={cases}", root=root
    )
    version = client.get_model_version_by_alias("ohlora-final-latents", "final")
    assert version.run_id
    (row,) = team_server.sql(
        "SELECT name, version FROM registered_model_aliases WHERE alias = 'final'"
    )
    assert row == ("ohlora-final-latents", int(version.version))
    done = _cli(
        team_server, "ohlora_eval.verify", "model=ohlora-final-latents@final",
        "tracking.progress=false", root=root,
    )  # fmt: skip
    assert f"{len(passed)} of {len(passed)} still pass" in done.stdout + done.stderr
    assert "max |recorded r - re-measured r| = 0" in done.stdout + done.stderr
