"""How images are measured: ``MeasureSettings``, the schema of the ``measure`` config group
(``measure=default``; ``measure=as_published`` sets the original's four switches).

They travel whole, as ``EditSetup.measure_settings`` (a screening) or
``FaceSetup.measure_settings`` (a direction fit); ``pipeline/fidelity.py`` applies the four
switches, ``pipeline/device.py`` the speed switches.

Oh-LoRA v3.1's test differs from a clean measurement in four ways, each a switch
here (defaults: the clean measurement):

- ``scorer_mode``: ``eval`` | ``train``. The original never put its property CNN
  in eval mode, so its dropout layers were active while scoring and its scores
  (and r) partly random. ``train`` does the same; ``dropout_seed`` fixes the draws
  (per vector, from the seed and the vector's case number, so any chunking or
  re-measurement of that vector draws the same).
- ``round_trip``: ``none`` | ``png`` | ``jpeg``. The original wrote each image as a
  JPEG with OpenCV (quality 95, 4:2:0) and scored the file read back. ``jpeg``
  encodes and decodes with OpenCV (``opencv-python-headless``); ``png`` is the
  lossless control.
- ``edit_dtype``: ``float32`` | ``float64``. The original added float64 directions
  (read from CSV) to the mid vector and cast the sum to float32.
- ``score_decimals``: ``null`` | ``4``. The original rounded each float32 score before
  r (applied when judging: the stored scores stay as measured).

Speed switches (``pipeline/device.py`` applies them; all off by default, so results
are unchanged unless asked): ``precision`` (``fp32`` | ``bf16`` | ``fp16`` autocast of
synthesis and scoring), ``channels_last``, ``compile`` (``torch.compile``), and on
CUDA ``tf32`` and ``deterministic`` (null: on for fp32). Each one that is not at its
default enters the measurement key, so a float32 result is never re-used for a bf16 run.

Pure computation (no MLflow, Hydra or OmegaConf); docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ohlora_eval.errors import ConfigError, UserError, int_in

if TYPE_CHECKING:
    import torch

SCORER_MODES = ("eval", "train")
ROUND_TRIPS = ("none", "png", "jpeg")
EDIT_DTYPES = ("float32", "float64")
PRECISIONS = ("fp32", "bf16", "fp16")  # pipeline/device.py maps them to dtypes
SPEED_SWITCHES = ("precision", "channels_last", "compile", "tf32", "deterministic")


@dataclass
class MeasureSettings:
    """How images are measured (the ``measure`` config group; its schema and defaults)."""

    scorer_mode: str = "eval"  # eval | train (dropout on while scoring, as the original)
    dropout_seed: int = 0  # train mode: the dropout draws come from this seed and the case
    round_trip: str = "none"  # none | png | jpeg (written and read back as the original did)
    jpeg_quality: int = 95  # the original's OpenCV default
    edit_dtype: str = "float32"  # float32 | float64 (the original's float64 edit, then cast)
    score_decimals: int | None = None  # null | 4 (the original rounded scores before r)
    # Speed switches (pipeline/device.py); off by default: the numbers stay float32's.
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast of synthesis and scoring
    channels_last: bool = False  # convolution networks and their inputs in NHWC layout
    compile: bool = False  # torch.compile the networks (the first call pays the compile)
    tf32: bool = False  # CUDA: TF32 matrix products and convolutions (faster, other bits)
    deterministic: bool | None = None  # CUDA: deterministic kernels (null: on for fp32)

    def checked(self) -> MeasureSettings:
        def one_of(key: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, key)
            if value not in allowed:
                raise ConfigError(f"measure.{key}={value!r} is not one of {', '.join(allowed)}")

        one_of("scorer_mode", SCORER_MODES)
        one_of("round_trip", ROUND_TRIPS)
        one_of("edit_dtype", EDIT_DTYPES)
        one_of("precision", PRECISIONS)
        for key in ("channels_last", "compile", "tf32"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"measure.{key}={getattr(self, key)!r} must be true or false")
        if self.deterministic is not None and not isinstance(self.deterministic, bool):
            raise ConfigError(
                f"measure.deterministic={self.deterministic!r} must be null (on for fp32),"
                " true or false"
            )
        int_in("measure.jpeg_quality", self.jpeg_quality, 1, 100)
        if self.score_decimals is not None:  # null: the scores as measured
            int_in("measure.score_decimals", self.score_decimals, 0, 12)
        if self.round_trip == "jpeg":
            opencv()  # fail now, not after the models are built
        return self

    @property
    def train(self) -> bool:
        return self.scorer_mode == "train"

    @property
    def edit_torch_dtype(self) -> torch.dtype:
        import torch  # here, not at the top: the schema loads without torch (--help)

        return torch.float64 if self.edit_dtype == "float64" else torch.float32

    def identity(self) -> dict | None:
        """What decides the measured scores beyond the clean default (None when clean).

        ``score_decimals`` is left out: it is applied when judging, not when measuring.
        The speed switches are left out too: they are ``speed_identity`` (the measurement
        key holds both; a direction fit, which runs in float32, only this one).
        """
        clean = MeasureSettings()
        out = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("score_decimals", "dropout_seed", "jpeg_quality", *SPEED_SWITCHES)
            and v != getattr(clean, k)
        }
        if self.train:
            out["dropout_seed"] = int(self.dropout_seed)
        if self.round_trip == "jpeg":
            out["jpeg_quality"] = int(self.jpeg_quality)
        return out or None

    def speed_identity(self) -> dict | None:
        """The speed switches that are not at their defaults (None when all are): each can
        change the last bits of the scores, so each is part of the measurement key."""
        clean = MeasureSettings()
        out = {k: getattr(self, k) for k in SPEED_SWITCHES if getattr(self, k) != getattr(clean, k)}
        return out or None


def opencv():
    try:
        import cv2
    except ImportError:
        raise UserError(
            "measure.round_trip=jpeg needs OpenCV, the library the original wrote its files"
            " with: pip install opencv-python-headless (or pip install -e '.[fidelity]')"
        ) from None
    return cv2
