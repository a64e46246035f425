"""Telling the user what a long step is doing: one line when it starts, one with its elapsed
time when it ends (on stderr, so tables on stdout stay clean). Progress bars are tqdm's;
this is for the phases between them (fitting directions, writing artifacts).

The package says things through ``logging`` (a logger per module, ``ohlora_eval.*``); the
commands show its records on the terminal as plain lines and keep them in their Hydra job
log (``apps/cli.py``). A record goes to stderr unless it is logged with ``extra=STDOUT``
(a command's result: a summary, a table). Imported into a program, the package adds no
handler: its INFO records show where the program's logging puts them.

Imports nothing of the package, so every layer can use it (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from types import MappingProxyType

log = logging.getLogger(__name__)

# ``log.info(text, extra=STDOUT)``: a record the terminal shows on stdout (a command's
# result, which a user may pipe or redirect); any other record goes to stderr.
STDOUT = MappingProxyType({"stream": "stdout"})


def say(message: str) -> None:
    """One line on stderr, prefixed ``ohlora_eval:`` (an INFO record of this module)."""
    log.info(f"ohlora_eval: {message}")


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
