"""Where things are: the checkout, its configs, the reference data beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
REFERENCE = ROOT.parent / "shared" / "reference" / "ohlora_v3_1"


def reference_file(name: str) -> Path:
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference data {path} not present (../shared beside the checkout)")
    return path
