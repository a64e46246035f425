"""Debian's Chromium for the browser tests (tests/review, tests/ui); never a browser
downloaded by playwright."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("OHLORA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def playwright_or_skip(what: str):
    """Playwright's ``sync_playwright``, or a skip saying what ``what`` needs."""
    how = (
        "install them with `apt-get install -y chromium` (Debian) and"
        " `.venv/bin/pip install playwright` (or `pip install -e '.[browser]'`);"
        " never `playwright install`, which downloads its own browser"
    )
    if os.environ.get("OHLORA_TEST_TIER") == "fast":  # a browser is a subprocess
        pytest.skip("starts a browser: make test runs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"{what} needs the playwright package: {how}")
    if not CHROMIUM.is_file():
        pytest.skip(f"{what} needs Chromium at {CHROMIUM}: {how}")
    return sync_playwright
