"""Shared behaviour of the command-line apps: one-line errors, non-zero exits."""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from ohlora_eval.apps.config import CONFIG_DIR
from ohlora_eval.errors import Stopped, UserError

__all__ = ["CONFIG_DIR", "UserError", "friendly_errors"]


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn bad input into a one-line message and exit status 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _stop_on_signals()
        try:
            return fn(*args, **kwargs)
        except Stopped as stop:
            print(
                f"\nohlora_eval: stopped by {stop.name}; what was measured is kept.",
                file=sys.stderr,
            )
            sys.exit(128 + stop.signum)
        except KeyboardInterrupt:
            print("\nohlora_eval: interrupted; what was measured is kept.", file=sys.stderr)
            sys.exit(130)
        except (ValueError, FileNotFoundError, KeyError) as exc:
            print(f"ohlora_eval: error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP end a command like Ctrl-C does (schedulers such as SLURM,
    Kubernetes and ``timeout`` stop jobs with SIGTERM): the run is marked KILLED with the
    signal's name, the measurements are kept, and the exit status is 128 + the signal."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signum, signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
