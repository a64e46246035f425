"""The commands' entry points, one place: the console scripts (``[project.scripts]``) and
``python -m ohlora_eval[.<command>]`` call these.

Each is its app's ``main`` (``apps/<app>.py``) with the app imported only when the job
runs: Hydra composes the config first, so ``--help``, ``--cfg``, TAB completion and a
command line Hydra refuses load neither torch nor MLflow nor the models (imports of
``apps/cli.py`` and ``apps/config.py`` only; tests/apps/test_commands.py checks it).
"""

from __future__ import annotations

import importlib
from typing import Any

from ohlora_eval.apps.cli import hydra_app


def _run(app: str, cfg: Any) -> Any:
    """The task of ``apps/<app>.py`` (its ``main`` undecorated) on the composed config."""
    return importlib.import_module(f"ohlora_eval.apps.{app}").main.__wrapped__(cfg)


@hydra_app("config")
def screen(cfg: Any) -> Any:
    return _run("screen", cfg)


@hydra_app("find_directions")
def find_directions(cfg: Any) -> Any:
    return _run("find_directions", cfg)


@hydra_app("select")
def select(cfg: Any) -> Any:
    return _run("select", cfg)


@hydra_app("verify")
def verify(cfg: Any) -> Any:
    return _run("verify", cfg)


@hydra_app("alias")
def alias(cfg: Any) -> Any:
    return _run("alias", cfg)


@hydra_app("choose")
def choose(cfg: Any) -> Any:
    return _run("choose", cfg)


@hydra_app("sheets")
def sheets(cfg: Any) -> Any:
    return _run("sheets", cfg)


@hydra_app("import_results")
def import_results(cfg: Any) -> Any:
    return _run("import_results", cfg)


@hydra_app("rejudge")
def rejudge(cfg: Any) -> Any:
    return _run("rejudge", cfg)


@hydra_app("retest")
def retest(cfg: Any) -> Any:
    return _run("retest", cfg)


@hydra_app("frontier")
def frontier(cfg: Any) -> Any:
    return _run("frontier", cfg)


@hydra_app("compare")
def compare(cfg: Any) -> Any:
    return _run("compare", cfg)
