"""Every command against a team server: PostgreSQL as MLflow's backend store and
``mlflow server`` with proxied artifacts, both started by the ``team_server`` fixture on free
ports of 127.0.0.1 (skipped with the reason when the PostgreSQL binaries are missing).

A screening, a 4-point parallel sweep (``hydra/launcher=local_parallel``: 0 runs lost,
counted in PostgreSQL and through the MLflow API), then ``select`` and ``verify`` through
the model registry, each as the user types it (``MLFLOW_TRACKING_URI=http://...``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from helpers import free_port
from mlflow.tracking import MlflowClient

from .scale_common import ROOT, SMALL

CUTOFFS = ["0.86", "0.88", "0.9", "0.92"]


def _cli(server, module: str, *args: str, root) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    user, password = server.credentials
    env.update(
        MLFLOW_TRACKING_URI=server.uri,
        MLFLOW_TRACKING_USERNAME=user,
        MLFLOW_TRACKING_PASSWORD=password,
        OMP_NUM_THREADS="1",
    )
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
    for path in (team_server.pgpass, team_server.password_file("admin"), team_server.auth_config):
        assert path.stat().st_mode & 0o777 == 0o600
    assert team_server.secrets.stat().st_mode & 0o777 == 0o700
    # The superuser's password is kept nowhere, and it no longer logs in with any.
    assert not any("superuser" in p.name or "admin.password" == p.name
                   for p in team_server.secrets.iterdir())  # fmt: skip
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host="127.0.0.1", port=team_server.pg_port, user="ohlora_admin", password="x",
            dbname="postgres",
        )  # fmt: skip
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


# --- nobody else can take it over (issue 32, items 1 to 3) --------------------------------------


def _as_nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *argv], capture_output=True, text=True, timeout=60
    )


def _curl(url: str, *args: str, user: str | None = None) -> tuple[int, str]:
    """curl as the local user nobody: (HTTP status, body)."""
    auth = ["-u", user] if user else []
    done = _as_nobody("curl", "-s", "-w", "\n%{http_code}", *auth, *args, url)
    body, _, code = done.stdout.rpartition("\n")
    return int(code or 0), body


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("curl") is None or shutil.which("runuser") is None,
    reason="runs the attack as the local user nobody: needs root, runuser and curl",
)


@needs_root
def test_the_takeover_as_nobody_fails_at_every_step(team_server):
    """The hostile tester's attack (a local user, curl to 127.0.0.1): an experiment whose
    artifact location is the server's secrets, a run in it, then get-artifact of the
    superuser's and the MLflow role's passwords, upload-artifact into the secrets folder."""
    base, secrets = team_server.uri, team_server.secrets
    api = f"{base}/api/2.0/mlflow"
    create = ["-X", "POST", "-H", "Content-Type: application/json", "-d"]
    evil = json.dumps({"name": "evil", "artifact_location": f"file://{secrets}"})
    # 1. No login: every API call is refused.
    assert _curl(f"{api}/experiments/create", *create, evil)[0] == 401
    assert _curl(f"{api}/experiments/search?max_results=5")[0] == 401
    assert _curl(f"{base}/get-artifact?path=mlflow.pgpass&run_uuid=x")[0] == 401
    assert _curl(f"{base}/ajax-api/2.0/mlflow/upload-artifact?run_uuid=x&path=a")[0] == 401
    # 2. A teammate's account: an artifact location outside the store is refused.
    done = subprocess.run(
        [sys.executable, "-m", "ohlora_eval.tracking.server", "add-user", "--name", "mallory",
         "--dir", str(team_server.folder), "--port", str(team_server.port),
         "--pg-port", str(team_server.pg_port)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    login = f"mallory:{team_server.password_file('mallory').read_text().strip()}"
    for where in (f"file://{secrets}", str(secrets), "file:///tmp/x"):
        body = json.dumps({"name": "evil", "artifact_location": where})
        code, said = _curl(f"{api}/experiments/create", *create, body, user=login)
        assert code == 403 and "refused" in said, said
    client = MlflowClient(team_server.uri)
    assert client.get_experiment_by_name("evil") is None
    # 3. An ordinary run of the proxied store: no path reaches outside it.
    exp_code, said = _curl(f"{api}/experiments/create", *create, '{"name": "plain"}', user=login)
    assert exp_code == 200, said
    run = client.create_run(client.get_experiment_by_name("plain").experiment_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    for path in ("../../secrets/mlflow.pgpass", "../../../secrets/mlflow.pgpass",
                 "%2e%2e/%2e%2e/secrets/mlflow.pgpass", str(team_server.pgpass)):  # fmt: skip
        code, said = _curl(
            f"{base}/get-artifact?path={path}&run_uuid={run.info.run_id}", user=login
        )
        assert code != 200 and ROLE_PASSWORD(team_server) not in said, (path, code)
    # 4. The files themselves: no superuser password anywhere, the others unreadable.
    assert _as_nobody("cat", str(team_server.pgpass)).returncode != 0
    assert _as_nobody("ls", str(secrets)).returncode != 0
    found = subprocess.run(["grep", "-rl", "ohlora_admin", str(secrets)], capture_output=True)
    assert found.stdout == b""  # nothing stores the superuser (or its password)


def ROLE_PASSWORD(server) -> str:  # noqa: N802 - reads as the secret it is
    return server.pgpass.read_text().strip().rsplit(":", 1)[1]


def test_stop_stops_only_the_server_it_can_prove_is_its_own(team_server, tmp_path):
    """The tester's `make server-stop` with mlflow.pid pointing at another process: it
    killed that process and left the server running. Now the other process lives."""
    from ohlora_eval.tracking.server import TeamServer

    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        fake = TeamServer(tmp_path, team_server.port + 7, team_server.pg_port + 7)
        fake.pid_file.write_text(f"{other.pid}\n")
        said = fake.stop(wait_s=1)
        assert other.poll() is None, "stop killed a process that is not its server"
        assert "named no server" in said and not fake.pid_file.exists()
        # The real server's folder with a wrong pid file: still found by its port, by its
        # command line (not stopped here: the other tests use it).
        real = TeamServer(team_server.folder, team_server.port, team_server.pg_port)
        pid = int(team_server.pid_file.read_text())
        assert real._mlflow_pid() == pid
        team_server.pid_file.write_text(f"{other.pid}\n")
        try:
            assert real._mlflow_pid() is None and real._server_on_port() == pid
        finally:
            team_server.pid_file.write_text(f"{pid}\n")
    finally:
        other.kill()
        other.wait()


@needs_root
def test_a_server_folder_another_user_controls_is_refused(tmp_path):
    """The tester's SERVER_DIR owned by nobody with secrets/... linked to a root-owned file:
    root then overwrote that file. Now nothing is written and the target is untouched."""
    folder = tmp_path / "theirs"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    os.chmod(target, 0o644)
    (folder / "secrets").mkdir()
    (folder / "secrets" / "mlflow.pgpass").symlink_to(target)
    shutil.chown(folder, "nobody")
    shutil.chown(folder / "secrets", "nobody")
    done = subprocess.run(
        [sys.executable, "-m", "ohlora_eval.tracking.server", "start", "--dir", str(folder),
         "--port", str(free_port()), "--pg-port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "belongs to nobody, not to you" in lines[0], lines
    assert target.read_text() == "keep me\n" and target.stat().st_mode & 0o777 == 0o644
    assert not (folder / "pg").exists()
