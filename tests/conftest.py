"""Shared fixtures: configs composed the way the app composes them, a private MLflow store."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import ohlora_eval.apps  # noqa: F401 - registers the config schemas before any compose

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
REFERENCE = ROOT.parent / "shared" / "reference" / "ohlora_v3_1"

# Small but real: enough vectors and fitting samples for every path to run.
SMALL = [
    "sampling.n_vectors=24",
    "sampling.vectors_per_batch=8",
    "directions.n=1500",
    "directions.gradient.epochs=3",
    "tracking.grids.passed=2",
    "tracking.grids.best=1",
    "tracking.progress=false",
    "device=cpu",
]


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


def composer(store: Path):
    """compose("config", overrides) with the given store and small sizes."""

    def _make(*overrides: str, small: bool = True):
        base = SMALL if small else []
        if any(o.startswith("directions=") for o in overrides):  # another source: no fit keys
            base = [o for o in base if not o.startswith("directions.")]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[*base, f"tracking.root={store}", *overrides])

    return _make


@pytest.fixture
def make_cfg(store):
    return composer(store)


@pytest.fixture(scope="module")
def make_cfg_module(store):
    return composer(store)


def compose_app(name: str, store: Path, *overrides: str):
    """Any command's config (``conf/<name>.yaml``) with the given store, as its app composes it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=[f"tracking.root={store}", *overrides])


def conf_grid() -> dict[str, list[float]]:
    """The default edit grid, from its one definition (conf/sampling/default.yaml)."""
    grid = OmegaConf.load(CONF_DIR / "sampling" / "default.yaml").grid
    return {p: list(v) for p, v in grid.items()}


def conf_cutoffs() -> dict[str, float]:
    """Oh-LoRA v3.1's cutoffs, from their one definition (conf/cutoff/ohlora_v3_1.yaml)."""
    return dict(OmegaConf.load(CONF_DIR / "cutoff" / "ohlora_v3_1.yaml"))


def clean_env() -> dict[str, str]:
    """Environment for a subprocess: its own store from its arguments, no inherited URI."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    return env


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (for servers a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference_file(name: str) -> Path:
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference data {path} not present (../shared beside the checkout)")
    return path


os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


# Debian's Chromium for the browser tests (tests/review, tests/ui); never a browser
# downloaded by playwright.
CHROMIUM = Path(os.environ.get("OHLORA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def playwright_or_skip(what: str):
    """Playwright's ``sync_playwright``, or a skip saying what ``what`` needs."""
    how = (
        "install them with `apt-get install -y chromium` (Debian) and"
        " `.venv/bin/pip install playwright` (or `pip install -e '.[browser]'`);"
        " never `playwright install`, which downloads its own browser"
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"{what} needs the playwright package: {how}")
    if not CHROMIUM.is_file():
        pytest.skip(f"{what} needs Chromium at {CHROMIUM}: {how}")
    return sync_playwright


FACES_PACKAGES = ("gan-face-generate", "dlib-bin", "face-recognition-models")


def real_faces_or_skip() -> None:
    """The real-faces tests need the three PyPI packages (make setup installs them). CI sets
    OHLORA_REQUIRE_FACES=1, where a missing one fails the test instead of skipping it."""
    from importlib import metadata

    missing = []
    for name in FACES_PACKAGES:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    if not missing:
        return
    why = f"real-faces packages not installed: {', '.join(missing)} (make setup installs them)"
    if os.environ.get("OHLORA_REQUIRE_FACES"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture
def real_faces() -> None:
    real_faces_or_skip()
