"""Review aids: the pure functions, and constructed generators whose flaws they must see."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import conf_cutoffs, conf_grid
from review_wrappers import (
    BackgroundShiftGenerator,
    DisentangledGenerator,
    EyesMoveMouthGenerator,
    dual_vectors,
)

from ohlora_eval.directions import Directions
from ohlora_eval.directions.svm import fit_svm_direction
from ohlora_eval.models.generators.synthetic import SyntheticFaceGenerator
from ohlora_eval.models.scorers.synthetic import SyntheticScorer
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.edit import EditSetup, grid_points
from ohlora_eval.pipeline.measure import measure
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.pipeline.sample import FaceSetup, sample_and_score
from ohlora_eval.review.correlations import bootstrap_ci, leakage, spearman_max, spearman_rows
from ohlora_eval.review.locality import face_region, locality_stats
from ohlora_eval.review.settings import ReviewSettings
from ohlora_eval.review.steps import add_review_columns, image_stats
from ohlora_eval.review.table import (
    REVIEW_COLUMNS,
    rank_by,
    rank_scores,
    review_metrics,
    review_table,
)

GRID = grid_points(conf_grid())
CUTOFFS = conf_cutoffs()


def _noisy_scores(n: int, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gain = rng.uniform(0.5, 1.5, (n, 1, 3))
    return (GRID[None] * gain + rng.normal(0, noise, (n, GRID.shape[0], 3))).astype(np.float32)


def _table(scores: np.ndarray, locality: dict | None = None) -> pd.DataFrame:
    corr = np.stack([judge.pearson_rows(GRID[:, k], scores[:, :, k]) for k in range(3)], 1)
    per_vector = judge.per_vector_table(corr, CUTOFFS)
    n = len(per_vector)
    locality = locality or {"bg_drift": np.linspace(0.01, 0.05, n), "face_iou": np.ones(n)}
    return add_review_columns(per_vector, GRID, scores, locality)[0]


# --- correlations --------------------------------------------------------------------------------
def test_bootstrap_interval_contains_r_and_narrows_with_less_noise():
    x = GRID[:, 1]
    noisy, clean = _noisy_scores(300, 1.0)[:, :, 1], _noisy_scores(300, 0.2)[:, :, 1]
    r = judge.pearson_rows(x, noisy)
    lo, hi = bootstrap_ci(x, noisy, n_boot=300, seed=1)
    assert np.all(lo <= hi)
    assert np.mean((lo <= r) & (r <= hi)) > 0.97
    lo_c, hi_c = bootstrap_ci(x, clean, n_boot=300, seed=1)
    assert np.median(hi_c - lo_c) < 0.5 * np.median(hi - lo)


def test_bootstrap_is_deterministic_and_per_vector():
    y = _noisy_scores(40, 0.7)[:, :, 0]
    a = bootstrap_ci(GRID[:, 0], y, seed=5)
    b = bootstrap_ci(GRID[:, 0], y[7:9], seed=5)  # the same rows in another batch
    np.testing.assert_array_equal(a[0][7:9], b[0])
    np.testing.assert_array_equal(a[1][7:9], b[1])
    c = bootstrap_ci(GRID[:, 0], y, seed=6)
    assert not np.array_equal(a[0], c[0])


def test_bootstrap_constant_row_is_nan_and_bad_settings_raise():
    y = _noisy_scores(3, 0.5)[:, :, 2].astype(np.float64)
    y[1] = 4.0
    lo, hi = bootstrap_ci(GRID[:, 2], y)
    assert np.isnan(lo[1]) and np.isnan(hi[1])
    assert np.isfinite(lo[[0, 2]]).all()
    with pytest.raises(ValueError, match="review.ci_level"):
        bootstrap_ci(GRID[:, 2], y, level=1.5)
    with pytest.raises(ValueError, match="review.n_boot"):
        bootstrap_ci(GRID[:, 2], y, n_boot=1)


def test_spearman_matches_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    y = _noisy_scores(20, 0.8)
    y[3, :, 1] = np.round(y[3, :, 1])  # ties in the scores too
    for k in range(3):
        got = spearman_rows(GRID[:, k], y[:, :, k])
        want = [scipy_stats.spearmanr(GRID[:, k], row).statistic for row in y[:, :, k]]
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_spearman_of_a_perfect_monotone_edit_reaches_the_grid_ceiling():
    # With two eyes weights rho cannot exceed ~0.866 (heavy ties): the page explains it.
    y = (GRID[:, 0] + 1e-3 * np.arange(50))[None]
    assert spearman_rows(GRID[:, 0], y)[0] == pytest.approx(spearman_max(GRID[:, 0]))
    assert spearman_max(GRID[:, 0]) == pytest.approx(np.sqrt(3) / 2, abs=0.01)
    assert spearman_max(np.arange(10.0)) == pytest.approx(1.0)


def test_leakage_finds_the_edit_that_moves_another_property():
    rng = np.random.default_rng(3)
    w = GRID
    scores = np.zeros((2, 50, 3))
    noise = rng.normal(0, 0.05, (2, 50, 3))
    scores[:, :, 0] = w[:, 0] + noise[:, :, 0]
    scores[:, :, 2] = w[:, 2] + noise[:, :, 2]
    scores[0, :, 1] = w[:, 1] + noise[0, :, 1]  # clean
    scores[1, :, 1] = w[:, 1] + 1.2 * w[:, 0] + noise[1, :, 1]  # eyes edit moves the mouth
    out = leakage(w, scores)
    assert out["matrix"].shape == (2, 3, 3)
    for k in range(3):  # the diagonal is the usual per-property r
        np.testing.assert_allclose(
            out["matrix"][:, k, k], judge.pearson_rows(w[:, k], scores[:, :, k])
        )
    assert out["eyes_to_mouth_r"][1] > 0.6 and abs(out["eyes_to_mouth_r"][0]) < 0.1
    assert out["mouth_leak"][1] == pytest.approx(out["eyes_to_mouth_r"][1])
    assert out["max_leak"][1] == pytest.approx(out["mouth_leak"][1])
    assert out["max_leak"][0] < 0.1
    assert out["eyes_leak"][1] < 0.1 and out["pose_leak"][1] < 0.1


# --- locality from pixels ------------------------------------------------------------------------
def _faces(v: int, m: int, res: int = 64) -> torch.Tensor:
    """A grey disc on a dark background, the same in every image."""
    c = (torch.arange(res) + 0.5) / res * 2 - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    disc = ((xx / 0.4) ** 2 + (yy / 0.5) ** 2 <= 1).float()
    img = -0.6 + 1.2 * disc  # background -0.6, face 0.6
    return img.expand(v * m, 3, res, res).clone()


def test_locality_of_a_static_grid_is_zero_drift_and_full_iou():
    out = locality_stats(_faces(3, 10), 10)
    np.testing.assert_allclose(out["bg_drift"], 0.0, atol=1e-7)
    np.testing.assert_allclose(out["face_iou"], 1.0)


def test_background_shift_is_drift_and_leaves_the_silhouette():
    m = 10
    images = _faces(2, m)
    background = images[0, 0] < 0
    assert not (background & torch.as_tensor(face_region(64, 64))).all()
    # Vector 1: half its images have a background 0.2 brighter (in [-1, 1] units).
    for j in range(m // 2, m):
        images[m + j][:, background] += 0.2
    out = locality_stats(images, m, analysis_size=64)
    assert out["bg_drift"][0] == pytest.approx(0.0, abs=1e-7)
    # Every outside pixel is 0.1 from the mean image in [-1, 1], i.e. 0.05 in [0, 1].
    assert out["bg_drift"][1] == pytest.approx(0.05, rel=1e-4)
    assert out["face_iou"][1] > 0.99


def test_a_growing_head_lowers_face_iou_not_drift_inside():
    m = 6
    res = 64
    c = (torch.arange(res) + 0.5) / res * 2 - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    frames = []
    for j in range(m):
        rx = 0.25 + 0.05 * j
        disc = ((xx / rx) ** 2 + (yy / 0.3) ** 2 <= 1).float()
        frames.append((-0.6 + 1.2 * disc).expand(3, res, res))
    out = locality_stats(torch.stack(frames), m, analysis_size=64)
    assert out["face_iou"][0] < 0.85
    assert out["bg_drift"][0] < 0.01  # the head stays inside the face region


def test_locality_is_per_vector_whatever_the_chunk_and_resolution():
    gen = SyntheticFaceGenerator(resolution=64, device="cpu")
    z = gen.sample_latents(5, 3)
    mid = gen.to_mid(z, "w")
    rng = torch.Generator().manual_seed(0)
    steps = torch.randn(5, 10, mid.shape[1], generator=rng) * 0.05
    images = gen.synthesize((mid[:, None, :] + steps).reshape(50, -1), "w")
    whole = locality_stats(images, 10)
    part = locality_stats(images[20:30], 10)
    for key in ("bg_drift", "face_iou"):
        assert whole[key][2] == part[key][0]
    big = torch.nn.functional.interpolate(images, size=256, mode="nearest")
    at256 = locality_stats(big, 10)
    np.testing.assert_allclose(at256["bg_drift"], whole["bg_drift"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(at256["face_iou"], whole["face_iou"], rtol=1e-4)


def test_locality_rejects_bad_input():
    with pytest.raises(ValueError, match="whole number of grids"):
        locality_stats(_faces(1, 10)[:7], 10)
    with pytest.raises(ValueError, match="review.face_box"):
        locality_stats(_faces(1, 10), 10, face_box=(0.5, 0.0, 0.2, 0.4))
    with pytest.raises(ValueError, match="review.analysis_size"):
        locality_stats(_faces(1, 10), 10, analysis_size=4)
    empty = locality_stats(_faces(1, 10)[:0], 10)
    assert empty["bg_drift"].shape == (0,)


# --- table, metrics, ranking ---------------------------------------------------------------------
def test_review_table_columns_ranks_and_metrics():
    table = _table(_noisy_scores(60, 0.6))
    assert list(table.columns[: len(judge.PER_VECTOR_COLUMNS)]) == judge.PER_VECTOR_COLUMNS
    assert list(table.columns[len(judge.PER_VECTOR_COLUMNS) :]) == REVIEW_COLUMNS
    assert sorted(table["review_rank"]) == list(range(1, 61))
    assert table["bg_drift_rel"].median() == pytest.approx(1.0)
    best = table.loc[table["review_rank"] == 1].iloc[0]
    assert best["review_score"] == table["review_score"].max()
    expected = best["sum_abs_corr"] - best["max_leak"] - 0.1 * best["bg_drift_rel"]
    assert best["review_score"] == pytest.approx(expected)
    m = review_metrics(table)
    assert m["bg_drift_mean"] == pytest.approx(table["bg_drift"].mean())
    assert {"face_iou_mean", "max_leak_mean", "eyes_ci_width_mean", "mouth_spearman_mean"} <= set(m)
    if (table["passed"] == "O").any():
        ok = table[table["passed"] == "O"]
        assert m["max_leak_passed_mean"] == pytest.approx(ok["max_leak"].mean())
    assert all(np.isfinite(v) for v in m.values())


def test_review_table_without_locality_gives_nan_columns():
    scores = _noisy_scores(5, 0.5)
    corr = np.stack([judge.pearson_rows(GRID[:, k], scores[:, :, k]) for k in range(3)], 1)
    pv = judge.per_vector_table(corr, CUTOFFS)
    out = review_table(
        GRID, scores, pv, None, "sum_abs_corr - max_leak", n_boot=50, ci_level=0.9, seed=1
    )
    assert out["bg_drift"].isna().all() and out["face_iou"].isna().all()
    assert out["review_score"].notna().all()


def test_rank_by_expression_mapping_nan_and_ties():
    t = pd.DataFrame(
        {
            "case": [0, 1, 2, 3],
            "sum_abs_corr": [2.5, 2.9, 2.9, np.nan],
            "max_leak": [0.1, 0.5, 0.5, 0.0],
            "bg_drift": [0.01, 0.02, 0.02, 0.0],
        }
    )
    ranked = rank_by(t, "sum_abs_corr - 0.5*max_leak - 2*bg_drift")
    assert ranked["case"].tolist() == [1, 2, 0, 3]  # tie 1/2 by case, NaN last
    assert ranked["review_score"].iloc[0] == pytest.approx(2.9 - 0.25 - 0.04)
    by_map = rank_scores(t, {"sum_abs_corr": 1, "max_leak": -0.5, "bg_drift": -2})
    np.testing.assert_allclose(by_map, rank_scores(t, "sum_abs_corr-0.5*max_leak-2*bg_drift"))
    assert rank_by(t, "-max_leak + abs(minimum(bg_drift, 1))")["case"].tolist()[0] == 3


@pytest.mark.parametrize(
    "spec, message",
    [
        ("sum_abs_corr - 0.5*leak", r"unknown column 'leak'"),
        ("sum_abs_corr -", r"not an expression"),
        ("__import__('os').system('true')", r"is not allowed"),
        ("sum_abs_corr.real", r"is not allowed"),
        ("sqrt(1, 2)", r"takes 1 argument"),
        ({"nope": 1.0}, r"unknown column 'nope'"),
        ("", r"expected an expression"),
    ],
)
def test_bad_rank_expressions_name_the_field_and_what_is_allowed(spec, message):
    t = pd.DataFrame({"case": [0], "sum_abs_corr": [2.0], "max_leak": [0.1]})
    with pytest.raises(ValueError, match=message) as info:
        rank_scores(t, spec)
    text = str(info.value)
    assert text.startswith("review.rank_by=")
    assert "allowed columns: sum_abs_corr, max_leak" in text


def test_settings_from_the_config_group_and_its_checks():
    from helpers import CONF_DIR
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        # Before conf/config.yaml lists the group the test adds it; after, it is there.
        group = [] if "review" in compose("config") else ["+review=default"]
        cfg = compose(
            "config",
            overrides=[*group, "review.rank_by=sum_abs_corr - 0.5*max_leak - 2*bg_drift"],
        )
    s = ReviewSettings.from_cfg(cfg.review)
    assert s.rank_by == "sum_abs_corr - 0.5*max_leak - 2*bg_drift"
    assert s.face_box == (-0.55, -0.65, 0.55, 0.85) and s.n_boot == 200
    assert s.local_dir == f"{cfg.tracking.root}/review"
    with pytest.raises(ValueError, match=r"review.rank_by=.*unknown column 'foo'"):
        ReviewSettings.from_cfg({"rank_by": "foo"})
    with pytest.raises(ValueError, match=r"review.n_boot=1"):
        ReviewSettings.from_cfg({"n_boot": 1})
    with pytest.raises(ValueError, match=r"review.max_cards=-1"):
        ReviewSettings.from_cfg({"max_cards": -1})
    assert s.near_miss_margin == 0.05
    for bad in (-0.1, 1.5, "x", True):
        with pytest.raises(ValueError, match=r"review.near_miss_margin=.* in \[0, 1\]"):
            ReviewSettings.from_cfg({"near_miss_margin": bad})
    assert ReviewSettings.from_cfg({"near_miss_margin": 0}).near_miss_margin == 0.0


# --- constructed generators through the real pipeline -------------------------------------------
LAYER = "w"
N_VECTORS = 30


def _measure(generator, scorer, directions: Directions) -> pd.DataFrame:
    """The evaluation's measuring path: ``measure`` with the locality hook, then the table."""
    settings = ReviewSettings()
    latents = generator.sample_latents(N_VECTORS, 11)
    setup = EditSetup(generator, scorer, directions, GRID, LAYER)
    measured = measure(setup, latents, 8, image_stats=image_stats(settings))
    scores = measured.scores
    corr = np.stack([judge.pearson_rows(GRID[:, k], scores[:, :, k]) for k in range(3)], 1)
    per_vector = judge.per_vector_table(corr, CUTOFFS)
    table, _ = add_review_columns(per_vector, GRID, scores, measured.extras, settings)
    return table


@pytest.fixture(scope="module")
def constructed():
    """Directions fitted on the synthetic generator; six generators measured with them."""
    torch.manual_seed(0)
    plain = SyntheticFaceGenerator(resolution=64, device="cpu")
    scorer = SyntheticScorer(resolution=64)
    _, mid, sc = sample_and_score(FaceSetup(plain, scorer, LAYER), 2000, 7)
    x = mid.numpy()
    vec = {p: fit_svm_direction(x, sc[p], 0.2, seed=7)[0] for p in CORE_PROPERTIES}
    directions = Directions(
        layer=LAYER, dim=x.shape[1], vectors={p: {"all": v} for p, v in vec.items()}
    )
    clean = DisentangledGenerator(plain, vec, LAYER)
    gens = {
        "plain": plain,
        "plain+background": BackgroundShiftGenerator(plain, vec, LAYER, 1.5),
        "plain+eyes_mouth": EyesMoveMouthGenerator(plain, vec, LAYER, 2.0),
        "clean": clean,
        "clean+background": BackgroundShiftGenerator(clean, vec, LAYER, 1.5),
        "clean+eyes_mouth": EyesMoveMouthGenerator(clean, vec, LAYER, 2.0),
    }
    return {name: _measure(g, scorer, directions) for name, g in gens.items()}


def test_dual_vectors_read_the_edit_weights_back():
    rng = np.random.default_rng(0)
    d = {p: rng.normal(size=16) for p in CORE_PROPERTIES}
    e = dual_vectors(d)
    unit = np.stack([d[p] / np.linalg.norm(d[p]) for p in CORE_PROPERTIES])
    np.testing.assert_allclose(e @ unit.T, np.eye(3), atol=1e-10)


def test_clean_generator_shows_neither_drift_nor_leakage(constructed):
    clean = constructed["clean"]
    # Measured (30 vectors): drift median 0.005, max 0.016; eyes->mouth |r| ~ 0;
    # mouth_leak max 0.16 (the mouth score picks up a little of the pose turn).
    assert clean["bg_drift"].max() < 0.03
    assert clean["eyes_to_mouth_r"].abs().max() < 0.1
    assert clean["mouth_leak"].max() < 0.3
    assert clean["face_iou"].median() > 0.85


def test_background_wrapper_shows_high_drift_and_no_new_leakage(constructed):
    clean, flawed = constructed["clean"], constructed["clean+background"]
    # Measured: median 0.18 (10th percentile 0.07) against the clean 0.005.
    assert flawed["bg_drift"].median() > 0.1
    assert (flawed["bg_drift"] > 0.03).mean() >= 0.9
    assert (flawed["bg_drift"] > clean["bg_drift"] + 0.02).all()
    assert (flawed["eyes_to_mouth_r"] - clean["eyes_to_mouth_r"]).abs().max() < 0.1
    assert flawed["mouth_leak"].max() < 0.3


def test_eyes_mouth_wrapper_shows_leakage_and_no_drift(constructed):
    clean, flawed = constructed["clean"], constructed["clean+eyes_mouth"]
    # Measured: eyes->mouth r from 0.57 (median 0.85) against ~0 for the clean one.
    assert flawed["eyes_to_mouth_r"].min() > 0.4
    assert flawed["mouth_leak"].median() > 0.7
    assert (flawed["max_leak"] >= flawed["mouth_leak"]).all()
    np.testing.assert_allclose(flawed["bg_drift"], clean["bg_drift"], atol=1e-3)


def test_flaws_show_on_the_entangled_synthetic_generator_too(constructed):
    """The plain generator leaks and drifts by design; each flaw still adds what it should."""
    plain = constructed["plain"]
    bg, em = constructed["plain+background"], constructed["plain+eyes_mouth"]
    # Measured: drift +0.04..+0.2 per vector (median +0.13); eyes->mouth r +0.18..+0.6.
    assert (bg["bg_drift"] - plain["bg_drift"]).min() > 0.02
    assert (bg["bg_drift"] - plain["bg_drift"]).median() > 0.08
    assert (bg["eyes_to_mouth_r"] - plain["eyes_to_mouth_r"]).abs().max() < 0.05
    assert (em["eyes_to_mouth_r"] - plain["eyes_to_mouth_r"]).min() > 0.1
    assert (em["eyes_to_mouth_r"] - plain["eyes_to_mouth_r"]).median() > 0.25
    np.testing.assert_allclose(em["bg_drift"], plain["bg_drift"], atol=1e-3)


def test_the_ranking_puts_clean_vectors_above_flawed_ones(constructed):
    """Default ranking over the union: a flawed copy of a vector ranks below its clean self."""
    clean = constructed["clean"].assign(kind="clean")
    flawed = constructed["clean+eyes_mouth"].assign(kind="flawed")
    both = pd.concat([clean, flawed], ignore_index=True).assign(case=lambda d: d.index)
    scores = rank_scores(both, "sum_abs_corr - 1.0*max_leak")
    n = len(clean)
    assert (scores[:n] > scores[n:]).mean() > 0.9
