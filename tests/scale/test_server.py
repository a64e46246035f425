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
    stored = list((team_server.folder / "artifacts").rglob("per_vector.csv"))
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


# --- who may use the database (issue 25, item 1) and whose server answers (issue 24, item 1) --


def test_the_database_wants_a_password_and_the_mlflow_role_is_no_superuser(team_server):
    import psycopg2

    for user, db in (("ohlora", "mlflow"), ("ohlora_admin", "postgres")):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host="127.0.0.1", port=team_server.pg_port, user=user, dbname=db)
    (row,) = team_server.sql(
        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
    )
    assert row == (False, False, False)
    with pytest.raises(psycopg2.Error, match="superuser|pg_execute_server_program"):
        team_server.sql("COPY (SELECT 1) TO PROGRAM 'id'")  # the shell the tester got
    for path in (team_server.pgpass, team_server.admin_password_file):
        assert path.stat().st_mode & 0o777 == 0o600
    assert team_server.secrets.stat().st_mode & 0o777 == 0o700
    pid = int(team_server.pid_file.read_text())
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    password = team_server.pgpass.read_text().strip().rsplit(":", 1)[1]
    assert password not in cmdline and "--backend-store-uri" in cmdline


def test_a_taken_port_is_one_line_naming_it(team_server, tmp_path):
    """The tester's `make server PORT=5000` while `make ui` held it: refused, exit 2."""
    done = subprocess.run(
        [sys.executable, "-m", "ohlora_eval.tracking.server", "start", "--dir", str(tmp_path),
         "--port", str(team_server.port), "--pg-port", str(team_server.pg_port + 1000)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"port {team_server.port}" in lines[0], lines
    assert "mlflow" in lines[0] or "uvicorn" in lines[0]  # what holds it
    assert not (tmp_path / "pg").exists()  # nothing started
