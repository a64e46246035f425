"""Shared behaviour of the command-line apps: one-line errors, non-zero exits."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


class UserError(ValueError):
    """A problem with the user's input; the message says what to change."""


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn bad input into a one-line message and exit status 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            print("\nohlora_eval: interrupted; what was measured is kept.", file=sys.stderr)
            sys.exit(130)
        except (ValueError, FileNotFoundError, KeyError) as exc:
            print(f"ohlora_eval: error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper
