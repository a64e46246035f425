"""The package leaves its caller's state alone: the global torch RNG after building the
models, fitting a regressor and measuring with dropout on (the numbers drawn as before),
and the environment after importing every module."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT, conf_grid

from ohlora_eval.apps import execution
from ohlora_eval.directions.gradient import ScoreRegressor, fit_regressor
from ohlora_eval.directions.spec import GradientSpec
from ohlora_eval.models.generators.stylegan_v9 import StyleGANV9Generator
from ohlora_eval.models.networks import MergedPropertyCNN, StyleGANV9Network
from ohlora_eval.models.scorers.ohlora_cnn import OhLoRACNNScorer
from ohlora_eval.pipeline import device as dev
from ohlora_eval.pipeline.directions import Directions
from ohlora_eval.pipeline.edit import EditSetup, grid_points
from ohlora_eval.pipeline.fidelity import seeded
from ohlora_eval.pipeline.measure import measure
from ohlora_eval.pipeline.measure_settings import MeasureSettings
from ohlora_eval.tracking import store

SYNTHETIC = {
    "generator": {
        "_target_": "ohlora_eval.models.generators.synthetic.SyntheticFaceGenerator",
        "resolution": 64,
        "device": "cpu",
    },
    "scorer": {
        "_target_": "ohlora_eval.models.scorers.synthetic.SyntheticScorer",
        "resolution": 64,
    },
    "layer": "w",
    "noise_seed": None,
}


@pytest.fixture
def caller_rng():
    """A caller's global RNG somewhere in its stream (the test's own restored after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20_240_601)
        torch.rand(7)
        yield torch.random.get_rng_state()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _as_manual_seed(seed: int, build):
    """What ``build()`` gave after ``torch.manual_seed(seed)`` (the code before the fork)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def test_seeded_draws_what_manual_seed_draws_then_restores(caller_rng):
    def draws():
        return torch.rand(5), torch.nn.functional.dropout(torch.ones(64), 0.5)

    with seeded(11):
        inside = draws()
    assert torch.equal(caller_rng, torch.random.get_rng_state())
    expected = _as_manual_seed(11, draws)
    assert all(torch.equal(a, b) for a, b in zip(inside, expected, strict=True))


def test_building_the_models_keeps_the_callers_rng_and_their_random_init(caller_rng):
    scorer = OhLoRACNNScorer(checkpoint=None, device="cpu", allow_random_init=True)
    generator = StyleGANV9Generator(checkpoint=None, device="cpu", allow_random_init=True)
    execution.models(SYNTHETIC)  # as a screening and its Ray workers build them (seed 0)
    assert torch.equal(caller_rng, torch.random.get_rng_state())
    # The random-init weights are those drawn after torch.manual_seed(0), as before.
    assert _same_weights(scorer.network, _as_manual_seed(0, MergedPropertyCNN))
    assert _same_weights(generator.network, _as_manual_seed(0, StyleGANV9Network))


def test_a_gradient_fit_keeps_the_callers_rng_and_its_initial_weights(caller_rng):
    rng = np.random.default_rng(0)
    mid = rng.normal(size=(64, 8)).astype(np.float32)
    scores = mid[:, 0] + 0.1 * rng.normal(size=64).astype(np.float32)
    start, _ = fit_regressor(mid, scores, GradientSpec(hidden=[16], epochs=0), 0.25, seed=5)
    fitted, mse = fit_regressor(mid, scores, GradientSpec(hidden=[16], epochs=2), 0.25, seed=5)
    assert torch.equal(caller_rng, torch.random.get_rng_state())
    assert _same_weights(start.net, _as_manual_seed(5, lambda: ScoreRegressor(8, [16])).net)
    again, mse_again = fit_regressor(mid, scores, GradientSpec(hidden=[16], epochs=2), 0.25, seed=5)
    assert _same_weights(fitted, again) and mse == mse_again


def test_measuring_with_dropout_on_keeps_the_callers_rng(caller_rng):
    generator, scorer, _ = execution.models(SYNTHETIC)
    dim = int(generator.to_mid(generator.sample_latents(1, 0), "w").shape[1])
    rng = np.random.default_rng(3)
    unit = [v / np.linalg.norm(v) for v in rng.normal(size=(3, dim))]
    vectors = {p: {"all": v} for p, v in zip(("eyes", "mouth", "pose"), unit, strict=True)}
    directions = Directions(layer="w", dim=dim, vectors=vectors)
    settings = MeasureSettings(scorer_mode="train").checked()
    setup = EditSetup(generator, scorer, directions, grid_points(conf_grid()), "w", settings)
    z = generator.sample_latents(4, 5)
    first = measure(setup, z, 2).scores
    assert torch.equal(caller_rng, torch.random.get_rng_state())
    torch.rand(3)  # whatever the caller draws in between does not change the measurement
    assert np.array_equal(first, measure(setup, z, 2).scores)


def test_the_cuda_environment_is_set_only_for_a_cuda_device(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    dev.cuda_environment(torch.device("cpu"))
    execution.models(SYNTHETIC)  # models on the CPU
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    dev.cuda_environment(torch.device("cuda", 0))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == dev.CUBLAS_WORKSPACE
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own value stays
    dev.cuda_environment(torch.device("cuda"))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_mlflow_is_quiet_only_while_the_store_is_used(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    with store.usable(store.default_uri(tmp_path)):
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")  # a user's choice
    with store.quiet():
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"


# Imports the third-party modules the package imports (what they set is theirs), then
# every module of the package, and prints what the package's imports changed.
_IMPORT_ALL = """
import ast, importlib, json, os, pathlib, pkgutil, sys
src = pathlib.Path("ohlora_eval")
names = set()
for path in src.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
for name in sorted(names - {"ohlora_eval"}):
    try:
        importlib.import_module(name)
    except Exception:
        pass
before = dict(os.environ)
import ohlora_eval
done, missing = [], []
for info in pkgutil.walk_packages(ohlora_eval.__path__, "ohlora_eval."):
    if info.name.endswith(".__main__"):  # runs its command when imported
        continue
    try:
        importlib.import_module(info.name)
        done.append(info.name)
    except ImportError as exc:  # an optional extra that is not installed
        missing.append(f"{info.name}: {exc}")
after = dict(os.environ)
keys = set(before) | set(after)
changed = {k: [before.get(k), after.get(k)] for k in keys if before.get(k) != after.get(k)}
print(json.dumps({"changed": changed, "done": done, "missing": missing}))
"""


def test_importing_the_package_leaves_the_environment_alone():
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["changed"] == {}, out["changed"]
    assert {"ohlora_eval.pipeline.device", "ohlora_eval.tracking.store"} <= set(out["done"])
    assert "ohlora_eval.apps.cli" in out["done"], out["missing"]
