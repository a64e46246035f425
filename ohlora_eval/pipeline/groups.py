"""Oh-LoRA's look-alike groups: four properties against their medians -> e.g. "hlhh"."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ohlora_eval.pipeline.protocols import GROUP_PROPERTIES


def medians(scores: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {p: float(np.median(scores[p])) for p in GROUP_PROPERTIES}


def group_names(scores: Mapping[str, np.ndarray], med: Mapping[str, float]) -> list[str]:
    """'h' where the score is at or above the median, else 'l', in the order
    hair_color, hair_length, background_mean, hairstyle."""
    missing = [p for p in GROUP_PROPERTIES if p not in scores]
    if missing:
        raise ValueError(f"grouping needs the scorer to measure {missing}")
    cols = [np.where(np.asarray(scores[p]) >= med[p], "h", "l") for p in GROUP_PROPERTIES]
    return ["".join(chars) for chars in zip(*cols)]


def all_group_names() -> list[str]:
    return ["".join(f"{i:04b}".translate(str.maketrans("10", "hl"))) for i in range(16)]
