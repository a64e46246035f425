"""Latents drawn from their seed block by block are the very numbers of one big draw, for
every generator that can continue its stream (issue 25, item 7: memory that grew with
sampling.n_vectors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ohlora_eval.apps.build import check_memory, memory_needed
from ohlora_eval.errors import ConfigError
from ohlora_eval.models.generators.synthetic import SyntheticFaceGenerator
from ohlora_eval.pipeline.fingerprint import digest
from ohlora_eval.pipeline.latents import SeededLatents, seeded_latents


class _StyleGANRows:
    """StyleGAN-FineTune-v9's draw order (512 values, then 7, per row) without its network."""

    latent_dim = 519

    def draw_latents(self, g, k):
        from ohlora_eval.models.generators.stylegan_v9 import StyleGANV9Generator

        return StyleGANV9Generator.draw_latents(self, g, k)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 4096, 4097, 9001])
def test_blocks_are_the_one_big_draw(n):
    gen = SyntheticFaceGenerator(device="cpu")
    full = gen.sample_latents(n, seed=3)
    blocks = seeded_latents(gen, n, seed=3)
    assert isinstance(blocks, SeededLatents) and blocks.shape == (n, 519)
    assert torch.equal(blocks[0:n], full)
    assert np.array_equal(np.asarray(blocks), full.numpy())
    rows = [n - 1, 0, n // 2]
    assert torch.equal(blocks[rows], full[rows])  # any row again, from its block alone
    assert torch.equal(blocks[max(0, n - 5) : n], full[max(0, n - 5) : n])
    assert digest({"z": blocks}) == digest({"z": full.numpy()})  # the same measurement key


def test_small_blocks_too_and_a_block_that_is_not_a_multiple_of_16_is_refused():
    gen = SyntheticFaceGenerator(device="cpu")
    full = gen.sample_latents(100, seed=9)
    assert torch.equal(SeededLatents(gen.draw_latents, 100, 9, 519, block=32)[0:100], full)
    with pytest.raises(ValueError, match="multiple of 16"):
        SeededLatents(gen.draw_latents, 100, 9, 519, block=24)
    # Why 16: blocks of 3 rows (1,557 values) start mid-way through torch's 16-value fill.
    g = torch.Generator().manual_seed(9)
    three = torch.cat([torch.randn(min(3, 100 - i), 519, generator=g) for i in range(0, 100, 3)])
    assert not torch.equal(three, full)


def test_the_stylegan_draw_order_continues_too():
    rows = _StyleGANRows()
    g = torch.Generator().manual_seed(4)
    full = rows.draw_latents(g, 40)
    assert torch.equal(SeededLatents(rows.draw_latents, 40, 4, 519, block=16)[0:40], full)


def test_a_run_that_cannot_fit_is_refused_with_the_estimate(monkeypatch):
    from ohlora_eval.apps import build

    monkeypatch.setattr(build, "available_memory", lambda: 24e9)
    check_memory(1_000_000, 50)  # fits in 24 GB
    with pytest.raises(ConfigError, match=r"sampling.n_vectors=10,000,000 needs about \d+\.\d GB"):
        check_memory(10_000_000, 50)
    assert memory_needed(2_000, 50) < 2e9
