"""The measuring switches of pipeline/fidelity.py: each does what the original did, the
default measures exactly as before, and noisy measurements are still reproducible."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from helpers import conf_grid

from ohlora_eval.errors import ConfigError
from ohlora_eval.models.generators.synthetic import SyntheticFaceGenerator
from ohlora_eval.models.scorers.synthetic import SyntheticScorer
from ohlora_eval.pipeline.cache import measurement_key
from ohlora_eval.pipeline.directions import Directions
from ohlora_eval.pipeline.edit import EditSetup, edited_mids, grid_points
from ohlora_eval.pipeline.fidelity import from_uint8, round_trip, rounded, to_uint8
from ohlora_eval.pipeline.measure import measure
from ohlora_eval.pipeline.measure_settings import MeasureSettings

GRID = grid_points(conf_grid())
LAYER = "w"
PUBLISHED = dict(scorer_mode="train", round_trip="jpeg", edit_dtype="float64", score_decimals=4)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    gen = SyntheticFaceGenerator(resolution=64, device="cpu")
    scorer = SyntheticScorer(resolution=64)
    dim = int(gen.to_mid(gen.sample_latents(1, 0), LAYER).shape[1])
    rng = np.random.default_rng(3)
    vec = {p: rng.normal(size=dim) for p in ("eyes", "mouth", "pose")}
    vec = {p: {"all": v / np.linalg.norm(v)} for p, v in vec.items()}  # float64, as read
    directions = Directions(layer=LAYER, dim=dim, vectors=vec)
    return gen, scorer, directions


def _setup(models, **switches) -> EditSetup:
    gen, scorer, directions = models
    return EditSetup(gen, scorer, directions, GRID, LAYER, MeasureSettings(**switches).checked())


def _scores(setup: EditSetup, n: int = 6, chunk: int = 3, cases=None) -> np.ndarray:
    z = setup.generator.sample_latents(12, 5)[:n]
    return measure(setup, z, chunk, cases=cases).scores


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("scorer_mode", "dropout", "measure.scorer_mode='dropout' is not one of eval, train"),
        ("round_trip", "gif", "measure.round_trip='gif' is not one of none, png, jpeg"),
        ("edit_dtype", "float16", "measure.edit_dtype='float16' is not one of"),
        ("jpeg_quality", 0, "measure.jpeg_quality=0 must be an integer in [1, 100]"),
        ("score_decimals", -1, "measure.score_decimals=-1 must be an integer in [0, 12]"),
    ],
)
def test_bad_switches_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        MeasureSettings(**{key: value}).checked()


def test_the_clean_default_leaves_the_measurement_key_alone(models):
    z = models[0].sample_latents(4, 0)
    _, meta = measurement_key(_setup(models), z, 4, {})
    assert "measure" not in meta
    _, rounded_only = measurement_key(_setup(models, score_decimals=4), z, 4, {})
    assert "measure" not in rounded_only  # rounding happens when judging, not measuring
    _, noisy = measurement_key(_setup(models, **PUBLISHED), z, 4, {})
    assert noisy["measure"] == {
        "scorer_mode": "train",
        "dropout_seed": 0,
        "round_trip": "jpeg",
        "jpeg_quality": 95,
        "edit_dtype": "float64",
    }


def test_float64_edits_are_the_float64_sum_cast_once(models):
    gen, _, directions = models
    mid = gen.to_mid(gen.sample_latents(3, 1), LAYER)
    dirs64 = directions.for_vectors(mid, dtype=torch.float64)
    got = edited_mids(mid, dirs64, GRID, torch.float64)
    w = torch.as_tensor(GRID, dtype=torch.float64)
    want = mid.double()[:, None, :] + sum(
        w[None, :, k, None] * dirs64[p][:, None, :] for k, p in enumerate(("eyes", "mouth", "pose"))
    )
    assert torch.equal(got, want.reshape(-1, mid.shape[1]).float())
    f32 = edited_mids(mid, directions.for_vectors(mid), GRID)
    ulp = torch.finfo(torch.float32).eps * f32.abs().clamp_min(1.0)
    assert ((got - f32).abs() <= 2 * ulp).all()  # at most a float32 rounding apart


def test_round_trips(models):
    gen = models[0]
    images = gen.synthesize(gen.to_mid(gen.sample_latents(4, 2), LAYER), LAYER)
    levels = from_uint8(to_uint8(images))
    png = round_trip(images, MeasureSettings(round_trip="png"))
    assert torch.equal(png, levels)  # lossless: only the 8-bit quantisation
    jpeg = round_trip(images, MeasureSettings(round_trip="jpeg"))
    assert jpeg.shape == images.shape and not torch.equal(jpeg, levels)
    assert (jpeg - levels).abs().mean() < 0.05  # quality 95: small, not nothing
    assert torch.equal(jpeg, round_trip(images, MeasureSettings(round_trip="jpeg")))
    worse = round_trip(images, MeasureSettings(round_trip="jpeg", jpeg_quality=20))
    assert (worse - levels).abs().mean() > (jpeg - levels).abs().mean()
    assert round_trip(images, MeasureSettings()) is images


def test_train_mode_is_noisy_but_reproducible_per_vector(models):
    clean = _scores(_setup(models))
    noisy = _scores(_setup(models, scorer_mode="train"))
    assert not np.array_equal(clean, noisy)
    again = _scores(_setup(models, scorer_mode="train"), chunk=4)  # other chunking
    assert np.array_equal(noisy, again)
    other_seed = _scores(_setup(models, scorer_mode="train", dropout_seed=1))
    assert not np.array_equal(noisy, other_seed)
    # A vector's draws follow its case number: measured alone it gets the same scores.
    alone = _scores(_setup(models, scorer_mode="train"), n=6, cases=[0, 1, 2, 3, 4, 5])
    assert np.array_equal(alone, noisy)
    assert models[1]._train is False  # the scorer is back in eval mode afterwards
    assert np.array_equal(_scores(_setup(models)), clean)


def test_scores_are_rounded_only_for_judging():
    s = np.array([[[0.123449, -0.98765, 1.00005]]], np.float32)
    r = rounded(s, 4)
    assert r.dtype == np.float64
    # as numpy rounds a float32 score (the original's round(np.float32, 4)), then upcast
    np.testing.assert_array_equal(r, [[[np.float32(round(np.float32(v), 4)) for v in s[0, 0]]]])
    assert rounded(s, None) is s
