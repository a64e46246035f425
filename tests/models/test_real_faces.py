"""The real-faces models from PyPI: the DCGAN from gan-face-generate's weights and dlib's
68-point landmarks (tests run on the real weights; CI installs them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ohlora_eval.pipeline.fidelity import from_uint8

DATA = Path(__file__).resolve().parents[1] / "data" / "real_faces"


@pytest.fixture(scope="module")
def gen():
    from helpers import real_faces_or_skip

    real_faces_or_skip()
    from ohlora_eval.models.generators.dcgan_digiface import DCGANFaceGenerator

    return DCGANFaceGenerator(device="cpu")


@pytest.fixture(scope="module")
def scorer():
    from helpers import real_faces_or_skip

    real_faces_or_skip()
    from ohlora_eval.models.scorers.dlib_landmarks import DlibLandmarkScorer

    s = DlibLandmarkScorer(workers=0)
    yield s
    s.close()


def package_network(path: str) -> torch.nn.Module:
    """The package's own generator class with its own weights file (the reference)."""
    from gan_face_generate.models import Generator  # torch only: no wandb, no torchvision

    net = Generator(0, 3, 100, 64)
    state = torch.load(path, map_location="cpu", weights_only=True)["netG_state_dict"]
    net.load_state_dict(state)
    return net.eval()


def test_images_equal_the_package_network(gen):
    ref = package_network(gen.weights_path)
    z = gen.sample_latents(70, seed=3)
    with torch.inference_mode():
        want = ref(z[:, :, None, None])
    for layer in gen.layers:
        got = gen.synthesize(gen.to_mid(z, layer), layer)
        assert got.shape == (70, 3, 64, 64)
        assert float((got - want).abs().max()) <= 1e-6, layer
    assert float(want.min()) >= -1 and float(want.max()) <= 1
    assert len(gen.weights_id) == 16 and gen.weights_id != "random-init"


def test_an_image_never_depends_on_its_batch_mates(gen):
    from ohlora_eval.pipeline.model_calls import synthesize

    z = gen.sample_latents(100, seed=11)
    alone = synthesize(gen, z[7:8], "z")
    for mates in (z, z.flip(0), torch.cat([z[7:8], torch.randn(200, 100)])):
        row = int(((mates - z[7]).abs().sum(1) == 0).nonzero()[0])
        assert torch.equal(synthesize(gen, mates, "z")[row], alone[0])
    # The check can fail: with BatchNorm in train mode, batch statistics mix the faces.
    gen.network.train()
    try:
        with torch.no_grad():
            a = gen.network(z[:64])[7]
            b = gen.network(torch.cat([z[7:8], z[64:]]))[0]
    finally:
        gen.network.eval()
    assert float((a - b).abs().max()) > 1e-3


def test_landmark_scores_of_committed_faces_equal_the_recorded_ones(scorer):
    from ohlora_eval.models.scorers.dlib_landmarks import DlibLandmarkScorer

    recorded = json.loads((DATA / "scores.json").read_text())
    pixels = np.stack([np.asarray(Image.open(DATA / f)) for f in recorded["files"]])
    images = from_uint8(torch.from_numpy(pixels).permute(0, 3, 1, 2))
    got = scorer.score(images)
    for p, values in recorded["scores"].items():
        np.testing.assert_allclose(got[p].numpy(), values, rtol=0, atol=1e-6, err_msg=p)
    pooled = DlibLandmarkScorer(workers=2)  # the worker processes measure the same
    try:
        again = pooled.score(images)
    finally:
        pooled.close()
    assert all(torch.equal(got[p], again[p]) for p in got)


def test_formulas_on_known_landmarks():
    from ohlora_eval.models.scorers.dlib_landmarks import landmark_properties

    p = np.zeros((68, 2))
    p[0], p[16], p[30] = (10, 50), (90, 50), (60, 50)  # jaw 80 wide, nose 10 right of centre
    for eye, x0 in ((slice(36, 42), 20), (slice(42, 48), 60)):  # 20 wide, 5 high: EAR 0.25
        p[eye] = [(x0, 40), (x0 + 7, 37.5), (x0 + 13, 37.5), (x0 + 20, 40), (x0 + 13, 42.5),
                  (x0 + 7, 42.5)]  # fmt: skip
    p[60], p[64] = (40, 70), (60, 70)  # inner mouth 20 wide, lips 4 apart
    p[61:64] = [(45, 68), (50, 68), (55, 68)]
    p[65:68] = [(55, 72), (50, 72), (45, 72)]
    eyes, mouth, pose = landmark_properties(p)
    assert eyes == pytest.approx(0.25) and mouth == pytest.approx(0.2)
    assert pose == pytest.approx(10 / 80)


def test_no_face_found_scores_nan_not_zero(gen):
    from ohlora_eval.models.scorers.dlib_landmarks import DlibLandmarkScorer

    detecting = DlibLandmarkScorer(detect=True, workers=0)
    blank = torch.zeros(2, 3, 64, 64)
    faces = gen.synthesize(gen.sample_latents(8, seed=1), "z")
    s = detecting.score(torch.cat([blank, faces]))
    for p in detecting.properties:
        assert torch.isnan(s[p][:2]).all(), p
    assert torch.isfinite(s["eyes"][2:]).any()  # faces are found on most


def test_overlapped_scoring_measures_the_same(gen):
    """The hot loop hands each step to the landmark workers and generates the next meanwhile:
    the same scores as scoring in this process, step by step."""
    from ohlora_eval.bench.real import random_directions
    from ohlora_eval.models.scorers.dlib_landmarks import DlibLandmarkScorer
    from ohlora_eval.pipeline.edit import EditSetup, grid_points
    from ohlora_eval.pipeline.measure import measure

    grid = grid_points({"eyes": [-1, 1], "mouth": [-1, 0, 1], "pose": [-1, 1]})
    dirs = random_directions("z", 100, seed=2)
    z = gen.sample_latents(12, seed=4)
    here, pooled = DlibLandmarkScorer(workers=0), DlibLandmarkScorer(workers=2)
    try:
        a = measure(EditSetup(gen, here, dirs, grid, "z"), z, 5).scores
        b = measure(EditSetup(gen, pooled, dirs, grid, "z"), z, 5).scores
    finally:
        pooled.close()
    assert np.isfinite(a).all() and np.array_equal(a, b)


def test_edit_unit_moves_the_face_but_not_the_grid(gen):
    from ohlora_eval.bench.real import random_directions
    from ohlora_eval.pipeline.edit import EditSetup, grid_points

    grid = grid_points({"eyes": [-1, 1], "mouth": [0, 1], "pose": [0, 2]})
    setup = EditSetup(gen, None, random_directions("z", 100, 0), grid, "z")
    assert gen.edit_unit == {}  # built without: Oh-LoRA's unit
    assert setup.steps is grid
    from ohlora_eval.models.generators.dcgan_digiface import DCGANFaceGenerator

    wide = DCGANFaceGenerator(device="cpu", edit_unit={"z": 2.0})
    setup2 = EditSetup(wide, None, random_directions("z", 100, 0), grid, "z")
    np.testing.assert_array_equal(setup2.steps, 2 * grid)
    np.testing.assert_array_equal(setup2.grid, grid)
