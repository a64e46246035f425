"""Fixtures for the scale tests: small screening configs, a Ray for this process, and a team
server (PostgreSQL + ``mlflow server``) on free ports of 127.0.0.1.

Every test here is marked ``scale`` (run by default: small sizes, about two minutes in all
on a 2-core CPU); ``-m 'not scale'`` leaves them out. Ray tests skip when Ray is not
installed, server tests when the PostgreSQL binaries or psycopg2 are missing, each with the
reason (``pip install -e '.[scale]'``, ``apt-get install postgresql``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from hydra import compose, initialize_config_dir

import ohlora_eval.apps  # noqa: F401 - registers the config schemas

from .scale_common import CONF, MLFLOW, PG_BIN, PG_USER, SMALL


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.scale)


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "scale: Ray workers and the PostgreSQL team server (tests/scale, small sizes)"
    )


@pytest.fixture(autouse=True)
def _no_outside_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def scale_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scale") / "mlruns"


@pytest.fixture(scope="module")
def make_scale_cfg(scale_store):
    def _make(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=[*SMALL, f"tracking.root={scale_store}", *overrides])

    return _make


# -- the team server ----------------------------------------------------------------------


def _pg_user() -> tuple[str | None, int | None]:
    """PostgreSQL refuses to run as root: as root, an ordinary user (made if missing)."""
    if os.geteuid() != 0:
        return None, None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "-r", "-m", PG_USER], check=True, capture_output=True)
    return PG_USER, pwd.getpwnam(PG_USER).pw_uid


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    return cmd if user is None else ["runuser", "-u", user, "--", *cmd]


def _wait_http(url: str, proc: subprocess.Popen, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {seconds:.0f} s: {log.read_text()[-3000:]}")


class TeamServer:
    """PostgreSQL in ``<tmp>/pg`` and ``mlflow server`` backed by it, both on 127.0.0.1."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.pg_port, self.port = free_port(), free_port()
        self.user, self.uid = _pg_user()
        self.db_url = f"postgresql+psycopg2://ohlora@127.0.0.1:{self.pg_port}/mlflow"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.mlflow: subprocess.Popen | None = None

    def start(self) -> None:
        data = self.base / "pg"
        data.mkdir(parents=True)
        os.chmod(self.base, 0o755)
        if self.uid is not None:
            os.chown(data, self.uid, -1)
        run = (
            lambda *c: subprocess.run(  # noqa: E731
                _as_user([str(PG_BIN / c[0]), *c[1:]], self.user),
                check=True,
                capture_output=True,
                text=True,
                cwd="/",
            )
        )
        run("initdb", "-D", str(data), "-U", "ohlora", "--auth=trust", "-E", "UTF8")
        run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(data / "server.log"),
            "-o",
            f"-h 127.0.0.1 -p {self.pg_port} -k {data}",
            "-w",
            "start",
        )
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "ohlora", "-d", "postgres",
             "-c", "CREATE DATABASE mlflow"],
            check=True, capture_output=True,
        )  # fmt: skip
        log = self.base / "mlflow.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        self.mlflow = subprocess.Popen(
            [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "2", "--backend-store-uri", self.db_url,
             "--artifacts-destination", str(self.base / "artifacts")],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        _wait_http(f"{self.uri}/health", self.mlflow, 120, log)

    def stop(self) -> None:
        if self.mlflow is not None and self.mlflow.poll() is None:
            os.killpg(self.mlflow.pid, signal.SIGTERM)
            try:
                self.mlflow.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.mlflow.pid, signal.SIGKILL)
        data = self.base / "pg"
        if (data / "postmaster.pid").exists():
            stop = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]
            subprocess.run(_as_user(stop, self.user), capture_output=True, cwd="/")

    def sql(self, query: str) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(self.db_url.replace("+psycopg2", "")) as conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall()


@pytest.fixture(scope="module")
def team_server() -> Iterator[TeamServer]:
    if not (PG_BIN / "initdb").exists() or shutil.which("psql") is None:
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (apt-get install postgresql)")
    pytest.importorskip("psycopg2", reason="psycopg2 missing: pip install -e '.[scale]'")
    # Not under pytest's own tmp folder: it is private to root, and PostgreSQL runs as another user.
    base = Path(tempfile.mkdtemp(prefix="ohlora-team-"))
    server = TeamServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
