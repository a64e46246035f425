"""What decides a set of fitted directions: the ``FitSpec`` schema.

One source for every fitting setting. ``apps/config.py`` registers these dataclasses
with Hydra's ConfigStore as ``directions=latest``, which both the evaluation (find
or fit the directions it needs) and ``find_directions`` (fit them) compose, so a
default ``find_directions`` fits exactly what a default evaluation looks for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ohlora_eval.errors import ConfigError, int_in, number_in
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

if TYPE_CHECKING:  # annotations only: the schema loads without torch
    from ohlora_eval.pipeline.sample import FaceSetup

METHODS = ("svm", "gradient")
PRESET_METHODS = {"mixed": {"eyes": "gradient", "mouth": "svm", "pose": "svm"}}


def resolve_methods(method: Any) -> dict[str, str]:
    """'svm' | 'gradient' | 'mixed' | {eyes: ..., mouth: ..., pose: ...} -> per property."""
    if isinstance(method, str):
        if method in PRESET_METHODS:
            return dict(PRESET_METHODS[method])
        if method in METHODS:
            return dict.fromkeys(CORE_PROPERTIES, method)
    elif isinstance(method, Mapping):
        out = {p: str(method.get(p, "")) for p in CORE_PROPERTIES}
        if all(m in METHODS for m in out.values()):
            return out
    raise ConfigError(
        f"directions.method={method!r} is not known; use svm, gradient, mixed, or a mapping"
        " such as directions.method={eyes: gradient, mouth: svm, pose: svm}"
    )


MAX_FIT_N = 10_000_000
"""More faces than a direction fit can hold in memory here (Oh-LoRA fitted with 160,000)."""


def method_label(method: Any) -> str:
    m = resolve_methods(method)
    if len(set(m.values())) == 1:
        return next(iter(m.values()))
    return "mixed" if m == resolve_methods("mixed") else ",".join(f"{k}={v}" for k, v in m.items())


@dataclass
class GradientSpec:
    """The regressor behind gradient directions (an MLP from mid vector to score)."""

    hidden: list[int] = field(default_factory=lambda: [256, 64])
    epochs: int = 15
    lr: float = 0.001
    batch_size: int = 256
    weight_decay: float = 0.0001


@dataclass
class FitSpec:
    """Everything that decides a set of fitted directions (and so its identity).

    The defaults are the evaluation's defaults: per-vector gradient directions from
    n = 20,000 sampled faces.
    """

    n: int = 20_000  # faces sampled, generated and scored
    ratio: float = 0.2  # SVM: top / bottom fraction (per group when grouped)
    method: Any = "gradient"  # svm | gradient | mixed | {eyes: .., mouth: .., pose: ..}
    grouped: bool = True  # SVM per look-alike group (16 groups) or one for all faces
    seed: int = 1_000_003  # latents for fitting (not the evaluation's)
    val_fraction: float = 0.2  # held out: SVM validation accuracy, regressor validation MSE
    svm_c: float = 1.0
    gradient: GradientSpec = field(default_factory=GradientSpec)

    def __post_init__(self) -> None:
        if isinstance(self.gradient, Mapping):
            self.gradient = GradientSpec(**dict(self.gradient))

    def spec(self) -> FitSpec:
        """Only the fitting fields (subclasses carry more)."""
        return FitSpec(
            n=self.n,
            ratio=self.ratio,
            method=self.method,
            grouped=self.grouped,
            seed=self.seed,
            val_fraction=self.val_fraction,
            svm_c=self.svm_c,
            gradient=GradientSpec(**asdict(self.gradient)),
        )

    def check(self) -> None:
        """Every field, with a message naming it (``directions.<field>``)."""
        int_in("directions.n", self.n, 20, MAX_FIT_N)
        number_in("directions.ratio", self.ratio, 0.0, 0.5, low_open=True)
        number_in("directions.val_fraction", self.val_fraction, 0.0, 1.0, high_open=True)
        int_in("directions.seed", self.seed, 0, 2**32 - 1)
        number_in("directions.svm_c", self.svm_c, 0.0, math.inf, low_open=True)
        if not isinstance(self.grouped, bool):
            raise ConfigError(f"directions.grouped={self.grouped!r} must be true or false")
        resolve_methods(self.method)
        g = self.gradient
        hidden = list(g.hidden) if isinstance(g.hidden, (list, tuple)) else None
        if hidden is None or not all(
            isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= 4096 for h in hidden
        ):
            raise ConfigError(
                f"directions.gradient.hidden={g.hidden!r} must be a list of layer widths in"
                " [1, 4096], e.g. [256, 64]"
            )
        int_in("directions.gradient.epochs", g.epochs, 1, 10_000)
        int_in("directions.gradient.batch_size", g.batch_size, 1, 1_000_000)
        number_in("directions.gradient.lr", g.lr, 0.0, 10.0, low_open=True)
        number_in("directions.gradient.weight_decay", g.weight_decay, 0.0, 10.0)

    def identity(self, faces: FaceSetup) -> dict:
        """The spec with the models, layer and (when not the clean default) the measuring
        switches it is fitted with."""
        from ohlora_eval.pipeline import fingerprint  # numpy: not for composing a config

        out = {
            "n": self.n,
            "ratio": float(self.ratio),
            "method": resolve_methods(self.method),
            "grouped": bool(self.grouped),
            "seed": self.seed,
            "val_fraction": float(self.val_fraction),
            "svm_c": float(self.svm_c),
            "gradient": asdict(self.gradient),
            "layer": faces.layer,
            "generator": fingerprint.model_identity(faces.generator),
            "scorer": fingerprint.model_identity(faces.scorer),
        }
        switches = faces.measure_settings.identity()
        if switches:
            out["measure"] = switches
        return out


@dataclass
class TrackedSpec(FitSpec):
    """The ``directions=latest`` settings: a fit's spec, plus which fitted run to use
    (``run_id``; null: the newest finished run fitted with exactly this spec, else fit one
    now unless ``fit_if_missing`` is false). ``sources.TrackedDirections`` resolves them."""

    run_id: str | None = None
    fit_if_missing: bool = True


def spec_hash(identity: Mapping[str, Any]) -> str:
    """Short fingerprint of a fit identity (the tag a direction run is found by)."""
    from ohlora_eval.pipeline.fingerprint import digest  # numpy: not for composing a config

    return digest(identity)[:20]
