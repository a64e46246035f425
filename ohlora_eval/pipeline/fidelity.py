"""Measuring as the original measured: what the four switches of ``MeasureSettings``
(``pipeline/measure_settings.py``, where they are described) do to the images and scores:
``round_trip`` (the file written and read back), ``scorer_mode`` (dropout on while scoring,
its draws ``seeded`` per vector), ``rounded`` (the scores rounded before r). Also ``seeded``,
the one way the package seeds torch's global RNGs (the caller's states are restored).

Pure computation (no MLflow, Hydra or OmegaConf); docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline.measure_settings import MeasureSettings, opencv


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] float images (n, 3, H, W) -> uint8, as the original before writing its file:
    float64 ``(x + 1) * 127.5 + 0.5``, clipped to [0, 255], truncated."""
    levels = ((images.detach().double() + 1.0) * 127.5 + 0.5).clamp(0.0, 255.0).floor()
    return levels.to(torch.uint8)


def from_uint8(pixels: Tensor) -> Tensor:
    """uint8 -> [-1, 1] float32 as the original read its file (``(q / 255 - 0.5) / 0.5``)."""
    return (pixels.float() / 255.0 - 0.5) / 0.5


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
    cv2 = opencv()
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
        raise ConfigError(
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
