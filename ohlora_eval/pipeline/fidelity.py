"""Measuring as the original measured: the four switches of the ``measure`` settings.

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

import contextlib
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

SCORER_MODES = ("eval", "train")
ROUND_TRIPS = ("none", "png", "jpeg")
EDIT_DTYPES = ("float32", "float64")
PRECISIONS = ("fp32", "bf16", "fp16")  # as pipeline.device.PRECISIONS
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
                raise ValueError(f"measure.{key}={value!r} is not one of {', '.join(allowed)}")

        one_of("scorer_mode", SCORER_MODES)
        one_of("round_trip", ROUND_TRIPS)
        one_of("edit_dtype", EDIT_DTYPES)
        one_of("precision", PRECISIONS)
        for key in ("channels_last", "compile", "tf32"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"measure.{key}={getattr(self, key)!r} must be true or false")
        if self.deterministic is not None and not isinstance(self.deterministic, bool):
            raise ValueError(
                f"measure.deterministic={self.deterministic!r} must be null (on for fp32),"
                " true or false"
            )
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"measure.jpeg_quality={self.jpeg_quality} must be in 1..100")
        if self.score_decimals is not None and not 0 <= int(self.score_decimals) <= 12:
            raise ValueError(
                f"measure.score_decimals={self.score_decimals} must be null or in 0..12"
            )
        if self.round_trip == "jpeg":
            _cv2()  # fail now, not after the models are built
        return self

    @property
    def train(self) -> bool:
        return self.scorer_mode == "train"

    @property
    def edit_torch_dtype(self) -> torch.dtype:
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


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] float images (n, 3, H, W) -> uint8, as the original before writing its file:
    float64 ``(x + 1) * 127.5 + 0.5``, clipped to [0, 255], truncated."""
    levels = ((images.detach().double() + 1.0) * 127.5 + 0.5).clamp(0.0, 255.0).floor()
    return levels.to(torch.uint8)


def from_uint8(pixels: Tensor) -> Tensor:
    """uint8 -> [-1, 1] float32 as the original read its file (``(q / 255 - 0.5) / 0.5``)."""
    return (pixels.float() / 255.0 - 0.5) / 0.5


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ValueError(
            "measure.round_trip=jpeg needs OpenCV, the library the original wrote its files"
            " with: pip install opencv-python-headless (or pip install -e '.[fidelity]')"
        ) from None
    return cv2


def round_trip(images: Tensor, settings: MeasureSettings) -> Tensor:
    """The images written to a file and read back (``settings.round_trip``), as [-1, 1] floats.

    ``none`` returns ``images`` untouched. ``png``/``jpeg`` encode each image's
    8-bit pixels with OpenCV (BGR order, as ``cv2.imwrite`` gets them) and decode
    them again; ``png`` is lossless, so it only quantises to 8 bits.
    """
    if settings.round_trip == "none":
        return images
    pixels = to_uint8(images).cpu()
    if settings.round_trip == "png":
        return from_uint8(pixels).to(images.device)
    cv2 = _cv2()
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(settings.jpeg_quality)]
    out = np.empty(tuple(pixels.shape), np.uint8)
    hwc = pixels.permute(0, 2, 3, 1).numpy()
    for i in range(hwc.shape[0]):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(hwc[i][:, :, ::-1]), params)
        if not ok:
            raise RuntimeError("OpenCV could not encode an image as JPEG")
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        out[i] = bgr[:, :, ::-1].transpose(2, 0, 1)
    return from_uint8(torch.from_numpy(out)).to(images.device)


def vector_seed(dropout_seed: int, case: int) -> int:
    """The dropout seed of one vector: a function of the run's seed and the case number only."""
    return zlib.crc32(f"{int(dropout_seed)}:{int(case)}".encode())


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The global torch RNGs (which dropout and a network's random init draw from) seeded
    with ``seed`` for the block, then restored: the caller's RNG states are as they were.

    The CPU's, and each CUDA device's once CUDA has started (a model on a GPU has started
    it; its dropout draws from its device's RNG), as ``torch.manual_seed`` seeds them.
    Before CUDA starts only the CPU's is seeded: ``torch.manual_seed`` would leave a seed
    queued for CUDA's start, which no fork could restore."""
    cuda = torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed_all(seed)
        yield


@contextlib.contextmanager
def scorer_mode(scorer: object, settings: MeasureSettings) -> Iterator[None]:
    """The scorer in train mode (dropout on) for the block when asked, else untouched."""
    if not settings.train:
        yield
        return
    switch = getattr(scorer, "set_train_mode", None)
    if switch is None:
        raise ValueError(
            f"measure.scorer_mode=train but {type(scorer).__name__} has no train mode"
            " (set_train_mode); use measure.scorer_mode=eval"
        )
    switch(True)
    try:
        yield
    finally:
        switch(False)


def rounded(scores: np.ndarray, decimals: int | None) -> np.ndarray:
    """Scores as the original judged them (None: as measured).

    The original called ``round(score, 4)`` on each float32 score, which numpy does in
    float32 (``rint(x * 1e4) / 1e4``), then upcast to float64 for ``np.corrcoef``;
    the same here, so the rounded values are the original's bit for bit.
    """
    if decimals is None:
        return scores
    return np.round(np.asarray(scores, dtype=np.float32), int(decimals)).astype(np.float64)
