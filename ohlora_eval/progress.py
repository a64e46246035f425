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
import threading
import time
from collections.abc import Iterator
from types import MappingProxyType

log = logging.getLogger(__name__)

# ``log.info(text, extra=STDOUT)``: a record the terminal shows on stdout (a command's
# result, which a user may pipe or redirect); any other record goes to stderr.
STDOUT = MappingProxyType({"stream": "stdout"})


_quiet = 0  # > 0 inside ``quiet()``


def say(message: str, *, always: bool = False) -> None:
    """One line on stderr, prefixed ``ohlora_eval:`` (an INFO record of this module); inside
    ``quiet()`` only where ``always`` (a phase begun before it)."""
    if always or not _quiet:
        log.info(f"ohlora_eval: {message}")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Inside, progress lines are not said (a re-test's repetitions, each a screening: its
    own phase over all of them speaks instead). Results and warnings are not affected."""
    global _quiet
    _quiet += 1
    try:
        yield
    finally:
        _quiet -= 1


HEARTBEAT_S = 5.0
"""A long step says where it is at least this often (seconds)."""


class Step:
    """A running ``phase``: ``advance(k)`` when k of its ``total`` units are done."""

    def __init__(self, what: str, total: int | None, unit: str) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.done = 0
        self.start = self._counting_since = time.perf_counter()

    def count(self, total: int, unit: str) -> None:
        """From now on the step counts ``total`` ``unit`` (the time left is estimated from
        the rate since now: work before this is not counted)."""
        self.total, self.unit, self.done = total, unit, 0
        self._counting_since = time.perf_counter()

    def advance(self, k: int = 1) -> None:
        self.done += k

    def line(self) -> str:
        """``<what>: 12 s, 40 of 300 sheets, about 78 s left`` (what is known of it)."""
        took = time.perf_counter() - self.start
        text = f"{self.what.rstrip()}: {took:.0f} s"
        if self.total:
            text += f", {self.done:,} of {self.total:,} {self.unit}".rstrip()
            if 0 < self.done < self.total:
                rate = (time.perf_counter() - self._counting_since) / self.done
                text += f", about {rate * (self.total - self.done):.0f} s left"
        return text


@contextlib.contextmanager
def phase(
    what: str, total: int | None = None, unit: str = "", every_s: float = HEARTBEAT_S
) -> Iterator[Step]:
    """``with phase("fitting directions") as step:`` says ``fitting directions ...`` now,
    then every ``every_s`` seconds how long it has run (with ``total``, how many ``unit`` of
    it ``step.advance()`` has counted and about how long is left), and
    ``fitting directions: 12.3 s`` when the block ends (or ``... stopped after`` on error).
    No step of a command is silent for longer than ``every_s``. A phase begun inside
    ``quiet()`` says nothing; one begun before it goes on speaking."""
    loud = not _quiet

    def speak(message: str) -> None:
        if loud:
            say(message, always=True)

    speak(f"{what} ...")
    step = Step(what, total, unit)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            speak(step.line())

    ticker = threading.Thread(target=beat, name="ohlora-heartbeat", daemon=True)
    ticker.start()
    try:
        yield step
    except BaseException:
        stop.set()
        speak(f"{what}: stopped after {time.perf_counter() - step.start:.1f} s")
        raise
    finally:
        stop.set()
        ticker.join()
    speak(f"{what}: {time.perf_counter() - step.start:.1f} s")
