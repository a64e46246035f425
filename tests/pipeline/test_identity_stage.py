"""Identity across the edit grid (pipeline/identity.py), judged by cutoff.identity
(pipeline/judge.py), kept in the measurement cache: fast tests on the synthetic generator
with a small identity model built here (the real one, dlib's ResNet:
tests/models/test_identity_model.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import conf_grid

from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline import identity as ident
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.cache import EmbeddingCache
from ohlora_eval.pipeline.directions import Directions
from ohlora_eval.pipeline.edit import EditSetup, edited_mids, grid_points
from ohlora_eval.pipeline.model_calls import synthesize, to_mid

CUT = {"eyes": 0.92, "mouth": 0.88, "pose": 0.88}
GRID = grid_points(conf_grid())
M = GRID.shape[0]


class PixelIdentity:
    """A stand-in identity model: the mean colour of each image (3 numbers). Faces whose
    top-left pixel is pure white cannot be 'aligned' (NaN, with a reason)."""

    dim = 3
    threshold = 0.05
    name = "pixels"

    def __init__(self) -> None:
        self.seen = 0

    def embed_detailed(self, images):
        self.seen += images.shape[0]
        x = images.float()
        vectors = x.mean(dim=(2, 3)).numpy().astype(np.float32)
        white = (x[:, :, 0, 0] >= 1).all(1).numpy()
        vectors[white] = np.nan
        reasons = ["a white corner" if w else "" for w in white]
        return SimpleNamespace(vectors=vectors, reasons=reasons)

    def embed(self, images):
        return self.embed_detailed(images).vectors


def _found(vectors: dict[int, np.ndarray], reasons: dict[int, list[str]] | None = None):
    out = ident.Embeddings()
    out.vectors = vectors
    out.reasons = reasons or {r: [""] * len(v) for r, v in vectors.items()}
    return out


def _grid_embeddings(effect: dict[int, float]) -> np.ndarray:
    """(m + 1, 3) embeddings: the unedited face at 0, each edit moved along axis k by
    ``effect[k] * weight_k`` (property k changes the 'person' by that much per unit)."""
    out = np.zeros((M + 1, 3), np.float32)
    for k, size in effect.items():
        out[1:, k] = size * GRID[:, k]
    return out


def test_distances_and_which_edit_changes_the_person():
    # Vector 0: only the eyes edit moves the embedding (0.25 a unit: eyes +-1.2 -> 0.3 away);
    # vector 1: nothing moves; vector 2 is not measured.
    found = _found({0: _grid_embeddings({0: 0.25}), 1: _grid_embeddings({})})
    table = ident.identity_columns(found, GRID, 3)
    cols = table.columns
    assert list(cols.columns) == judge.IDENTITY_COLUMNS
    assert cols.loc[0, "identity_max"] == pytest.approx(0.3, abs=1e-6)
    assert cols.loc[0, "identity_mean"] == pytest.approx(0.3, abs=1e-6)
    # Two faces that differ only in the eyes weight: -1.2 vs +1.2 -> 0.6 apart.
    assert cols.loc[0, "identity_eyes"] == pytest.approx(0.6, abs=1e-6)
    assert cols.loc[0, "identity_mouth"] == 0 and cols.loc[0, "identity_pose"] == 0
    assert cols.loc[0, "identity_unaligned"] == 0
    assert cols.loc[1, "identity_max"] == 0
    assert cols.loc[2, ["identity_max", "identity_unaligned"]].isna().all()
    assert table.distances.shape == (3, M) and np.isnan(table.distances[2]).all()
    # The mouth edit alone: the farthest cell is a mouth extreme, named by its pm_idx.
    mouth = ident.identity_columns(_found({0: _grid_embeddings({1: 0.1})}), GRID, 1).columns
    worst = int(mouth.loc[0, "identity_worst_pm_idx"])
    assert abs(GRID[worst, 1]) == 1.8
    assert mouth.loc[0, "identity_mouth"] == pytest.approx(0.36, abs=1e-6)
    assert ident.cell_label(GRID, worst).startswith("eyes")


def test_a_face_that_cannot_be_aligned_is_nan_with_its_reason():
    e = _grid_embeddings({0: 0.25})
    e[5] = np.nan
    reasons = {0: [""] * (M + 1)}
    reasons[0][5] = "no face found"
    table = ident.identity_columns(_found({0: e}, reasons), GRID, 1).columns
    assert np.isnan(table.loc[0, "identity_max"])
    assert table.loc[0, "identity_unaligned"] == 1
    assert table.loc[0, "identity_note"] == "no face found"


def _per_vector(identity: pd.DataFrame | None, cutoffs=None, r=0.99) -> pd.DataFrame:
    n = 4 if identity is None else len(identity)
    corr = np.full((n, 3), r)
    corr[-1] = 0.5  # the last vector fails every r cutoff
    return judge.per_vector_table(corr, cutoffs or CUT, identity=identity)


def test_the_identity_cutoff_fails_another_person_and_keeps_the_same():
    found = _found(
        {
            0: _grid_embeddings({0: 0.25}),  # eyes edit: 0.3 from the unedited face
            1: _grid_embeddings({2: 0.01}),  # a little pose drift: at most 0.018
            3: _grid_embeddings({1: 1.0}),  # fails r anyway
        }
    )
    cols = ident.identity_columns(found, GRID, 4).columns
    off = _per_vector(cols)  # cutoff.identity null: identity decides nothing
    assert list(off["passed"]) == ["O", "O", "O", "X"]
    on = _per_vector(cols, {**CUT, "identity": 0.2})
    assert list(on["passed"]) == ["X", "O", "X", "X"]
    assert on.loc[0, "fail_reason"] == "identity distance 0.3000 > 0.2 (eyes edit 0.600)"
    # Vector 2 clears r but was never measured: not kept, and says so.
    assert on.loc[2, "fail_reason"] == "identity: not measured (outside identity.scope)"
    # A vector failing r gets no 'not measured' noise, but a measured distance is a reason.
    assert "identity" not in on.loc[3, "fail_reason"].split("; ")[0]
    assert on.loc[3, "fail_reason"].endswith("(mouth edit 3.600)")
    metrics = judge.run_metrics(on, identity_threshold=0.2)
    assert metrics["passed"] == 1 and metrics["r_passed"] == 3
    assert metrics["r_passed_same_person"] == 1 and metrics["r_passed_other_person"] == 1
    assert metrics["r_passed_identity_unknown"] == 1 and metrics["identity_measured"] == 3
    assert metrics["eyes_pass_rate"] == 0.75  # identity reasons never count as eyes


def test_unaligned_faces_fail_the_identity_cutoff_with_the_reason():
    e = _grid_embeddings({})
    e[0] = np.nan  # the unedited face itself
    found = _found({0: e}, {0: ["no face found"] + [""] * M})
    cols = ident.identity_columns(found, GRID, 1).columns
    table = judge.per_vector_table(np.full((1, 3), 0.99), {**CUT, "identity": 0.6}, identity=cols)
    assert table.loc[0, "passed"] == "X"
    assert table.loc[0, "fail_reason"] == "identity: 1 faces not aligned (no face found)"


def test_without_identity_columns_the_table_is_unchanged():
    corr = np.random.default_rng(0).uniform(0.8, 1, (30, 3))
    before = judge.per_vector_table(corr, CUT)
    assert list(before.columns) == judge.PER_VECTOR_COLUMNS
    with_null = judge.per_vector_table(corr, {**CUT, "identity": None})
    pd.testing.assert_frame_equal(before, with_null)
    assert judge.check_cutoffs({**CUT, "identity": None}) == CUT
    with pytest.raises(ValueError, match="needs the identity columns"):
        judge.per_vector_table(corr, {**CUT, "identity": 0.6})


@pytest.mark.parametrize("bad", [0, -0.1, "x", True, float("nan")])
def test_a_bad_identity_cutoff_names_the_key(bad):
    with pytest.raises(ConfigError, match=r"cutoff\.identity=.*e\.g\. 0\.6"):
        judge.check_cutoffs({**CUT, "identity": bad})


def test_scope_is_the_passed_and_near_misses_by_default():
    corr = np.array([[0.95, 0.9, 0.9], [0.9, 0.9, 0.9], [0.85, 0.9, 0.9], [0.99, 0.99, 0.99]])
    table = judge.per_vector_table(corr, CUT, no_face=np.array([0, 0, 0, 3]), images_per_vector=50)
    assert list(ident.in_scope(table, CUT, 0.05, "near_pass")) == [True, True, False, False]
    assert list(ident.in_scope(table, CUT, 0.05, "passed")) == [True, False, False, False]
    assert ident.in_scope(table, CUT, 0.05, "all").all()


def test_the_cache_keeps_embeddings_and_refuses_a_tampered_part(tmp_path):
    cache = EmbeddingCache(tmp_path / "key", "key", "model")
    vectors = np.random.default_rng(1).normal(size=(2, M + 1, 3)).astype(np.float32)
    reasons = [[""] * (M + 1), ["x"] + [""] * M]
    cache.save([4, 9], vectors, reasons)
    got = cache.load()
    assert sorted(got) == [4, 9]
    assert np.array_equal(got[9][0], vectors[1]) and got[9][1][0] == "x"
    # Another model's folder, or a damaged file, is not trusted.
    assert EmbeddingCache(tmp_path / "key", "key", "other").load() == {}
    part = next((tmp_path / "key" / "identity" / "model").glob("part_*.npz"))
    part.write_bytes(part.read_bytes()[:-20])
    with pytest.warns(UserWarning, match="not used"):
        assert cache.load() == {}
    assert not part.exists()


@pytest.fixture(scope="module")
def setup():
    from ohlora_eval.models.generators.synthetic import SyntheticFaceGenerator
    from ohlora_eval.models.scorers.synthetic import SyntheticScorer

    gen = SyntheticFaceGenerator(device="cpu")
    dim = gen.mid_dims["w"]
    rng = np.random.default_rng(0)
    unit = [v / np.linalg.norm(v) for v in rng.normal(size=(3, dim))]
    vectors = {p: {"all": v} for p, v in zip(("eyes", "mouth", "pose"), unit, strict=True)}
    directions = Directions(layer="w", dim=dim, vectors=vectors)
    return EditSetup(gen, SyntheticScorer(), directions, GRID, "w")


def test_the_stage_embeds_the_measured_images_and_keeps_them(setup, tmp_path):
    gen = setup.generator
    z = gen.sample_latents(5, 3)
    model = PixelIdentity()
    cache = EmbeddingCache(tmp_path, "key", "pixels")
    got = ident.measure_identity(setup, model, z, [1, 3], [""] * 5, cache=cache)
    assert sorted(got.vectors) == [1, 3] and got.measured == 2 and model.seen == 2 * (M + 1)
    # Row 0 is the unedited face, the others the grid's edits in pm_idx order: the very
    # images the measuring step makes.
    with torch.inference_mode():
        mid = to_mid(gen, z[3:4], "w")
        dirs = setup.directions.for_vectors(mid, None)
        images = synthesize(gen, edited_mids(mid, dirs, setup.steps), "w")
        plain = synthesize(gen, mid, "w")
    want = model.embed(torch.cat([plain, images]))
    assert np.allclose(got.vectors[3], want, atol=1e-6)
    # A second run re-uses them: nothing embedded.
    again = ident.measure_identity(setup, PixelIdentity(), z, [1, 3], [""] * 5, cache=cache)
    assert again.measured == 0 and again.reused == 2
    assert np.array_equal(again.vectors[1], got.vectors[1])
