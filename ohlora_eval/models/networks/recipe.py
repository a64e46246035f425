"""Deterministic "recipe" weights for the Oh-LoRA networks (parity tests and benchmarks).

Why: the benchmark times the real StyleGAN-FineTune-v9 generator and merged
property CNN through their real loading path (a ``.pth`` file read with
``weights_only=True``), but the published weights are not shipped. The recipe
of ``shared/reference/parity`` (its README) gives every state-dict entry a value
that depends only on its key, so the networks compute finite, realistic-sized
activations, the parity tests can compare with the recorded numbers, and every
benchmark run times the same arithmetic.

The recipe, per floating-point entry ``key`` of shape ``s``:

* ``synthesis.lod`` -> zeros (full resolution);
* ``*blur.kernel`` -> the 3x3 binomial kernel ``[1 2 1]^T [1 2 1] / 16`` per channel;
* otherwise ``torch.randn(s)`` from ``torch.Generator().manual_seed(crc32(key))``,
  then ``abs() + 0.5`` for ``running_var``, ``* 0.1`` for ``.bias`` and ``running_mean``.

Integer entries (e.g. BatchNorm's ``num_batches_tracked``) keep their value.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch
from torch import nn


def _binomial_3x3() -> torch.Tensor:
    taps = torch.tensor([1.0, 2.0, 1.0])
    return torch.outer(taps, taps) / taps.sum() ** 2


def recipe_value(key: str, current: torch.Tensor) -> torch.Tensor:
    """The recipe's value for the state-dict entry ``key`` (shaped like ``current``)."""
    if not current.is_floating_point():
        return current.clone()
    if key == "synthesis.lod":
        return torch.zeros_like(current)
    if key.endswith("blur.kernel"):
        kernel = _binomial_3x3().to(current.dtype)
        return kernel.expand(current.shape[0], 1, 3, 3).clone()
    seeded = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    value = torch.randn(tuple(current.shape), generator=seeded, dtype=torch.float32)
    if key.endswith("running_var"):
        return value.abs() + 0.5
    if key.endswith((".bias", "running_mean")):
        return value * 0.1
    return value


def write_recipe_checkpoint(module: nn.Module, path: str | Path) -> Path:
    """Save recipe weights for every entry of ``module`` as a bare state dict at ``path``."""
    path = Path(path)
    state = {key: recipe_value(key, value) for key, value in module.state_dict().items()}
    torch.save(state, path)
    return path
