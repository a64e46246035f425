"""The real-faces packages (``experiment=real_faces``): present, or a skip (a failure in CI)."""

from __future__ import annotations

import os

import pytest

FACES_PACKAGES = ("gan-face-generate", "dlib-bin", "face-recognition-models")


def real_faces_or_skip() -> None:
    """The real-faces tests need the three PyPI packages (make setup installs them). CI sets
    OHLORA_REQUIRE_FACES=1, where a missing one fails the test instead of skipping it."""
    from importlib import metadata

    missing = []
    for name in FACES_PACKAGES:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    if not missing:
        return
    why = f"real-faces packages not installed: {', '.join(missing)} (make setup installs them)"
    if os.environ.get("OHLORA_REQUIRE_FACES"):
        pytest.fail(why)
    pytest.skip(why)
