"""Shared fixtures: configs composed the way the app composes them, a private MLflow store.

Plain helpers and constants live in the ``helpers`` package (tests/helpers/), imported like
any module; only fixtures are here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import composer, real_faces_or_skip

import ohlora_eval.apps  # noqa: F401 - registers the config schemas before any compose

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture(autouse=True)
def _no_outside_store(monkeypatch):
    """Tests never write to the user's store or an inherited tracking server."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """One MLflow store for the whole test session (creating a SQLite store costs seconds);
    tests find their runs by id. Use ``fresh_store`` where a test needs an empty one."""
    return tmp_path_factory.mktemp("store") / "mlruns"


@pytest.fixture
def fresh_store(tmp_path) -> Path:
    return tmp_path / "mlruns"


@pytest.fixture
def make_cfg(store):
    return composer(store)


@pytest.fixture(scope="module")
def make_cfg_module(store):
    return composer(store)


@pytest.fixture
def real_faces() -> None:
    real_faces_or_skip()
