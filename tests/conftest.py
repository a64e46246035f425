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


# -- make test-fast: the tests that need no screening, direction fit, subprocess or server ----


def pytest_addoption(parser):
    parser.addoption(
        "--fast",
        action="store_true",
        help="the daily tier (make test-fast): a test that starts a screening, a direction fit,"
        " a subprocess or a server is skipped when it tries",
    )


# Modules whose tests run real networks for seconds each (parity with the original, dlib, the
# speed switches): they start no screening, but they are not daily work either.
HEAVY_MODULES = (
    "tests/models/test_original_measurement.py",
    "tests/models/test_ohlora_parity.py",
    "tests/models/test_identity_model.py",
    "tests/models/test_real_faces.py",
    "tests/models/test_synthetic.py",
    "tests/review/test_review_metrics.py",
    "tests/pipeline/test_fidelity.py",
    "tests/pipeline/test_measure_speed.py",
    "tests/pipeline/test_caller_state.py",
    "tests/apps/test_real_faces_determinism.py",
    "tests/apps/test_run_cost.py",
)


def pytest_collection_modifyitems(config, items):
    """``--fast``: the heavy modules are left out (deselected, and counted as such)."""
    if not config.getoption("--fast"):
        return
    heavy = [i for i in items if i.nodeid.split("::")[0] in HEAVY_MODULES]
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = [i for i in items if i.nodeid.split("::")[0] not in HEAVY_MODULES]


def _needs_the_whole_suite(*_args, **_kwargs):
    import pytest

    pytest.skip("starts a screening, a fit, a subprocess or a server: make test runs it")


@pytest.fixture(scope="session", autouse=True)
def _fast_tier(request):
    """``--fast``: the heavy entry points skip the test that calls them. Their code objects are
    swapped (not the names), so every import of them is caught, and put back at the end."""
    if not request.config.getoption("--fast"):
        yield
        return
    import subprocess

    from ohlora_eval.apps import screen
    from ohlora_eval.directions import stage

    heavy = [screen._evaluate_in_run, stage.run_stage, subprocess.Popen.__init__]
    saved = [f.__code__ for f in heavy]
    for f in heavy:
        f.__code__ = _needs_the_whole_suite.__code__
    os.environ["OHLORA_TEST_TIER"] = "fast"  # helpers.browser: no browser either
    try:
        yield
    finally:
        os.environ.pop("OHLORA_TEST_TIER", None)
        for f, code in zip(heavy, saved):
            f.__code__ = code
