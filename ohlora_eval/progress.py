"""Telling the user what a long step is doing: one line when it starts, one with its elapsed
time when it ends (on stderr, so tables on stdout stay clean), and in between, at least every
``HEARTBEAT_S`` seconds, how far it is and about how long is left. On a terminal a counted
step may show a bar instead (``Bar``, tqdm's, or ``counting``, which picks one).

Time left, everywhere (``Eta``): from a smoothed rate as tqdm's (an exponential moving
average of the seconds each unit took, the first units left out as warm-up), counted down
between updates, so an estimate falls while work goes on instead of growing.

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
import sys
import threading
import time
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

from tqdm import tqdm

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


HEARTBEAT_S = 4.0
"""A long step says where it is at least this often (seconds): under 5 s, with room for a
busy machine's late thread wake-ups, so no output is silent for 5 s."""

SMOOTHING = 0.1
"""Weight of the newest update in the rate behind a time left (tqdm's ``smoothing``, whose
default is 0.3: on this project's shared 2-core machine, units that vary by +-25-50 % made
0.3's estimates jump up three to five times as often as 0.1's in simulation)."""


def duration(seconds: float) -> str:
    """``42 s``, ``7 min 05 s``, ``2 h 03 min`` (a time left, rounded as it is meant)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Eta:
    """About how many seconds are left of ``total`` units, told ``update(done, now)`` as units
    finish.

    The rate is tqdm's: an exponential moving average of the seconds per unit of each
    update (``smoothing``: the newest update's weight; bias-corrected as tqdm's, so the first
    update is not averaged with a zero), with updates less than ``min_interval_s`` apart taken
    together. The units done by the first update are warm-up (models and caches warming, a
    pool starting) and left out of the rate: the rate counts from there. Between updates the
    estimate counts down (the unit under way is time already spent), but never below what the
    units not yet begun take at that rate; it holds there until the next update. No estimate
    (None) before the rate has seen ``min_units`` units past the warm-up (one short unit is
    no rate), or when nothing is left to count.

    What ``left`` gives is the estimate it gave last, counted down, for as long as that
    stays within ``tolerance`` (a share) of the current estimate; else the current one. So
    the noise of a shared machine does not make it jump up and down, and it is never further
    than ``tolerance`` from the smoothed rate's estimate."""

    def __init__(
        self,
        total: int | None,
        smoothing: float = SMOOTHING,
        min_interval_s: float = 0.1,
        tolerance: float = 0.15,
        min_units: int = 3,
        now: float | None = None,
    ) -> None:
        self.total = total or 0
        self.smoothing, self.min_interval_s, self.tolerance = smoothing, min_interval_s, tolerance
        self.min_units = min_units
        self._counted = 0  # units the rate has seen (after the warm-up)
        self.done = 0
        self._last = time.perf_counter() if now is None else now  # the last update's time
        self._base: tuple[float, int] | None = None  # (time, done) the rate counts from
        self._ema, self._calls = 0.0, 0
        self._given: tuple[float, float] | None = None  # (what left() gave, when)
        self._lock = threading.Lock()

    def update(self, done: int, now: float | None = None) -> None:
        """``done`` units are finished (a running count) at ``now`` (perf_counter seconds)."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            if done <= self.done:
                return
            self.done, self._last = done, now
            if self._base is None:  # the warm-up's end: the rate counts from here
                self._base = (now, done)
                return
            t0, d0 = self._base
            if now - t0 < self.min_interval_s:
                return
            per_unit = (now - t0) / (done - d0)
            self._ema = self.smoothing * per_unit + (1 - self.smoothing) * self._ema
            self._calls += 1
            self._counted += done - d0
            self._base = (now, done)

    def seconds_per_unit(self) -> float | None:
        """The smoothed seconds per unit (None before ``min_units`` past the warm-up)."""
        with self._lock:
            if not self._calls or self._counted < self.min_units:
                return None
            return self._ema / (1 - (1 - self.smoothing) ** self._calls)

    def estimate(self, now: float | None = None) -> float | None:
        """The smoothed rate's estimate of the seconds left at ``now`` (None: not known yet,
        or all done)."""
        now = time.perf_counter() if now is None else now
        per_unit = self.seconds_per_unit()
        with self._lock:
            todo, since = self.total - self.done, now - self._last
        if per_unit is None or todo <= 0:
            return None
        return max(per_unit * todo - since, per_unit * (todo - 1))

    def left(self, now: float | None = None) -> float | None:
        """About how many seconds are left at ``now``, as shown: the last one given, counted
        down, while within ``tolerance`` of ``estimate``; else ``estimate``."""
        now = time.perf_counter() if now is None else now
        fresh = self.estimate(now)
        with self._lock:
            if fresh is None:
                self._given = None
                return None
            if self._given is not None:
                value, at = self._given
                held = value - (now - at)
                if held > 0 and abs(fresh - held) <= self.tolerance * held:
                    return held
            self._given = (fresh, now)
            return fresh


class Step:
    """A running ``phase``: ``advance(k)`` when k of its ``total`` units are done; ``note``
    (e.g. a speed) is added to its lines."""

    def __init__(self, what: str, total: int | None, unit: str) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.done = 0
        self.note = ""
        self.start = time.perf_counter()
        self.eta = Eta(total, now=self.start)

    def count(self, total: int, unit: str) -> None:
        """From now on the step counts ``total`` ``unit`` (the time left is estimated from
        the rate since now: work before this is not counted)."""
        self.total, self.unit, self.done = total, unit, 0
        self.eta = Eta(total)

    def advance(self, k: int = 1) -> None:
        self.done += k
        self.eta.update(self.done)

    def line(self) -> str:
        """``<what>: 12 s, 40 of 300 sheets, about 1 min 18 s left`` (what is known of it)."""
        took = time.perf_counter() - self.start
        text = f"{self.what.rstrip()}: {took:.0f} s"
        if self.total:
            text += f", {self.done:,} of {self.total:,} {self.unit}".rstrip()
            left = self.eta.left() if self.done < self.total else None
            if left is not None:
                text += f", about {duration(left)} left" if left >= 1 else ", under 1 s left"
        if self.note:
            text += f" ({self.note})"
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


BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{left}, {rate_fmt}{postfix}]"
"""tqdm's own layout, with this module's time left (``Eta``) in place of tqdm's."""


class Bar(tqdm):
    """A tqdm bar whose time left is an ``Eta``'s (smoothed, counting down between updates:
    the same estimate as a ``phase``'s lines), redrawn by a thread at least every second on
    a terminal (every ``HEARTBEAT_S`` elsewhere), so it never stands still while a long unit
    runs (``every_s``: how often instead). Drawing it counts as saying something
    (``starting`` stops)."""

    def __init__(self, *args: Any, every_s: float | None = None, **kwargs: Any) -> None:
        self.eta = Eta(kwargs.get("total"))  # before tqdm's __init__: it draws the bar
        kwargs.setdefault("bar_format", BAR_FORMAT)
        self._stop = threading.Event()
        super().__init__(*args, **kwargs)
        if self.disable:
            return
        _spoke()
        every = every_s or (1.0 if _isatty(self.fp) else HEARTBEAT_S)
        self._ticker = threading.Thread(
            target=self._tick, args=(every,), name="ohlora-bar", daemon=True
        )
        self._ticker.start()

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            self.refresh()

    def update(self, n: float | None = 1) -> bool | None:
        self.eta.update(int(self.n + (n or 0)))
        return super().update(n)

    @property
    def format_dict(self) -> dict[str, Any]:
        d = super().format_dict
        left = self.eta.left() if hasattr(self, "eta") else None
        d["left"] = "?" if left is None else tqdm.format_interval(left)
        return d

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            ticker = getattr(self, "_ticker", None)
            if ticker is not None and ticker is not threading.current_thread():
                ticker.join()
        super().close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def on_terminal() -> bool:
    """Whether stderr is a terminal (a bar there; piped or in a file, lines instead)."""
    return _isatty(sys.stderr)


class Counted:
    """What ``counting`` yields: ``advance(k, note)`` moves its bar or its phase's count on
    (``note``: e.g. a speed, shown after the count; None: as it was)."""

    def __init__(self, bar: Bar | None, step: Step | None) -> None:
        self.bar, self.step = bar, step

    def advance(self, k: int = 1, note: str | None = None) -> None:
        if self.bar is not None:
            if note is not None:
                self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(k)
        if self.step is not None:
            if note is not None:
                self.step.note = note
            self.step.advance(k)


@contextlib.contextmanager
def counting(
    what: str,
    total: int,
    unit: str,
    *,
    show: bool = True,
    bar: str = "",
    bar_unit: str = "",
    leave: bool = True,
) -> Iterator[Counted]:
    """A counted step shown on a terminal as a bar (``Bar``: ``bar`` its name, ``bar_unit``
    its unit) and elsewhere (a pipe, a log file) as a ``phase``'s lines: ``what ...``, then at
    least every ``HEARTBEAT_S`` seconds how many ``unit`` are done and about how long is left,
    then its time. ``show=False``: nothing shown."""
    if not show:
        yield Counted(None, None)
    elif on_terminal():
        with Bar(
            total=total, desc=bar or what, unit=bar_unit or unit, leave=leave, dynamic_ncols=True
        ) as shown:
            yield Counted(shown, None)
    else:
        with phase(what, total=total, unit=unit) as step:
            yield Counted(None, step)


_listening: list[threading.Event] = []  # the open ``starting`` blocks' "something was said"


def _spoke() -> None:
    for heard in list(_listening):
        heard.set()


class _Heard(logging.Handler):
    """Any record of the package but ``starting``'s own: something was said."""

    def __init__(self, heard: threading.Event) -> None:
        super().__init__()
        self.heard = heard

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "starting", False):
            self.heard.set()


@contextlib.contextmanager
def starting(what: str, first_s: float = 1.5, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """A command's start, before it has anything to say (imports, the store, the models):
    when nothing was said for ``first_s`` seconds, ``<what> ...``, then ``starting: 7 s``
    every ``every_s`` seconds, until the command says its first line or draws a bar (a
    command that speaks at once never shows it)."""
    heard = threading.Event()
    handler = _Heard(heard)
    pkg = logging.getLogger("ohlora_eval")
    pkg.addHandler(handler)
    _listening.append(heard)
    t0 = time.perf_counter()
    mark = {"starting": True}

    def watch() -> None:
        if heard.wait(first_s) or _quiet:
            return
        log.info(f"ohlora_eval: {what} ...", extra=mark)
        while not heard.wait(every_s) and not heard.is_set():
            log.info(f"ohlora_eval: starting: {time.perf_counter() - t0:.0f} s", extra=mark)

    watcher = threading.Thread(target=watch, name="ohlora-starting", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        heard.set()
        watcher.join()
        _listening.remove(heard)
        pkg.removeHandler(handler)
