"""The benchmark report's text helpers: a plain-text table, a number, a verdict.

Imports nothing of the package, so every section's report can use it.
"""

from __future__ import annotations

import numpy as np


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
    return "n/a" if x is None or not np.isfinite(x) else f"{x:,.{digits}f}"


def verdict(value: float | None, target: float, higher: bool = True) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    ok = value >= target if higher else value <= target
    return "meets target" if ok else "BELOW target" if higher else "ABOVE target"
