"""The deterministic weight recipe of ``shared/reference/parity`` (see its README).

The parity numbers were recorded with the original networks loaded with these
weights; rebuilding them here lets the tests (and benchmarks) prove that our
networks load the published checkpoints and compute the same thing without
shipping any real weights.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import torch
from torch import nn

_PARITY_RELPATH = Path("shared/reference/parity/ohlora_v3_1_parity.json")
BLUR_KERNEL_3X3 = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0


def find_parity_file() -> Path | None:
    """The parity file: $OHLORA_PARITY_FILE, else ``shared/`` in or next to the checkout."""
    repo = Path(__file__).resolve().parents[1]
    candidates = [repo / _PARITY_RELPATH, repo.parent / _PARITY_RELPATH]
    if os.environ.get("OHLORA_PARITY_FILE"):
        candidates.insert(0, Path(os.environ["OHLORA_PARITY_FILE"]))
    return next((path for path in candidates if path.is_file()), None)


def load_parity() -> dict:
    path = find_parity_file()
    if path is None:
        raise FileNotFoundError("ohlora_v3_1_parity.json not found")
    return json.loads(path.read_text())


def recipe_tensor(key: str, like: torch.Tensor) -> torch.Tensor:
    """The recipe value for one state_dict entry (non-float tensors keep ``like``)."""
    if not like.is_floating_point():
        return like.clone()
    if key == "synthesis.lod":
        return torch.zeros_like(like)
    if key.endswith("blur.kernel"):
        return BLUR_KERNEL_3X3.expand(like.shape[0], 1, 3, 3).clone().to(like.dtype)
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    value = torch.randn(tuple(like.shape), generator=gen, dtype=torch.float32)
    if key.endswith("running_var"):
        value = value.abs() + 0.5
    elif key.endswith(".bias") or key.endswith("running_mean"):
        value = value * 0.1
    return value


def recipe_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Recipe weights for every entry of ``module.state_dict()``."""
    return {key: recipe_tensor(key, value) for key, value in module.state_dict().items()}


def write_recipe_checkpoint(module: nn.Module, path: str | Path) -> Path:
    """Save the recipe weights of ``module`` as a bare state dict (as the original saves)."""
    path = Path(path)
    torch.save(recipe_state_dict(module), path)
    return path
