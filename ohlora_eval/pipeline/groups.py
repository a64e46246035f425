"""Look-alike groups: each grouping property against its median -> e.g. "hlhh".

Which properties group the faces is the scorer's to say (``group_properties``; Oh-LoRA's
four, ``GROUP_PROPERTIES``, when it says nothing): k of them give 2^k groups, named by one
letter per property in that order, "h" at or above the median, else "l".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ohlora_eval.pipeline.protocols import GROUP_PROPERTIES


def group_properties(scorer: object) -> tuple[str, ...]:
    """The properties that group a scorer's faces (in the order of the group names' letters)."""
    return tuple(getattr(scorer, "group_properties", GROUP_PROPERTIES))


def can_group(scorer: object) -> bool:
    """Whether the scorer measures every property it groups by (and has at least one)."""
    props = group_properties(scorer)
    return bool(props) and all(p in getattr(scorer, "properties", ()) for p in props)


def medians(
    scores: Mapping[str, np.ndarray], props: Sequence[str] = GROUP_PROPERTIES
) -> dict[str, float]:
    """Each grouping property's median over the faces where it was measured (NaN: not)."""
    return {p: float(np.nanmedian(np.asarray(scores[p]))) for p in props}


def group_names(
    scores: Mapping[str, np.ndarray],
    med: Mapping[str, float],
    props: Sequence[str] = GROUP_PROPERTIES,
) -> list[str]:
    """'h' where the score is at or above the median, else 'l' (an unmeasured score, NaN,
    is 'l'), one letter per property of ``props`` in that order."""
    missing = [p for p in props if p not in scores]
    if missing:
        raise ValueError(f"grouping needs the scorer to measure {missing}")
    cols = [np.where(np.asarray(scores[p]) >= med[p], "h", "l") for p in props]
    return ["".join(chars) for chars in zip(*cols)]


def all_group_names(k: int = len(GROUP_PROPERTIES)) -> list[str]:
    """Every group name of ``k`` grouping properties: 2^k names from all 'l' to all 'h'."""
    return [format(i, f"0{k}b").translate(str.maketrans("10", "hl")) for i in range(2**k)]
