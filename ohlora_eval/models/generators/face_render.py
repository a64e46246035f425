"""A batched, vectorised renderer of a simple cartoon face.

Every shape is a soft (anti-aliased) mask computed for all images and all
pixels at once, so rendering thousands of faces is a handful of tensor ops.
Coordinates: x, y in [-1, 1], y pointing down, face centred near the origin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Face parameters the decoder produces, each (n,) and in [0, 1] except yaw in [-1, 1].
FACE_PARAMS: tuple[str, ...] = (
    "eyes_open",
    "mouth_open",
    "yaw",
    "hair_color",
    "hair_length",
    "hairstyle",
    "background",
    "skin",
    "face_width",
    "face_length",
    "bg_tint",
    "brow",
)

_DARK_HAIR = (0.13, 0.08, 0.06)
_LIGHT_HAIR = (0.88, 0.72, 0.42)
_LIGHT_SKIN = (0.98, 0.84, 0.74)
_TAN_SKIN = (0.80, 0.58, 0.44)
_SCLERA = (0.97, 0.97, 0.97)
_IRIS = (0.18, 0.12, 0.10)
_LIPS = (0.82, 0.26, 0.32)
_MOUTH = (0.42, 0.05, 0.09)


@dataclass
class _Canvas:
    """Pixel coordinate grids (of a band of rows) broadcastable against (n, 1, 1) parameters."""

    x: Tensor  # (1, rows, W)
    y: Tensor  # (1, rows, W)
    soft: float  # edge softness, about one pixel
    rows: slice  # which image rows this canvas covers

    @classmethod
    def make(cls, resolution: int, device: torch.device) -> _Canvas:
        c = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution
        c = c * 2 - 1
        y, x = torch.meshgrid(c, c, indexing="ij")
        return cls(x=x[None], y=y[None], soft=1.0 / resolution, rows=slice(0, resolution))

    def band(self, y0: float, y1: float) -> _Canvas:
        """The rows with y in [y0, y1]: features are drawn only where they can appear."""
        res = self.x.shape[-1]
        r0 = max(0, int((y0 + 1) / 2 * res))
        r1 = min(res, int((y1 + 1) / 2 * res) + 1)
        return _Canvas(self.x[:, r0:r1], self.y[:, r0:r1], self.soft, slice(r0, r1))

    def ellipse(self, cx: Tensor, cy: Tensor, rx: Tensor, ry: Tensor) -> Tensor:
        """Soft inside-mask of an axis-aligned ellipse."""
        # First-order distance to the boundary: k0 (k0 - 1) / |grad k0| (a
        # standard ellipse approximation, exact enough for one-pixel softness).
        dx = (self.x - cx) / rx
        dy = (self.y - cy) / ry
        k0 = torch.sqrt(dx * dx + dy * dy + 1e-12)
        k1 = torch.sqrt((dx / rx) ** 2 + (dy / ry) ** 2 + 1e-12)
        sdf = k0 * (k0 - 1) / k1
        # The true distance is never below the distance to the bounding box; this
        # keeps very flat ellipses (a closed eye) from bleeding sideways.
        sdf = torch.maximum(sdf, torch.maximum((self.x - cx).abs() - rx, (self.y - cy).abs() - ry))
        return torch.sigmoid(-sdf / self.soft)

    def below(self, y0: Tensor | float) -> Tensor:
        return torch.sigmoid((self.y - y0) / self.soft)

    def above(self, y0: Tensor | float) -> Tensor:
        return torch.sigmoid((y0 - self.y) / self.soft)

    def paint(self, img: Tensor, color: Tensor, alpha: Tensor) -> None:
        """Composite ``color`` (n or 1, 3, 1, 1) over this band of ``img``, in place."""
        part = img[:, :, self.rows]
        part += (color - part) * alpha[:, None]


def _col(rgb: tuple[float, float, float], device: torch.device) -> Tensor:
    return torch.tensor(rgb, device=device, dtype=torch.float32).view(1, 3, 1, 1)


def _lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    return a + (b - a) * t


def render_faces(p: dict[str, Tensor], resolution: int) -> Tensor:
    """Render faces from parameters; returns (n, 3, H, W) float in [-1, 1]."""
    dev = p["yaw"].device
    cv = _Canvas.make(resolution, dev)
    v = {k: t.float().view(-1, 1, 1) for k, t in p.items()}
    yaw = v["yaw"]
    n = yaw.shape[0]
    full = torch.full_like

    # Background: brightness, a slight tint and a vertical gradient.
    lum = 0.12 + 0.78 * v["background"]
    tint = (v["bg_tint"] - 0.5) * 0.25
    shade = 1 - 0.12 * cv.y
    img = torch.stack([(lum + tint) * shade, lum * shade, (lum - tint) * shade], dim=1)
    img = img.clamp(0, 1).expand(n, 3, resolution, resolution).contiguous()

    hair = _lerp(_col(_DARK_HAIR, dev), _col(_LIGHT_HAIR, dev), v["hair_color"][:, None])
    skin = _lerp(_col(_LIGHT_SKIN, dev), _col(_TAN_SKIN, dev), v["skin"][:, None])
    fx = 0.10 * yaw  # the head shifts a little as it turns
    face_rx = (0.36 + 0.08 * v["face_width"]) * (1 - 0.10 * yaw.abs())
    face_ry = 0.47 + 0.08 * v["face_length"]

    # Hair behind the head: a skull cap plus side locks down to the hair length,
    # their edges waving with the hairstyle.
    cap = cv.ellipse(fx * 0.6, full(yaw, -0.12), face_rx + 0.16, face_ry + 0.30)
    bottom = 0.05 + 0.85 * v["hair_length"]
    wave = 0.07 * v["hairstyle"] * torch.sin(cv.y * 19.0 + 1.3)
    side = torch.sigmoid((face_rx + 0.14 + wave - (cv.x - fx * 0.6).abs()) / cv.soft)
    side = side * cv.above(bottom) * cv.below(-0.25)
    cv.paint(img, hair, torch.maximum(cap, side))

    # Neck, then the face.
    low = cv.band(0.1, 1.0)
    neck = torch.sigmoid((0.13 - (low.x - fx * 0.5).abs()) / cv.soft) * low.below(0.2)
    low.paint(img, skin * 0.88, neck)
    head = cv.band(-0.6, 0.6)
    face = head.ellipse(fx, torch.zeros_like(yaw), face_rx, face_ry)
    head.paint(img, skin, face)

    # Fringe over the forehead, parted towards the turned side.
    top = cv.band(-1.0, -0.2)
    fringe_line = -0.30 + 0.05 * torch.sin(top.x * 9.0 + 2.0 * yaw) * (0.4 + v["hairstyle"])
    top.paint(img, hair, cap[:, top.rows] * top.above(fringe_line))

    # Features move further than the outline when the head turns (parallax).
    feat_x = fx + 0.16 * yaw
    eye_y = -0.08
    eye_sep = 0.18 * (1 - 0.20 * yaw.abs())
    eye_ry = 0.010 + 0.10 * v["eyes_open"]
    eyes = cv.band(-0.34, 0.06)
    for side_sign in (-1.0, 1.0):
        # The eye on the far side narrows when the head turns.
        far = (side_sign * yaw).clamp(min=0)
        ex = feat_x + side_sign * eye_sep
        erx = 0.10 * (1 - 0.35 * far)
        eye = eyes.ellipse(ex, full(yaw, eye_y), erx, eye_ry)
        eyes.paint(img, _col(_SCLERA, dev), eye)
        iris = eyes.ellipse(ex + 0.03 * yaw, full(yaw, eye_y), erx * 0.42, erx * 0.42)
        eyes.paint(img, _col(_IRIS, dev), eye * iris)
        brow_y = eye_y - 0.12 - 0.04 * v["brow"] - 0.5 * eye_ry
        brow = eyes.ellipse(ex, brow_y, erx * 1.1, full(yaw, 0.018))
        eyes.paint(img, hair * 0.8, brow)

    # Nose: a shaded stroke that shows the turn clearly.
    mid = cv.band(0.0, 0.2)
    nose = mid.ellipse(
        feat_x + 0.05 * yaw, full(yaw, 0.10), 0.025 + 0.02 * yaw.abs(), full(yaw, 0.07)
    )
    mid.paint(img, skin * 0.78, nose)

    # Mouth: lips around a dark opening whose height is the mouth openness.
    mouth = cv.band(0.12, 0.45)
    mx = feat_x * 0.9
    my = full(yaw, 0.27)
    mrx = 0.13 * (1 - 0.20 * yaw.abs())
    mry = 0.012 + 0.085 * v["mouth_open"]
    mouth.paint(img, _col(_LIPS, dev), mouth.ellipse(mx, my, mrx + 0.025, mry + 0.025))
    mouth.paint(img, _col(_MOUTH, dev), mouth.ellipse(mx, my, mrx, mry))

    return img.clamp_(0, 1).mul_(2).sub_(1)
