"""dlib's face-recognition ResNet as an ``IdentityModel`` plug point (``identity=dlib_resnet``).

``embed(images)`` gives each face dlib's 128-d descriptor; two faces whose descriptors are
closer than 0.6 (Euclidean) are the same person by dlib's documented threshold (99.38 % on
LFW). Everything comes from the PyPI wheel ``face-recognition-models==0.3.0`` (the ResNet
``dlib_face_recognition_resnet_model_v1.dat`` and the landmark predictors), run through
``dlib-bin`` for the landmarks and the face chip, and through our own torch network for the
descriptor (``models/networks/dlib_resnet.py``: the same numbers as dlib's to about 1e-6,
about 16 times faster on this 2-core CPU, and it can run on a GPU).

How one image is embedded (docs/real_faces.md, "Identity"):

1. the [-1, 1] image as 8-bit RGB (``round((x + 1) * 127.5)``), upscaled bicubic to
   ``upscale`` pixels a side (PIL), 8 bits again: the "image" below;
2. the face box: fixed (``box``, the scorer's default: x 10-90 %, y 10-95 % of the side), or
   with ``detect=true`` the largest face dlib's HOG detector finds;
3. landmarks in that box: dlib's 5-point predictor (``landmarks=5``, what the ResNet was
   trained with) or the 68-point one (``landmarks=68``);
4. dlib's aligned 150-px chip (``get_face_chip``, padding 0.25) and the ResNet on it.

So ``embed(images)[i]`` equals
``dlib.face_recognition_model_v1(<file>).compute_face_descriptor(image, shape)`` for the
``(image, shape)`` that ``aligned(images)[i]`` returns (checked to 1e-4 by the tests).

A face that cannot be aligned gets a row of NaN and a reason (``embed_detailed``), never a
made-up descriptor: the detector found no face (``detect=true``), the image is not finite,
or the landmarks are degenerate (the eyes less than 1/8 of the side apart, or an eye, nose
or mouth landmark outside the image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ohlora_eval.errors import ConfigError, int_in
from ohlora_eval.models.networks.checkpoints import packaged_file, resolve_device
from ohlora_eval.models.networks.dlib_resnet import (
    CHIP_SIZE,
    DESCRIPTOR_DIM,
    SAME_PERSON,
    DlibFaceResNet,
    DlibFormatError,
)
from ohlora_eval.models.scorers.dlib_landmarks import (
    DEFAULT_BOX,
    DISTRIBUTION,
    INSTALL_HINT,
    _file_id,
    _import_dlib,
    check_box,
    wheel_file,
)
from ohlora_eval.pipeline.device import fixed_cpu_threads
from ohlora_eval.pipeline.fingerprint import digest
from ohlora_eval.pipeline.identity import SCOPES

RESNET_IN_WHEEL = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
PREDICTORS_IN_WHEEL = {
    5: "face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
    68: "face_recognition_models/models/shape_predictor_68_face_landmarks.dat",
}
CHIP_PADDING = 0.25  # dlib's default in compute_face_descriptor
MIN_EYE_GAP = 1 / 8  # of the image side: closer eyes are no face to align


def resnet_path(model: str | None) -> str:
    """``identity.model`` or, when null, the ResNet file inside the installed wheel."""
    return str(wheel_file("identity.model", model, RESNET_IN_WHEEL))


@dataclass(frozen=True)
class AlignSettings:
    """How a face is found and aligned (what changes a descriptor besides the weights)."""

    landmarks: int
    upscale: int
    box: tuple[float, float, float, float]
    detect: bool


@dataclass
class Embedded:
    """``vectors`` (n, 128) float32, NaN rows where ``reasons[i]`` says why."""

    vectors: np.ndarray
    reasons: list[str]


class DlibResNetIdentity:
    """Images (n, 3, H, W) in [-1, 1] -> dlib's 128-d face descriptors (n, 128)."""

    dim = DESCRIPTOR_DIM
    threshold = SAME_PERSON  # dlib's same-person distance (Euclidean)
    metric = "euclidean"
    name = "dlib_resnet"

    @staticmethod
    def check_installed(model: str | None = None, **_: object) -> None:
        """Before a run opens: dlib imports and the files can be found."""
        _import_dlib()
        resnet_path(model)
        for path in PREDICTORS_IN_WHEEL.values():
            packaged_file(DISTRIBUTION, path, "identity.landmarks", INSTALL_HINT)

    def __init__(
        self,
        model: str | None = None,
        landmarks: int = 5,
        upscale: int = 256,
        box: Sequence[float] = DEFAULT_BOX,
        detect: bool = False,
        device: str = "auto",
        batch_size: int = 64,
        scope: str = "near_pass",
    ) -> None:
        """``scope`` is the screening's: which vectors it measures (``near_pass``: those that
        clear every cutoff less ``review.near_miss_margin``; ``passed``; ``all``). It lives
        in the ``identity`` group so one group holds every identity setting; the model
        only checks it."""
        if landmarks not in PREDICTORS_IN_WHEEL or isinstance(landmarks, bool):
            raise ConfigError(f"identity.landmarks={landmarks!r} must be 5 or 68")
        int_in("identity.upscale", upscale, 64, 2048)
        box = check_box("identity.box", box)
        if not isinstance(detect, bool):
            raise ConfigError(f"identity.detect={detect!r} must be true or false")
        if scope not in SCOPES:
            raise ConfigError(f"identity.scope={scope!r} must be one of {', '.join(SCOPES)}")
        self.scope = scope
        self.batch_size = int_in("identity.batch_size", batch_size, 1, 100_000)
        self.settings = AlignSettings(int(landmarks), int(upscale), box, detect)
        self.device = resolve_device(device)
        dlib = _import_dlib()
        self.path = resnet_path(model)
        predictor = str(
            packaged_file(
                DISTRIBUTION, PREDICTORS_IN_WHEEL[self.settings.landmarks], "identity", INSTALL_HINT
            )
        )
        self.predictor_path = predictor
        self._predictor = dlib.shape_predictor(predictor)
        self._detector = dlib.get_frontal_face_detector() if detect else None
        try:
            self.network = DlibFaceResNet.from_file(self.path).to(self.device)
        except DlibFormatError as exc:
            why = f"identity.model={self.path} is not dlib's face ResNet ({exc})"
            raise ConfigError(why) from None
        ids = []
        for path in (self.path, predictor):
            stat = Path(path).stat()
            ids.append(_file_id(path, stat.st_size, stat.st_mtime_ns))
        # The files' hashes, then the settings that change a descriptor (a cached embedding
        # made with other landmarks or another box is never re-used).
        self.weights_id = f"{ids[0][:12]}-{ids[1][:8]}-{digest(asdict(self.settings))[:8]}"

    # --- alignment (dlib) -----------------------------------------------------------------
    def _rgb(self, images: Tensor) -> tuple[np.ndarray, np.ndarray]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (n, 3, H, W); got {tuple(images.shape)}")
        x = images.detach().float().cpu()
        finite = torch.isfinite(x).flatten(1).all(1).numpy()
        x = ((torch.nan_to_num(x).clamp(-1, 1) + 1) * 127.5).round()
        return x.byte().permute(0, 2, 3, 1).numpy(), finite

    def aligned(self, images: Tensor) -> list[tuple[np.ndarray, Any, str]]:
        """Per image: (the upscaled 8-bit RGB image, dlib's landmarks or None, the reason
        when None). ``compute_face_descriptor(image, landmarks)`` is its descriptor."""
        from PIL import Image

        dlib = _import_dlib()
        s = self.settings
        size = s.upscale
        fixed = dlib.rectangle(
            int(s.box[0] * size), int(s.box[1] * size), int(s.box[2] * size), int(s.box[3] * size)
        )
        rgb, finite = self._rgb(images)
        out: list[tuple[np.ndarray, Any, str]] = []
        for pix, ok in zip(rgb, finite):
            big = np.ascontiguousarray(
                np.asarray(Image.fromarray(pix, "RGB").resize((size, size), Image.BICUBIC))
            )
            if not ok:
                out.append((big, None, "the image has non-finite pixels"))
                continue
            box = fixed
            if self._detector is not None:
                found = list(self._detector(big, 0))
                if not found:
                    out.append((big, None, "dlib's face detector found no face"))
                    continue
                box = max(found, key=lambda r: r.width() * r.height())
            shape = self._predictor(big, box)
            why = _degenerate(shape, size, s.landmarks)
            out.append((big, None if why else shape, why))
        return out

    # --- the descriptors (torch) ----------------------------------------------------------
    def embed_detailed(self, images: Tensor) -> Embedded:
        """Descriptors and, for each row of NaN, why the face could not be aligned."""
        dlib = _import_dlib()
        n = images.shape[0]
        vectors = np.full((n, DESCRIPTOR_DIM), np.nan, np.float32)
        reasons = [""] * n
        chips, rows = [], []
        for i, (big, shape, why) in enumerate(self.aligned(images)):
            if shape is None:
                reasons[i] = why
                continue
            chips.append(dlib.get_face_chip(big, shape, size=CHIP_SIZE, padding=CHIP_PADDING))
            rows.append(i)
        for lo in range(0, len(chips), self.batch_size):
            part = np.stack(chips[lo : lo + self.batch_size])
            x = torch.from_numpy(part).to(self.device).permute(0, 3, 1, 2).float()
            # fixed CPU threads: oneDNN's convolutions of a few chips change bits with the count
            cpu = fixed_cpu_threads() if self.device.type == "cpu" else nullcontext()
            with torch.inference_mode(), cpu:
                got = self.network(x).float().cpu().numpy()
            vectors[rows[lo : lo + len(part)]] = got
        return Embedded(vectors, reasons)

    def embed(self, images: Tensor) -> np.ndarray:
        """(n, 3, H, W) in [-1, 1] -> (n, 128) float32; NaN rows: not aligned."""
        return self.embed_detailed(images).vectors

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"DlibResNetIdentity(landmarks={s.landmarks}, upscale={s.upscale}, detect={s.detect},"
            f" device={self.device}, weights_id={self.weights_id!r})"
        )


def _degenerate(shape: Any, size: int, landmarks: int) -> str:
    """Why these landmarks cannot align a face ("" when they can)."""
    pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
    inner = pts if landmarks == 5 else pts[27:68]  # the jaw line may leave a tight crop
    if (inner < 0).any() or (inner >= size).any():
        return "an eye, nose or mouth landmark lies outside the image"
    if landmarks == 5:  # points 0-1 one eye's corners, 2-3 the other's, 4 the nose
        left, right = pts[0:2].mean(0), pts[2:4].mean(0)
    else:
        left, right = pts[36:42].mean(0), pts[42:48].mean(0)
    gap = float(np.hypot(*(left - right)))
    if not math.isfinite(gap) or gap < MIN_EYE_GAP * size:
        return f"the eyes were found {gap:.0f} px apart (under 1/8 of the {size}-px side)"
    return ""
