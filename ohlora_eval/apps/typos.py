"""A misspelt key or config group option names the nearest ones: "unknown key cutoff.eyse;
did you mean cutoff.eyes?" (Hydra's own advice, to append the key with +, is wrong for a
typo). Used by ``apps/cli.config_error_line`` for every command."""

from __future__ import annotations

import re
from collections.abc import Iterable

from omegaconf.errors import ConfigAttributeError, ConfigKeyError


def edit_distance(a: str, b: str) -> int:
    """The fewest inserted, deleted or changed characters, or swapped neighbours, that turn
    ``a`` into ``b`` (optimal string alignment: a typed "eyse" is 1 from "eyes")."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(
                d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])
            )
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def closest(word: str, known: Iterable[str]) -> list[str]:
    """The known names nearest ``word`` by edit distance (at most a third of its length,
    and at least 2, apart), nearest first."""
    limit = max(2, len(word) // 3)
    scored = sorted((edit_distance(word, k), k) for k in set(known) if k != "hydra")
    return [k for d, k in scored if d <= limit and d == scored[0][0]]


def unknown_key_line(exc: BaseException) -> str | None:
    """ "unknown key cutoff.eyse; did you mean cutoff.eyes?" for an override naming a key
    the config lacks (Hydra's own advice, to append it with +, is wrong for a typo); None
    for any other error."""
    said = re.search(r"Could not override '([^']+)'", str(exc))
    seen: BaseException | None = exc
    while seen is not None:
        parent = getattr(seen, "parent_node", None)
        key = getattr(seen, "key", None)
        if isinstance(seen, (ConfigKeyError, ConfigAttributeError)) and parent is not None:
            asked = said.group(1) if said else str(getattr(seen, "full_key", key))
            failing = str(getattr(seen, "full_key", None) or key)
            head, rest = failing.rpartition(".")[0], asked[len(failing) :]
            prefix = f"{head}." if head else ""
            try:
                known = [str(k) for k in parent.keys()]
            except Exception:  # noqa: BLE001 - a node without keys: no suggestion
                known = []
            near = [f"{prefix}{k}{rest}" for k in closest(str(key), known)]
            line = f"unknown key {asked}"
            if near:
                return f"{line}; did you mean {' or '.join(near)}?"
            keys = ", ".join(k for k in known if k != "hydra")
            return f"{line}; {head or 'the config'} has {keys}" if keys else line
        seen = seen.__cause__
    return None


def unknown_option_line(exc: BaseException) -> str | None:
    """ "generator=synthetc is not an option; did you mean generator=synthetic?" for a
    config group option Hydra cannot find (its message lists the options over lines)."""
    text = str(exc)
    found = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    listed = text.split("Available options in", 1)
    if not found or len(listed) < 2:
        return None
    group, option = found.groups()
    options = [ln.strip() for ln in listed[1].split("Config search path:")[0].splitlines()[1:]]
    options = [o for o in options if o]
    near = closest(option, options)
    hint = f"did you mean {' or '.join(f'{group}={o}' for o in near)}" if near else ""
    return (
        f"{group}={option} is not an option of {group}; {hint + '; ' if hint else ''}"
        f"options: {', '.join(options)}"
    )
