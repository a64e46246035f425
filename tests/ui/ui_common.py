"""Constants and plain helpers of the UI tests (a module of its own: a conftest is not for
importing)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SHOTS = Path(os.environ.get("OHLORA_UI_SHOTS", "/tmp/ui_shots"))
CUTOFFS = ("0.88", "0.9", "0.92")  # the sweep's points (cutoff.eyes)


def keep_shot(src: Path, name: str) -> Path:
    """Copy a screenshot to ``SHOTS`` and say where both are."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    dest = SHOTS / name
    shutil.copyfile(src, dest)
    print(f"\nscreenshot: {src} (and {dest})")
    return dest
