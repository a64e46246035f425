"""Telling the user what a long step is doing: one line when it starts, one with its elapsed
time when it ends (on stderr, so tables on stdout stay clean). Progress bars are tqdm's;
this is for the phases between them (fitting directions, writing artifacts).

Imports nothing of the package, so every layer can use it (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


def say(message: str) -> None:
    """One line on stderr, prefixed ``ohlora_eval:``."""
    print(f"ohlora_eval: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def phase(what: str) -> Iterator[None]:
    """``with phase("fitting directions"):`` says ``fitting directions ...`` now and
    ``fitting directions: 12.3 s`` when the block ends (or ``... stopped after`` on error)."""
    say(f"{what} ...")
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        say(f"{what}: stopped after {time.perf_counter() - start:.1f} s")
        raise
    say(f"{what}: {time.perf_counter() - start:.1f} s")
