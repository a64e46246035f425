"""The errors that mean "the input is wrong": any package may raise them; the commands
(``apps/cli.friendly_errors``) print their message as one line and exit 2. Any other
exception is a bug of ours: its traceback is shown and the command exits 1.

Imports nothing of the package, so every layer can use it (docs/architecture.md); so can
the range checks below, which say what is wrong in the same words everywhere.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any


class UserError(ValueError):
    """A problem with the user's input; the message says what to change."""


class ConfigError(UserError):  # noqa: N818 - reads as the field it names
    """Bad configuration: the message names the field and what is allowed."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the user named is not there (still a ``FileNotFoundError`` for
    callers that catch one)."""


class Stopped(KeyboardInterrupt):
    """The process was asked to stop by a signal (SIGTERM from a scheduler or ``timeout``,
    SIGHUP): runs end as after Ctrl-C (KILLED, reason tagged, measurements kept)."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(name)
        self.signum = signum
        self.name = name


def succeeded() -> None:
    """The command's work is done and reported: from now on SIGTERM and SIGHUP are ignored,
    so the process ends as it would have, with status 0 (nothing is left to lose), not as a
    stop (``Stopped``). Ignored, not handled: Python puts its own handlers back to the
    default (death by the signal, status 143) while the interpreter shuts down, which takes
    a second with torch and MLflow loaded; an ignored signal stays ignored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """A step that must finish once begun (the files of one result being logged): SIGTERM,
    SIGHUP and SIGINT that arrive meanwhile are held and delivered as it ends, so a stop
    leaves the whole result or none of it, never a mix. (SIGKILL cannot be held.)"""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    sigs = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    before = {sig: signal.getsignal(sig) for sig in sigs}

    def hold(signum: int, _frame: object) -> None:
        held.append(signum)

    for sig in sigs:
        if before[sig] not in (signal.SIG_IGN, None):
            signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in before.items():
            if handler is not None:
                signal.signal(sig, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


def int_in(key: str, value: Any, low: int, high: int | None = None, *, hint: str = "") -> int:
    """``value`` if it is an int in [low, high] (no upper bound when None), else a
    ConfigError naming ``key``: "<key>=<value> must be an integer in [low, high]", then
    `` (<hint>)`` if one is given (what a value means, an example)."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        span = f"in [{low:,}, {high:,}]" if high is not None else f">= {low:,}"
        raise ConfigError(f"{key}={value!r} must be an integer {span}{_hint(hint)}")
    return value


def number_in(
    key: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> float:
    """``value`` if it is a finite number in the interval, else a ConfigError naming ``key``
    (then `` (<hint>)`` if one is given)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{key}={value!r} must be a number in {span}{_hint(hint)}")
    return float(value)


def _hint(hint: str) -> str:
    return f" ({hint})" if hint else ""
