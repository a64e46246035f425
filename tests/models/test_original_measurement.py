"""Measuring as the original measured, proven against the original's own output.

tests/data/original_v3_1_capture.json holds what Oh-LoRA v3.1's test code measured
(run outside this repository on scaled recipe weights, 4 z vectors, SVM direction
files; tests/data/README.md says how). Here the same weights, vectors and files go
through this project's pipeline with the matching ``measure`` switches:

- (c) dropout off, PNG round trip, float64 edits, 4-decimal scores: the raw 8-bit
  images, every score and every r are the original's, exactly;
- (b) dropout off, JPEG round trip (OpenCV here, torchvision's decoder there): exactly;
- (a) dropout on: the original's r is random; ours come from the same distribution
  (means over dropout seeds), and with the original's seeding the very same draws.

"Exactly" holds on a CPU whose float kernels round as the capture machine's did (its
first image hashes the same: ``same_kernels``). Another CPU family (an AMD EPYC with
AVX2, 2026-12-06) rounds convolutions differently in the last bits: every image differs
by a level here and there, so the same comparisons hold within the bounds in ``NEAR``
(4x the gaps measured there) and the bit-for-bit image test is skipped, saying why.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from helpers import ROOT, reference_file

from ohlora_eval.directions.store import read_directions
from ohlora_eval.formats.z_vectors import read_z_csv
from ohlora_eval.models.generators.stylegan_v9 import StyleGANV9Generator
from ohlora_eval.models.networks.property_cnn import MergedPropertyCNN
from ohlora_eval.models.networks.recipe import recipe_value
from ohlora_eval.models.networks.stylegan_v9 import StyleGANV9Network
from ohlora_eval.models.scorers.ohlora_cnn import OhLoRACNNScorer
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.edit import EditSetup, edited_mids
from ohlora_eval.pipeline.fidelity import rounded, to_uint8
from ohlora_eval.pipeline.measure import measure_chunk
from ohlora_eval.pipeline.measure_settings import MeasureSettings
from ohlora_eval.pipeline.model_calls import synthesize

DATA = ROOT / "tests" / "data"
CAPTURE = DATA / "original_v3_1_capture.json"
PROPS = ("eyes", "mouth", "pose")
LAYER = "mapping_split1"
AS_C = dict(round_trip="png", edit_dtype="float64", score_decimals=4)
AS_B = dict(round_trip="jpeg", edit_dtype="float64", score_decimals=4)
AS_A = dict(scorer_mode="train", **AS_B)


# Worst gaps allowed where this CPU's kernels round differently (measured on an AMD EPYC,
# AVX2, all 4 vectors: PNG scores 1.5e-4 / r 4.8e-4; JPEG 2.5e-3 / 8.1e-3; dropout-on
# replay 4.8e-3 / 9.0e-4). A real slip (grid order, rounding, codec) moves r by 0.05 or more.
NEAR = {"c": (1e-3, 2e-3), "b": (1e-2, 3e-2), "a": (2e-2, 4e-3)}


def generator_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The capture's generator weights: recipe values, mapping dense weights x 100."""
    out = {}
    for key, current in network.state_dict().items():
        v = recipe_value(key, current)
        if key.startswith("mapping.dense") and key.endswith(".weight"):
            v = v * 100.0
        out[key] = v
    return out


def cnn_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The capture's CNN weights: recipe values, every conv/linear weight / sqrt(fan_in)."""
    out = {}
    for key, current in network.state_dict().items():
        v = recipe_value(key, current)
        if key.endswith(".weight") and v.ndim >= 2:
            v = v / (v[0].numel() ** 0.5)
        out[key] = v
    return out


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """The capture's definition: over sorted keys, key, str(dtype), str(shape), tensor bytes."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        for part in (key, str(t.dtype), str(tuple(t.shape))):
            h.update(part.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The capture ran on one CPU thread; CPU kernels split their sums by thread count, so
    the last bits of a convolution depend on it. Compare with the same one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield before
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def capture() -> dict:
    if not CAPTURE.is_file():
        pytest.skip(f"{CAPTURE} missing")
    return json.loads(CAPTURE.read_text())


@pytest.fixture(scope="module")
def models(capture, tmp_path_factory):
    folder = tmp_path_factory.mktemp("capture_weights")
    with torch.random.fork_rng(devices=[]):
        gen_state = generator_state(StyleGANV9Network())
        cnn = cnn_state(MergedPropertyCNN())
    torch.save(gen_state, folder / "generator.pth")
    torch.save(cnn, folder / "cnn.pth")
    generator = StyleGANV9Generator(str(folder / "generator.pth"), device="cpu")
    scorer = OhLoRACNNScorer(str(folder / "cnn.pth"), device="cpu")
    _remember_images(generator)
    return generator, scorer, state_sha256(gen_state), state_sha256(cnn)


def _remember_images(generator) -> None:
    """The tests here score the same 50 images of the first vector with three sets of switches
    (the round trip and the dropout act after synthesis): the generator's output for the same
    input is kept, so each set costs its scoring only (the images: 40 s on one thread)."""
    made = generator.synthesize
    kept: dict[tuple, torch.Tensor] = {}

    def synthesize(mid, layer):
        key = (layer, str(mid.dtype), tuple(mid.shape), mid.detach().cpu().numpy().tobytes())
        if key not in kept:
            kept[key] = made(mid, layer)
        return kept[key].clone()

    generator.synthesize = synthesize


@pytest.fixture(scope="module")
def inputs(capture):
    z = read_z_csv(reference_file("ohlora_z_vectors_mixed.csv"))
    directions = read_directions(DATA / "original_capture", LAYER)
    return z, directions


def _grid(capture) -> np.ndarray:
    g = capture["grid"]
    return np.array([g["eyes"], g["mouth"], g["pose"]], dtype=np.float64).T  # original's order


def _measure(capture, models, inputs, i: int, switches: dict, seed: int = 0) -> np.ndarray:
    """Vector i of the capture through the shipped measuring step: (50, 3) scores in the
    original's image order (so its grid is used as is)."""
    generator, scorer, *_ = models
    z, directions = inputs
    vec = capture["vectors"][i]
    settings = MeasureSettings(**switches, dropout_seed=seed).checked()
    setup = EditSetup(generator, scorer, directions, _grid(capture), LAYER, settings)
    latents = torch.as_tensor(z[vec["index"] : vec["index"] + 1])
    scores, _, groups = measure_chunk(
        setup, latents, groups_of=lambda mid, seeds=None: [vec["group_name"]], cases=[vec["case"]]
    )
    assert groups == [vec["group_name"]]
    return scores[0]


def _r(capture, scores: np.ndarray, decimals: int | None = 4) -> dict[str, float]:
    grid = _grid(capture)
    s = rounded(scores, decimals)
    return {p: float(judge.pearson_rows(grid[:, k], s[None, :, k])[0]) for k, p in enumerate(PROPS)}


def test_the_weights_are_the_captured_ones(capture, models):
    assert models[2] == capture["weights"]["generator_state_sha256"]
    assert models[3] == capture["weights"]["cnn_state_sha256"]


def _raw_hashes(capture, models, inputs, n: int) -> list[str]:
    """The edit (float64, as the original) and the 8-bit image of the first vector's first
    n grid points, hashed as the original's uint8 HWC RGB array."""
    generator, scorer, *_ = models
    z, directions = inputs
    vec = capture["vectors"][0]
    setup = EditSetup(generator, scorer, directions, _grid(capture), LAYER)
    mid = generator.to_mid(torch.as_tensor(z[:1]), LAYER)
    dirs = directions.for_vectors(mid, [vec["group_name"]], torch.float64)
    edited = edited_mids(mid, dirs, setup.grid[:n], torch.float64)
    pixels = to_uint8(synthesize(generator, edited, LAYER)).permute(0, 2, 3, 1)
    return [hashlib.sha256(p.contiguous().numpy().tobytes()).hexdigest() for p in pixels]


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            name = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        name = "this CPU"
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}"


@pytest.fixture(scope="module")
def same_kernels(capture, models, inputs, one_thread) -> bool:
    """Whether this CPU computes the capture's very bits (its first image hashes the same, on
    one thread). Where it does not, no comparison here can be bit for bit and the ones within
    ``NEAR`` run on every thread (the order of a sum moves scores by about 1e-6, far inside)."""
    same = (
        _raw_hashes(capture, models, inputs, 1)
        == capture["vectors"][0]["images"]["raw_uint8_hwc_rgb_sha256"][:1]
    )
    if not same:
        torch.set_num_threads(one_thread)
    return same


def _check(worst: dict[str, float], kind: str, same_kernels: bool) -> None:
    if same_kernels:
        assert worst["score"] == 0.0 and worst["r"] < 1e-12, worst  # r: np.corrcoef's rounding
    else:
        score, r = NEAR[kind]
        assert worst["score"] < score and worst["r"] < r, (_cpu(), worst)


def test_raw_images_are_the_originals_bit_for_bit(capture, models, inputs, same_kernels):
    """The first vector's first six images, hashed as the original's uint8 HWC RGB array."""
    if not same_kernels:
        pytest.skip(
            f"{_cpu()} rounds convolutions differently from the capture machine, so no image "
            "is bit for bit; the score and r tests here hold within NEAR instead"
        )
    assert (
        _raw_hashes(capture, models, inputs, 6)
        == capture["vectors"][0]["images"]["raw_uint8_hwc_rgb_sha256"][:6]
    )


def test_dropout_off_png_matches_the_original(capture, models, inputs, same_kernels):
    """(c): every score and every r of the first vector (the other three: the slow test)."""
    _check(_compare(capture, models, inputs, "c", AS_C, vectors=[0]), "c", same_kernels)


def test_dropout_off_jpeg_matches_the_original(capture, models, inputs, same_kernels):
    """(b): written with OpenCV and read back with OpenCV here, read with torchvision's
    decoder there: the same pixels, so the same scores."""
    _check(_compare(capture, models, inputs, "b", AS_B, vectors=[0]), "b", same_kernels)


def test_dropout_on_replays_the_originals_draws(capture, models, inputs, monkeypatch, same_kernels):
    """(a), exactly: the original seeded the global RNG and scored the 50 images one at a
    time in grid order. With a vector's seed set to the capture's seed (instead of the
    per-case seed this project derives), the dropout masks and so the scores are the same."""
    import ohlora_eval.pipeline.measure as measuring

    monkeypatch.setattr(measuring, "vector_seed", lambda seed, case: int(seed))
    for run in capture["results"]["a"][:1]:  # all five seeds: the slow test
        want = run["vectors"][0]
        ours = _measure(capture, models, inputs, 0, AS_A, run["seed"])
        theirs = np.array([want["scores"][p] for p in PROPS], dtype=np.float32).T
        r = _r(capture, ours)
        worst = {
            "score": float(np.abs(ours - theirs).max()),
            "r": max(abs(r[p] - want["r"][p]) for p in PROPS),
        }
        _check(worst, "a", same_kernels)


@pytest.mark.slow
def test_every_captured_vector_matches(capture, models, inputs, monkeypatch, same_kernels):
    for kind, switches in (("c", AS_C), ("b", AS_B)):
        _check(
            _compare(capture, models, inputs, kind, switches, vectors=range(4)), kind, same_kernels
        )
    import ohlora_eval.pipeline.measure as measuring

    monkeypatch.setattr(measuring, "vector_seed", lambda seed, case: int(seed))
    for run in capture["results"]["a"]:
        for i in range(4):
            want = run["vectors"][i]
            ours = _measure(capture, models, inputs, i, AS_A, run["seed"])
            theirs = np.array([want["scores"][p] for p in PROPS], dtype=np.float32).T
            r = _r(capture, ours)
            worst = {
                "score": float(np.abs(ours - theirs).max()),
                "r": max(abs(r[p] - want["r"][p]) for p in PROPS),
            }
            _check(worst, "a", same_kernels)


def _compare(capture, models, inputs, kind: str, switches: dict, vectors) -> dict[str, float]:
    worst = {"score": 0.0, "r": 0.0}
    for i in vectors:
        want = capture["results"][kind][i]
        ours = _measure(capture, models, inputs, i, switches)
        theirs = np.array([want["scores"][p] for p in PROPS], dtype=np.float32).T
        worst["score"] = max(worst["score"], float(np.abs(ours - theirs).max()))
        r = _r(capture, ours)
        worst["r"] = max(worst["r"], max(abs(r[p] - want["r"][p]) for p in PROPS))
    return worst


@pytest.mark.slow
def test_dropout_on_draws_r_from_the_originals_distribution(capture, models, inputs):
    """(a): the original's r over 5 dropout seeds against ours over 3 (first vector): the
    means agree within their standard errors, and ours move as much as theirs."""
    theirs = np.array([[s["vectors"][0]["r"][p] for p in PROPS] for s in capture["results"]["a"]])
    ours = np.array(
        [
            list(_r(capture, _measure(capture, models, inputs, 0, AS_A, seed)).values())
            for seed in (0, 1, 2)
        ]
    )
    se = np.sqrt(theirs.var(axis=0, ddof=1) / len(theirs) + ours.var(axis=0, ddof=1) / len(ours))
    assert (np.abs(ours.mean(axis=0) - theirs.mean(axis=0)) < 4 * se + 0.02).all(), (ours, theirs)
    assert (ours.std(axis=0, ddof=1) > 0).all()
    clean = np.array(list(_r(capture, _measure(capture, models, inputs, 0, AS_B)).values()))
    assert (np.abs(ours - clean) > 1e-3).any()  # dropout really changes the measurement
