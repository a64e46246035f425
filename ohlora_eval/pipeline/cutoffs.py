"""The cutoffs a vector must clear: ``Cutoffs``, the ``cutoff`` config group's typed form.

Light on purpose (no numpy or pandas): the config schemas import it before Hydra composes
a command line, ``--help`` included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ohlora_eval.errors import ConfigError, number_in
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

IDENTITY_CUTOFF_HINT = (
    "the largest allowed identity distance, e.g. 0.6 (dlib's same person); null = off"
)


@dataclass
class Cutoffs:
    """The ``cutoff`` config group's typed form (its schema in the ConfigStore): a vector
    passes when |r| >= each of ``eyes``, ``mouth``, ``pose`` and, when ``identity`` is set,
    its identity distance is at most ``identity``. Checked here, once, when made."""

    eyes: float
    mouth: float
    pose: float
    identity: float | None = None  # null: identity does not decide (the default)

    def __post_init__(self) -> None:
        for p in CORE_PROPERTIES:
            setattr(self, p, _r_cutoff(p, getattr(self, p)))
        if self.identity is not None:
            self.identity = number_in(
                "cutoff.identity", self.identity, 0, 10, low_open=True, hint=IDENTITY_CUTOFF_HINT
            )

    @classmethod
    def of(cls, cutoffs: Mapping[str, Any] | Cutoffs) -> Cutoffs:
        """``cutoffs`` (a config node, a dict, a recorded run's) checked; as is when typed."""
        if isinstance(cutoffs, Cutoffs):
            return cutoffs
        for p in CORE_PROPERTIES:
            if p not in cutoffs:
                raise ConfigError(
                    f"cutoff.{p} is missing; set a value in [0, 1], e.g. cutoff.{p}=0.9"
                )
        extra = cutoffs.get("identity") if hasattr(cutoffs, "get") else None
        return cls(*(cutoffs[p] for p in CORE_PROPERTIES), identity=extra)

    def core(self) -> dict[str, float]:
        """The three r cutoffs, by property."""
        return {p: getattr(self, p) for p in CORE_PROPERTIES}

    def as_dict(self) -> dict[str, float]:
        """eyes, mouth, pose and (when set) identity: what a run logs and judges with."""
        out = {p: getattr(self, p) for p in CORE_PROPERTIES}
        if self.identity is not None:
            out["identity"] = self.identity
        return out


def _r_cutoff(p: str, raw: Any) -> float:
    """``cutoff.<p>`` as a float in [0, 1], or a ConfigError naming it."""
    if raw is None or isinstance(raw, bool):
        shown = "null" if raw is None else raw
        raise ConfigError(f"cutoff.{p}={shown} must be a number in [0, 1], e.g. cutoff.{p}=0.9")
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"cutoff.{p}={raw!r} is not a number; set a value in [0, 1], e.g. cutoff.{p}=0.9"
        ) from None
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"cutoff.{p}={v} is outside [0, 1]; |r| can only be in [0, 1]")
    return v


def check_cutoffs(cutoffs: Mapping[str, Any] | Cutoffs) -> dict[str, float]:
    """``Cutoffs.of(cutoffs).as_dict()``: the checked cutoffs as a dict."""
    return Cutoffs.of(cutoffs).as_dict()


def identity_cutoff(cutoffs: Mapping[str, float]) -> float | None:
    """The largest allowed identity distance of checked ``cutoffs``, or None (off)."""
    value = cutoffs.get("identity")
    return None if value is None else float(value)
