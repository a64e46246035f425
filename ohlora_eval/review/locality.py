"""How local each edit is, from the images' pixels only: background drift and face-shape
stability (``locality_stats``, the measuring step's ``image_stats`` hook).

Nothing looks inside a generator, so the figures mean the same for any generator (the
synthetic faces and 256x256 StyleGAN faces alike). Determinism: every reduction runs over one
vector's own slice (pairwise sums along the last axis, or row-by-row adds along another
axis), so a vector's numbers do not depend on which other vectors shared its chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ohlora_eval.errors import ConfigError, int_in
from ohlora_eval.review.defaults import DEFAULT_FACE_BOX

# The per-vector arrays ``locality_stats`` returns.
LOCALITY_COLUMNS: tuple[str, ...] = ("bg_drift", "face_iou")


def check_face_box(face_box: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        box = tuple(float(v) for v in face_box)
    except (TypeError, ValueError):
        box = ()
    if len(box) != 4:
        shown = list(face_box) if isinstance(face_box, (list, tuple)) else face_box
        raise ConfigError(f"review.face_box={shown!r} must be [x0, y0, x1, y1]")
    x0, y0, x1, y1 = box
    if not (-1.0 <= x0 < x1 <= 1.0 and -1.0 <= y0 < y1 <= 1.0):
        raise ConfigError(
            f"review.face_box={list(box)} must satisfy -1 <= x0 < x1 <= 1 and -1 <= y0 < y1 <= 1"
            " (normalised image coordinates, y down)"
        )
    return box  # type: ignore[return-value]


def face_region(h: int, w: int, face_box: Sequence[float] = DEFAULT_FACE_BOX) -> np.ndarray:
    """(h, w) bool: pixel centres inside the ellipse inscribed in ``face_box``."""
    x0, y0, x1, y1 = check_face_box(face_box)
    ys = (np.arange(h) + 0.5) / h * 2 - 1
    xs = (np.arange(w) + 0.5) / w * 2 - 1
    dy = (ys[:, None] - (y0 + y1) / 2) / ((y1 - y0) / 2)
    dx = (xs[None, :] - (x0 + x1) / 2) / ((x1 - x0) / 2)
    return dx * dx + dy * dy <= 1.0


def _pool_factor(h: int, w: int, size: int) -> int | None:
    """The integer factor bringing the longer side to <= ``size`` (1: none); None if none fits."""
    f = -(-max(h, w) // size)
    return f if h % f == 0 and w % f == 0 else None


def _analysis_pixels(images: Tensor, size: int) -> tuple[np.ndarray, int]:
    """Images as float32 numpy on the CPU, plus the pooling factor still to apply per block.

    CPU images whose sides divide evenly are pooled later, a block at a time
    (``_pool_block``); GPU images and odd sizes are area-averaged here with
    torch, on their own device, so only small images cross to the CPU.
    """
    x = images.detach()
    h, w = x.shape[-2:]
    f = _pool_factor(h, w, size)
    if f is not None and (f == 1 or x.device.type == "cpu"):
        return x.to("cpu", torch.float32).contiguous().numpy(), f
    x = x.float()
    if f is not None:
        x = torch.nn.functional.avg_pool2d(x, f)
    else:
        scale = size / max(h, w)
        x = torch.nn.functional.adaptive_avg_pool2d(
            x, (max(1, round(h * scale)), max(1, round(w * scale)))
        )
    return x.to("cpu", torch.float32).contiguous().numpy(), 1


def _pool_block(x: np.ndarray, f: int) -> np.ndarray:
    """Mean of each f x f window of (..., h, w), adding rows then columns in a fixed order."""
    if f == 1:
        return x
    rows = x[..., 0::f, :].copy()
    for i in range(1, f):
        rows += x[..., i::f, :]
    out = rows[..., 0::f].copy()
    for j in range(1, f):
        out += rows[..., j::f]
    out *= np.float32(1.0 / (f * f))
    return out


def _channel_abs_diff(a: np.ndarray, b: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """``out`` = sum over the 3 channels (axis -3) of |a - b|, channels added in order."""
    np.subtract(a[..., 0, :, :], b[..., 0, :, :], out=out)
    np.abs(out, out=out)
    for c in (1, 2):
        np.subtract(a[..., c, :, :], b[..., c, :, :], out=tmp)
        np.abs(tmp, out=tmp)
        out += tmp
    return out


def locality_stats(
    images: Tensor,
    m: int,
    *,
    face_box: Sequence[float] = DEFAULT_FACE_BOX,
    analysis_size: int = 32,
    border: float = 0.05,
    fg_threshold: float = 0.10,
    fg_softness: float = 0.04,
) -> dict[str, np.ndarray]:
    """Per vector, how local its edits are, from pixels only (the ``ImageStats`` hook).

    ``images`` (v*m, 3, H, W) in [-1, 1], vector-major (image i*m+j is vector i at
    grid point j). Images are first area-averaged down to ``analysis_size`` on
    their longer side, so a 256x256 face costs little more than a 64x64 one, the
    figures are on one scale for every generator, and single-pixel jitter at
    edges barely counts as drift. Pixel values are used in [0, 1] units.

    ``bg_drift``: mean absolute change outside the face region, per channel, of
    each grid image against the vector's mean grid image (per pixel), averaged
    over the grid. The grid has no unedited centre image (eyes is +-1.2), and
    the mean needs one pass where a median needs a sort. 0 = the background and
    everything else around the face stay put; 0.1 = a tenth of full scale on
    average. The face region is the ellipse inscribed in ``face_box``
    ((x0, y0, x1, y1), normalised coordinates, y down); hair, neck and
    background lie outside it.

    ``face_iou``: stability of the head's silhouette. A soft foreground mask per
    image marks pixels whose colour differs (mean over channels, a linear ramp
    from ``fg_threshold - fg_softness`` to ``fg_threshold + fg_softness``) from
    the colour of the image's own left or right border in the same row,
    whichever is closer; so it follows a drifting or graded background and
    needs no colour model of faces. Each mask is compared with the vector's mean
    mask by soft IoU (sum of minima / sum of maxima) and the figure is the mean
    over the grid: 1 = the silhouette never changes. A mask's errors (hair the
    colour of the background) repeat in every image of a vector, so they cancel.
    """
    n_img = images.shape[0]
    if m < 1 or n_img % m:
        raise ValueError(f"{n_img} images is not a whole number of grids of {m}")
    int_in("review.analysis_size", analysis_size, 8)
    if not 0.0 < border < 0.5:
        raise ValueError(f"review.border={border} must be in (0, 0.5)")
    v = n_img // m
    if v == 0:
        return {"bg_drift": np.zeros(0), "face_iou": np.zeros(0)}
    x, f = _analysis_pixels(images, int(analysis_size))
    x = x.reshape(v, m, 3, *x.shape[-2:])
    h, w = x.shape[-2] // f, x.shape[-1] // f
    outside = ~face_region(h, w, face_box)
    if not outside.any():
        raise ConfigError(f"review.face_box={list(face_box)} leaves no pixel outside the face")
    # Thresholds in the [-1, 1] units of the images: differences are twice as large.
    lo_hi = (2 * (fg_threshold - fg_softness), 2 * (fg_threshold + fg_softness))
    b = max(1, round(border * w))
    bg_drift = np.empty(v)
    face_iou = np.empty(v)
    # A few vectors at a time, into reused buffers: whole-chunk temporaries cost
    # more in page faults than in arithmetic. A vector's numbers are the same
    # whatever block it is in (every reduction runs over its own slice only).
    step = 4
    bufs = [np.empty((min(step, v), m, h, w), np.float32) for _ in range(4)]
    for a in range(0, v, step):
        block = np.clip(_pool_block(x[a : a + step], f), -1.0, 1.0)
        k = block.shape[0]
        bg_drift[a : a + k], face_iou[a : a + k] = _locality_block(
            block, outside, b, lo_hi, [buf[:k] for buf in bufs]
        )
    return {"bg_drift": bg_drift, "face_iou": face_iou}


def _locality_block(
    x: np.ndarray,
    outside: np.ndarray,
    b: int,
    lo_hi: tuple[float, float],
    bufs: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """(k, m, 3, h, w) pixels in [-1, 1] -> (bg_drift, face_iou), each (k,)."""
    k, m, _, h, w = x.shape
    d, tmp, d2, fg = bufs
    mean_img = x.mean(axis=1, keepdims=True)  # grid images added in grid order
    _channel_abs_diff(x, mean_img, d, tmp)
    # Sum of 3 channels in [-1, 1] units -> mean per channel in [0, 1] units: / 6.
    change = (d * outside).reshape(k, m * h * w).sum(-1, dtype=np.float64)
    bg_drift = change / (6.0 * m * int(outside.sum()))

    left = x[..., :b].mean(-1, keepdims=True)  # (k, m, 3, h, 1): each row's border colour
    right = x[..., w - b :].mean(-1, keepdims=True)
    _channel_abs_diff(x, left, d, tmp)
    _channel_abs_diff(x, right, d2, tmp)
    np.minimum(d, d2, out=d)
    # Channel sum -> channel mean (/3), then the linear ramp to [0, 1].
    lo, hi = 3 * lo_hi[0], 3 * lo_hi[1]
    np.subtract(d, np.float32(lo), out=fg)
    fg *= np.float32(1.0 / (hi - lo))
    np.clip(fg, 0.0, 1.0, out=fg)
    masks = fg.reshape(k, m, h * w)
    ref = masks.mean(axis=1, keepdims=True)
    inter = np.minimum(masks, ref, out=d.reshape(k, m, h * w)).sum(-1, dtype=np.float64)
    union = np.maximum(masks, ref, out=d2.reshape(k, m, h * w)).sum(-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 1.0)  # both empty: the same (no) shape
    return bg_drift, iou.mean(-1)
