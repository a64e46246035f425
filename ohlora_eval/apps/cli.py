"""Shared behaviour of the command-line apps: one-line errors, non-zero exits."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from ohlora_eval.apps.config import CONFIG_DIR
from ohlora_eval.errors import UserError

__all__ = ["CONFIG_DIR", "UserError", "friendly_errors"]


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
