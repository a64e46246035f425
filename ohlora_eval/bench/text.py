"""The benchmark's output helpers: a plain-text table, a number, a verdict, plain JSON.

Standard library only and nothing of the package, so every section's report can use it,
and so can ``device_report`` (which must run even where the setup failed).
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def table(rows: list[list[str]], indent: str = "  ") -> str:
    """Left-aligned first column, right-aligned numbers, a rule under the header row."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append(indent + "  ".join(cells).rstrip())
        if k == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def num(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:,.{digits}f}"


def verdict(value: float | None, target: float, higher: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    ok = value >= target if higher else value <= target
    return "meets target" if ok else "BELOW target" if higher else "ABOVE target"


def plain_json(obj: Any) -> Any:
    """Plain JSON: numpy scalars as numbers, NaN/inf as null (strict parsers reject NaN),
    anything else JSON has no type for as its text."""
    if isinstance(obj, dict):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_json(v) for v in obj]
    if isinstance(obj, numbers.Number) and hasattr(obj, "item"):  # a numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)
