"""The embedded generator and scorer: protocol, determinism, pixels-only scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ohlora_eval.models.generators.synthetic import SyntheticFaceGenerator
from ohlora_eval.models.scorers.synthetic import SyntheticScorer
from ohlora_eval.pipeline.protocols import Generator, PropertyScorer


@pytest.fixture(scope="module")
def gen() -> SyntheticFaceGenerator:
    return SyntheticFaceGenerator(device="cpu")


@pytest.fixture(scope="module")
def scorer() -> SyntheticScorer:
    return SyntheticScorer()


def test_protocols_and_shapes(gen, scorer):
    assert isinstance(gen, Generator) and isinstance(scorer, PropertyScorer)
    assert gen.latent_dim == 519
    z = gen.sample_latents(3, seed=5)
    assert z.shape == (3, 519)
    for layer, dim in [("w", 512), ("mapping_split1", 2560), ("mapping_split2", 1024)]:
        assert gen.to_mid(z, layer).shape == (3, dim)
    img = gen.synthesize(gen.to_mid(z, "w"), "w")
    assert img.shape == (3, 3, 64, 64) and img.min() >= -1 and img.max() <= 1
    assert {
        "eyes",
        "mouth",
        "pose",
        "hair_color",
        "hair_length",
        "background_mean",
        "hairstyle",
    } <= set(scorer.properties)


def test_every_layer_gives_the_same_image(gen):
    z = gen.sample_latents(6, seed=1)
    ref = gen.synthesize(gen.to_mid(z, "w"), "w")
    for layer in ("mapping_split1", "mapping_split2"):
        assert torch.allclose(gen.synthesize(gen.to_mid(z, layer), layer), ref, atol=1e-5)


def test_weights_and_latents_are_reproducible(gen):
    other = SyntheticFaceGenerator(device="cpu")
    assert other.weights_id == gen.weights_id
    assert torch.equal(other.sample_latents(4, 9), gen.sample_latents(4, 9))
    assert SyntheticFaceGenerator(device="cpu", seed=1).weights_id != gen.weights_id


def test_unknown_layer_names_the_allowed_ones(gen):
    with pytest.raises(ValueError, match="unknown layer 'w3'; allowed: w, mapping_split1"):
        gen.to_mid(gen.sample_latents(1, 0), "w3")


def test_scores_are_standardised_and_track_the_face(gen, scorer):
    z = gen.sample_latents(1500, seed=77)
    mid = gen.to_mid(z, "w")
    s = scorer.score(gen.synthesize(mid, "w"))
    p = gen.face_params(mid, "w")
    for prop in scorer.properties:
        assert abs(float(s[prop].mean())) < 0.15 and 0.8 < float(s[prop].std()) < 1.2, prop
    for prop, param, r_min in [
        ("eyes", "eyes_open", 0.8),
        ("mouth", "mouth_open", 0.95),
        ("pose", "yaw", 0.9),
        ("hair_color", "hair_color", 0.95),
        ("background_mean", "background", 0.95),
    ]:
        r = np.corrcoef(s[prop].numpy(), p[param].numpy())[0, 1]
        assert r > r_min, (prop, r)


def test_scorer_reads_pixels_only(scorer):
    # Any image works, including ones no generator made; a flat image is handled.
    flat = torch.zeros(2, 3, 64, 64)
    out = scorer.score(flat)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert torch.equal(out["eyes"][0], out["eyes"][1])


def test_linear_edits_work_for_some_vectors_and_not_others(gen, scorer):
    """Editing the mid vector along a fixed direction changes eyes for some faces
    much more than for others (saturation and interactions)."""
    z = gen.sample_latents(200, seed=3)
    mid = gen.to_mid(z, "mapping_split1")
    # Direction of steepest eyes increase on average: regress eyes on mid.
    s0 = scorer.score(gen.synthesize(mid, "mapping_split1"))["eyes"]
    x = mid - mid.mean(0)
    d = torch.linalg.lstsq(x, (s0 - s0.mean())[:, None]).solution[:, 0]
    d = d / d.norm()
    up = scorer.score(gen.synthesize(mid + 1.2 * d, "mapping_split1"))["eyes"]
    down = scorer.score(gen.synthesize(mid - 1.2 * d, "mapping_split1"))["eyes"]
    effect = (up - down).numpy()
    assert np.median(effect) > 0.5
    assert np.quantile(effect, 0.1) < 0.5 * np.median(effect)
