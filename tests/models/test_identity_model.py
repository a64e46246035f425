"""identity=dlib_resnet on the real weights from PyPI: our torch ResNet gives dlib's own
descriptors, a face it cannot align is NaN with a reason, and an edit that swaps the person
fails cutoff.identity while one that keeps it passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import compose_app, conf_grid, real_faces_or_skip
from hydra.utils import instantiate
from PIL import Image

from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline import identity as ident
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.directions import Directions
from ohlora_eval.pipeline.edit import EditSetup, edit_unit, grid_points
from ohlora_eval.pipeline.fidelity import from_uint8

DATA = Path(__file__).resolve().parents[1] / "data" / "real_faces"
GRID = grid_points(conf_grid())


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    real_faces_or_skip()
    store = tmp_path_factory.mktemp("identity") / "mlruns"
    cfg = compose_app("config", store, "experiment=real_faces", "device=cpu")
    return instantiate(cfg.identity)  # what the screening builds


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """The three committed 64-px faces (tests/data/real_faces), as the generator gives them."""
    pix = np.stack([np.asarray(Image.open(DATA / f"face{i}.png").convert("RGB")) for i in range(3)])
    return from_uint8(torch.from_numpy(pix).permute(0, 3, 1, 2))


def _dlib_descriptors(model, images: torch.Tensor) -> np.ndarray:
    import dlib

    rec = dlib.face_recognition_model_v1(model.path)
    return np.array(
        [
            np.array(rec.compute_face_descriptor(img, shape))
            for img, shape, _ in model.aligned(images)
        ]
    )


def test_embed_gives_dlibs_own_descriptors(model, faces):
    got = model.embed(faces)
    assert got.shape == (3, 128) and got.dtype == np.float32
    want = _dlib_descriptors(model, faces)
    assert float(np.abs(got - want).max()) < 1e-4
    # Three different people: dlib's threshold says so.
    d = ident.pairwise(got)
    assert d[np.triu_indices(3, 1)].min() > 0.6


def test_embed_with_68_landmarks_gives_dlibs_descriptors_too(model, faces):
    from ohlora_eval.models.identity.dlib_resnet import DlibResNetIdentity

    m68 = DlibResNetIdentity(landmarks=68, device="cpu")
    assert float(np.abs(m68.embed(faces) - _dlib_descriptors(m68, faces)).max()) < 1e-4
    assert m68.weights_id != model.weights_id  # another alignment: kept apart in the cache


def test_a_face_it_cannot_align_is_nan_with_a_reason(faces):
    from ohlora_eval.models.identity.dlib_resnet import DlibResNetIdentity

    detecting = DlibResNetIdentity(detect=True, device="cpu")
    blank = torch.zeros(1, 3, 64, 64)  # mid grey: no face for the detector
    broken = faces[:1].clone()
    broken[0, 0, 3, 3] = float("nan")
    got = detecting.embed_detailed(torch.cat([blank, broken]))
    assert np.isnan(got.vectors).all()
    assert got.reasons[0] == "dlib's face detector found no face"
    assert got.reasons[1] == "the image has non-finite pixels"


def test_bad_settings_and_a_wrong_file_are_one_line(tmp_path):
    real_faces_or_skip()
    from ohlora_eval.models.identity.dlib_resnet import DlibResNetIdentity

    with pytest.raises(ConfigError, match="identity.landmarks=7 must be 5 or 68"):
        DlibResNetIdentity(landmarks=7)
    with pytest.raises(ConfigError, match="identity.scope='some' must be one of"):
        DlibResNetIdentity(scope="some")
    wrong = tmp_path / "model.dat"
    wrong.write_bytes(b"\x01\x01\x01\x05hello")
    with pytest.raises(ConfigError, match="is not dlib's face ResNet"):
        DlibResNetIdentity(model=str(wrong))
    # dlib's own file cut short: refused with where it ends, never half a network.
    from ohlora_eval.models.identity.dlib_resnet import resnet_path

    whole = Path(resnet_path(None)).read_bytes()
    wrong.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConfigError, match="ends at byte .* inside a value"):
        DlibResNetIdentity(model=str(wrong))


def _one_vector_setup(gen, eyes: np.ndarray) -> EditSetup:
    """The real generator in z with the given eyes direction (mouth and pose not moved)."""
    from ohlora_eval.models.scorers.dlib_landmarks import DlibLandmarkScorer

    zero = np.zeros(gen.latent_dim, np.float32)
    vectors = {"eyes": {"all": eyes}, "mouth": {"all": zero}, "pose": {"all": zero}}
    directions = Directions(layer="z", dim=gen.latent_dim, vectors=vectors)
    return EditSetup(gen, DlibLandmarkScorer(workers=0), directions, GRID, "z")


def test_an_edit_that_swaps_the_person_fails_and_one_that_keeps_it_passes(model):
    from ohlora_eval.models.generators.dcgan_digiface import DCGANFaceGenerator

    gen = DCGANFaceGenerator(device="cpu")
    z = gen.sample_latents(20, 21)
    unit = edit_unit(gen, "z")
    # Swap: at eyes +1.2 the face is another vector's face, the one of 19 farthest from it
    # (random DigiFace faces are only about 0.67 apart by dlib's distance: docs/real_faces.md).
    far = int(np.argmax(ident.pairwise(model.embed(gen.synthesize(z, "z")))[0]))
    swap = ((z[far] - z[0]) / (1.2 * unit)).numpy()
    # Keep: a tiny move (a thousandth of the swap), the same person in every cell.
    tables = []
    for eyes in (swap, swap * 1e-3):
        setup = _one_vector_setup(gen, eyes.astype(np.float32))
        found = ident.measure_identity(setup, model, z[:1], [0], [""])
        tables.append(ident.identity_columns(found, GRID, 1).columns)
    cols = pd.concat(tables, ignore_index=True)
    corr = np.full((2, 3), 0.99)  # both clear every r cutoff
    cut = {"eyes": 0.92, "mouth": 0.88, "pose": 0.88, "identity": 0.6}
    table = judge.per_vector_table(corr, cut, identity=cols)
    assert list(table["passed"]) == ["X", "O"]
    assert table.loc[0, "identity_max"] > 0.6 > 0.1 > table.loc[1, "identity_max"]
    assert "(eyes edit" in table.loc[0, "fail_reason"]  # the edit that changes the person
    # The same image wherever only mouth or pose moves: no distance along those edits.
    assert table.loc[0, "identity_mouth"] < 1e-4 and table.loc[0, "identity_pose"] < 1e-4
