"""A cluster that cannot be joined is one line naming the key and what to try, and
find_directions says it before it opens a run."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from ohlora_eval.errors import UserError
from ohlora_eval.tracking import store as tracking

from .scale_common import CONF

ray = pytest.importorskip("ray", reason="Ray missing: pip install -e '.[scale]'")


def test_no_cluster_to_join(tmp_path, monkeypatch):
    from ohlora_eval.apps.find_directions import find_directions

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized() or Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a Ray cluster runs on this machine: execution.address=auto would join it")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "find_directions",
            overrides=[
                "directions.n=600",
                f"tracking.root={tmp_path}",
                "execution=ray",
                "execution.address=auto",
            ],
        )
    with pytest.raises(UserError, match=r"execution\.address=auto: cannot join Ray .*ray start"):
        find_directions(cfg)
    client = MlflowClient(tracking.resolve_uri(None, tmp_path))
    exp = client.get_experiment_by_name(tracking.DIRECTIONS_EXPERIMENT)
    assert exp is None or not client.search_runs([exp.experiment_id])  # no run was opened


def _compose_fd(tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "find_directions",
            overrides=[
                "directions.n=600",
                f"tracking.root={tmp_path}",
                "execution=ray",
                *overrides,
            ],
        )


def test_more_gpus_than_the_cluster_has_is_refused_not_waited_for(tmp_path, monkeypatch):
    """The tester's `execution.gpus_per_worker=1` on a machine without GPUs hung forever
    ("No available node types"); now one line, before any worker is asked for."""
    import torch

    from ohlora_eval.apps.find_directions import find_directions

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = _compose_fd(tmp_path, "execution.gpus_per_worker=1")
    with pytest.raises(UserError, match=r"gpus_per_worker=1 x execution.workers=2 needs 2 GPU"):
        find_directions(cfg)
    assert not ray.is_initialized()  # the Ray it started is stopped again


def test_ray_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    """RAY_TMPDIR pointing at a file gave a NotADirectoryError traceback."""
    from ohlora_eval.apps.find_directions import find_directions

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    monkeypatch.setenv("RAY_TMPDIR", str(not_a_dir))
    with pytest.raises(UserError, match=r"cannot start Ray .*RAY_TMPDIR"):
        find_directions(_compose_fd(tmp_path / "store"))
