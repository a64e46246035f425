"""The deterministic weight recipe of ``shared/reference/parity`` (see its README).

The parity numbers were recorded with the original networks loaded with these
weights; rebuilding them here lets the tests (and benchmarks) prove that our
networks load the published checkpoints and compute the same thing without
shipping any real weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ohlora_eval.models.networks.recipe import recipe_value
from ohlora_eval.models.networks.recipe import write_recipe_checkpoint as write_recipe_checkpoint

_PARITY_RELPATH = Path("shared/reference/parity/ohlora_v3_1_parity.json")


def find_parity_file() -> Path | None:
    """The parity file: $OHLORA_PARITY_FILE, else ``shared/`` in or next to the checkout."""
    repo = Path(__file__).resolve().parents[2]
    candidates = [repo / _PARITY_RELPATH, repo.parent / _PARITY_RELPATH]
    if os.environ.get("OHLORA_PARITY_FILE"):
        candidates.insert(0, Path(os.environ["OHLORA_PARITY_FILE"]))
    return next((path for path in candidates if path.is_file()), None)


def load_parity() -> dict:
    path = find_parity_file()
    if path is None:
        raise FileNotFoundError("ohlora_v3_1_parity.json not found")
    return json.loads(path.read_text())


# The recipe itself lives in the package (the benchmark uses it too).
recipe_tensor = recipe_value


def recipe_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Recipe weights for every entry of ``module.state_dict()``."""
    return {key: recipe_value(key, value) for key, value in module.state_dict().items()}
