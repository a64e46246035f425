"""Fixtures for the scale tests: small screening configs, a Ray for this process, and a team
server (PostgreSQL + ``mlflow server``) on free ports of 127.0.0.1.

Every test here is marked ``scale`` (run by default: small sizes, about two minutes in all
on a 2-core CPU); ``-m 'not scale'`` leaves them out. Ray tests skip when Ray is not
installed, server tests when the PostgreSQL binaries or psycopg2 are missing, each with the
reason (``pip install -e '.[scale]'``, ``apt-get install postgresql``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port
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
# The one implementation behind `make server` (ohlora_eval/tracking/server.py), on free ports.


@pytest.fixture(scope="module")
def team_server() -> Iterator:
    if not (PG_BIN / "initdb").exists() or shutil.which("psql") is None:
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (apt-get install postgresql)")
    pytest.importorskip("psycopg2", reason="psycopg2 missing: pip install -e '.[scale]'")
    from ohlora_eval.tracking.server import TeamServer

    # Not under pytest's own tmp folder: it is private to root, and PostgreSQL runs as another user.
    base = Path(tempfile.mkdtemp(prefix="ohlora-team-"))
    server = TeamServer(base, free_port(), free_port(), PG_BIN, PG_USER, MLFLOW)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    try:
        server.start()
        # every request needs a login: this process's clients log in as the admin
        user, password = server.credentials
        os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
