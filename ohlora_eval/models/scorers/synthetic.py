"""An image-measuring property scorer for the embedded synthetic faces.

It plays the role of Oh-LoRA's property-score CNN: it sees pixels only (never
latents or renderer internals), looks at fixed regions of the image as the
CNN's crops do, and returns scores standardised to about N(0, 1) over a
calibration sample of faces.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from ohlora_eval.errors import ConfigError, number_in

PROPERTIES: tuple[str, ...] = (
    "eyes",
    "mouth",
    "pose",
    "hair_color",
    "hair_length",
    "background_mean",
    "hairstyle",
)


def _soft_gt(x: Tensor, thr: float, width: float = 0.03) -> Tensor:
    return torch.sigmoid((x - thr) / width)


def _band(images: Tensor, y0: float, y1: float, x0: float, x1: float) -> Tensor:
    """Crop by normalised coordinates in [-1, 1] (y down)."""
    h, w = images.shape[-2:]

    def idx(v: float, size: int) -> int:
        return int(round((v + 1) / 2 * size))

    return images[..., idx(y0, h) : idx(y1, h), idx(x0, w) : idx(x1, w)]


def _x_coords(crop: Tensor, x0: float, x1: float) -> Tensor:
    w = crop.shape[-1]
    return torch.linspace(x0, x1, w + 1, device=crop.device)[:-1] + (x1 - x0) / (2 * w)


def _centroid_x(mask: Tensor, xs: Tensor, eps: float = 0.5) -> Tensor:
    """Mask-weighted mean x, pulled towards 0 when the mask is nearly empty."""
    weight = mask.sum((-2, -1))
    return (mask * xs).sum((-2, -1)) / (weight + eps)


def raw_measurements(images: Tensor) -> dict[str, Tensor]:
    """Unstandardised pixel measurements of each property, each (n,)."""
    img = (images.float().clamp(-1, 1) + 1) / 2  # [0, 1]
    res = img.shape[-1]
    px = (2.0 / res) ** 2  # area of one pixel in normalised units
    r, g, b = img[:, 0], img[:, 1], img[:, 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    cmax, cmin = img.max(1).values, img.min(1).values
    white = _soft_gt(cmin, 0.82, 0.04) * _soft_gt(-(cmax - cmin), -0.14, 0.03)
    red_dark = _soft_gt(r - g, 0.25, 0.04) * _soft_gt(-lum, -0.30, 0.04)
    red_any = _soft_gt(r - g, 0.40, 0.04)

    eye_x = (-0.55, 0.55)
    eyes_band = _band(white, -0.24, 0.08, *eye_x)
    mouth_x = (-0.45, 0.45)
    mouth_band = _band(red_dark, 0.10, 0.50, *mouth_x)
    lips_band = _band(red_any, 0.10, 0.50, *mouth_x)

    eyes = eyes_band.sum((-2, -1)) * px
    mouth = mouth_band.sum((-2, -1)) * px
    # Pose: where the features sit horizontally (eye whites and the lips).
    pose = 0.5 * _centroid_x(eyes_band, _x_coords(eyes_band, *eye_x)) + 0.5 * _centroid_x(
        lips_band, _x_coords(lips_band, *mouth_x)
    )

    hair_color = _band(lum, -0.90, -0.74, -0.15, 0.15).mean((-2, -1))
    corners = torch.cat(
        [
            _band(lum, -1.0, -0.8, -1.0, -0.8).flatten(1),
            _band(lum, -1.0, -0.8, 0.8, 1.0).flatten(1),
        ],
        1,
    )
    background_mean = corners.mean(1)

    # Hair below the face, at the sides: pixels that differ from the background
    # of their own row (read at the image edges, where hair never reaches).
    y0, y1 = -0.2, 1.0
    rows = _band(img, y0, y1, -1.0, 1.0)
    edge = torch.cat([rows[..., :2], rows[..., -2:]], -1).mean(-1, keepdim=True)
    differs = _soft_gt((rows - edge).abs().sum(1), 0.12, 0.03)  # (n, rows, W)
    w = differs.shape[-1]
    side = torch.cat(
        [differs[..., int(w * 0.15) : int(w * 0.34)], differs[..., int(w * 0.66) : int(w * 0.85)]],
        -1,
    )
    per_row = side.mean(-1)  # (n, rows): hair coverage of each row at the sides
    hair_length = per_row.mean(-1)
    # Wavy hair: the side coverage wiggles from row to row.
    second = per_row[:, 2:] - 2 * per_row[:, 1:-1] + per_row[:, :-2]
    hairstyle = second.abs().mean(-1) / (per_row.mean(-1) + 0.05)

    return {
        "eyes": eyes,
        "mouth": mouth,
        "pose": pose,
        "hair_color": hair_color,
        "hair_length": hair_length,
        "background_mean": background_mean,
        "hairstyle": hairstyle,
    }


@lru_cache(maxsize=8)
def _calibration(resolution: int, n: int, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from ohlora_eval.models.generators.synthetic import SyntheticFaceGenerator

    gen = SyntheticFaceGenerator(resolution=resolution, device="cpu")
    z = gen.sample_latents(n, seed)
    m = raw_measurements(gen.synthesize(gen.to_mid(z, "w"), "w"))
    mean = tuple(float(m[p].mean()) for p in PROPERTIES)
    std = tuple(float(m[p].std()) for p in PROPERTIES)
    return mean, std


class SyntheticScorer:
    """Measures eyes, mouth, pose and the grouping properties from pixels (``scorer=synthetic``).

    Standardisation constants come from a calibration sample of the embedded
    generator's faces at the same resolution (computed once per process).
    """

    properties = PROPERTIES
    group_medians = None  # grouping uses the medians of the sample at hand

    def __init__(
        self,
        resolution: int | None = 64,
        calibration_n: int = 2000,
        calibration_seed: int = 20_250_607,
        device: str = "cpu",
        batch_size: int = 512,
        train_dropout: float = 0.05,
    ) -> None:
        if resolution is None:
            raise ConfigError(
                "scorer=synthetic measures only the synthetic generator's faces and takes its"
                " generator.resolution; with another generator (generator=stylegan_v9) set"
                " scorer=ohlora_cnn"
            )
        mean, std = _calibration(int(resolution), int(calibration_n), int(calibration_seed))
        self.resolution = int(resolution)
        # Measured a few hundred images at a time: they stay in the CPU caches (4x faster
        # than thousands at once here), and a multiple of 64 keeps rows batch-invariant.
        self.batch_size = max(64, -(-int(batch_size) // 64) * 64)
        self._mean = dict(zip(PROPERTIES, mean))
        self._std = dict(zip(PROPERTIES, std))
        self.weights_id = f"synthetic-scorer-r{resolution}-n{calibration_n}-s{calibration_seed}"
        self.train_dropout = number_in(
            "scorer.train_dropout", train_dropout, 0.0, 1.0, high_open=True
        )
        self._train = False

    def set_train_mode(self, on: bool) -> None:
        """Train mode (``measure.scorer_mode=train``): the synthetic scorer's stand-in for the
        original CNN's active dropout. Each pixel of the [0, 1] image is dropped with
        probability ``train_dropout`` (and the rest scaled by 1 / (1 - p)), from the global
        torch RNG, before measuring: scores, and so r, become partly random, as the
        original's were. Off by default."""
        self._train = bool(on)

    @torch.inference_mode()
    def score(self, images: Tensor) -> dict[str, Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (n, 3, H, W); got {tuple(images.shape)}")
        if self._train and self.train_dropout > 0:
            unit = (images.float().clamp(-1, 1) + 1) / 2
            images = torch.nn.functional.dropout(unit, self.train_dropout, training=True) * 2 - 1
        parts = [
            raw_measurements(images[i : i + self.batch_size])
            for i in range(0, images.shape[0], self.batch_size)
        ]
        raw = {p: torch.cat([r[p] for r in parts]) if parts else torch.zeros(0) for p in PROPERTIES}
        return {p: ((raw[p] - self._mean[p]) / self._std[p]).cpu() for p in PROPERTIES}
