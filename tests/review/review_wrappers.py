"""Generators with known flaws (and one without), for checking the review metrics.

A generator only ever sees mid vectors, never edit weights. But the edits are
``mid = base + w_eyes*d_eyes + w_mouth*d_mouth + w_pose*d_pose`` with directions
the test chose, so the dual vectors of those directions (``e_p . d_q = 1 if p == q
else 0``) read each weight back: ``e_eyes . mid = e_eyes . base + w_eyes``. The
wrappers use that coordinate to make an image depend on one edit exactly, as a
real entangled generator's would, with no access to the grid.

- ``DisentangledGenerator``: the clean reference. The embedded synthetic
  generator is entangled on purpose (its eyes edit moves the mouth and the
  background a little), so "clean" needs its own wrapper: eyes, mouth and pose
  follow only their own edit, and every other face parameter comes from the
  part of the mid vector that no edit touches.
- ``BackgroundShiftGenerator``: the eyes edit also brightens the background.
- ``EyesMoveMouthGenerator``: the eyes edit also opens the mouth.

The side effects are added to face parameters before rendering, in logit space
(values stay in (0, 1)), so the flaw is where it says: the background only, or
the mouth only. Both wrap either the plain synthetic generator or the clean one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from ohlora_eval.models.generators.face_render import render_faces
from ohlora_eval.models.generators.synthetic import SyntheticFaceGenerator
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

CENTRE_SAMPLE = 2000  # faces whose mean coordinate is the neutral point of a wrapper


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


def dual_vectors(directions: Mapping[str, np.ndarray]) -> np.ndarray:
    """(3, dim) ``E`` with ``E @ D.T = I`` for the unit directions ``D`` (eyes, mouth, pose)."""
    d = np.stack([np.asarray(directions[p], dtype=np.float64) for p in CORE_PROPERTIES])
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.linalg.pinv(d).T


class _Wrapper:
    """Delegates the ``Generator`` protocol to ``inner``; one layer, the one edited."""

    def __init__(self, inner, directions: Mapping[str, np.ndarray], layer: str) -> None:
        self.inner = inner
        self.latent_dim = inner.latent_dim
        self.layers = (layer,)
        self.layer = layer
        self.mid_dims = {layer: inner.mid_dims[layer]}
        self.resolution = inner.resolution
        self.device = inner.device
        d = np.stack([np.asarray(directions[p], dtype=np.float64) for p in CORE_PROPERTIES])
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        self._d = torch.as_tensor(d, dtype=torch.float32, device=inner.device)
        self._e = torch.as_tensor(dual_vectors(directions), dtype=torch.float32).to(inner.device)
        sample = inner.to_mid(inner.sample_latents(CENTRE_SAMPLE, seed=4242), layer)
        self._centre = (sample.float() @ self._e.T).mean(0)  # (3,)
        self.weights_id = f"{getattr(inner, 'weights_id', '?')}-{type(self).__name__}"

    def coords(self, mid: Tensor) -> Tensor:
        """(n, 3): each edit's coordinate, centred on the average face (0 = typical)."""
        return mid.float() @ self._e.T - self._centre

    def sample_latents(self, n: int, seed: int) -> Tensor:
        return self.inner.sample_latents(n, seed)

    def to_mid(self, z: Tensor, layer: str) -> Tensor:
        return self.inner.to_mid(z, layer)

    def _check(self, mid: Tensor, layer: str) -> Tensor:
        if layer != self.layer:
            raise ValueError(f"this wrapper is keyed on layer {self.layer!r}, not {layer!r}")
        return mid.to(self.device, torch.float32)

    def face_params(self, mid: Tensor, layer: str) -> dict[str, Tensor]:
        raise NotImplementedError

    @torch.inference_mode()
    def synthesize(self, mid: Tensor, layer: str) -> Tensor:
        mid = self._check(mid, layer)
        return render_faces(self.face_params(mid, layer), self.resolution)


class DisentangledGenerator(_Wrapper):
    """Clean edits: each property follows its own edit coordinate only; nothing else moves.

    The other face parameters (hair, skin, background, face shape, ...) come
    from the mid vector with its three edit coordinates removed, which is the
    same for every image of a vector's grid.
    """

    def __init__(
        self,
        inner: SyntheticFaceGenerator,
        directions: Mapping[str, np.ndarray],
        layer: str,
        gains: tuple[float, float, float] = (1.6, 1.3, 0.8),
    ) -> None:
        super().__init__(inner, directions, layer)
        self.gains = gains

    def face_params(self, mid: Tensor, layer: str) -> dict[str, Tensor]:
        mid = self._check(mid, layer)
        raw = mid @ self._e.T  # (n, 3) uncentred coordinates
        rest = mid - raw @ self._d  # no edit changes this part
        params = self.inner.face_params(rest, layer)
        c = raw - self._centre
        ge, gm, gp = self.gains
        params["eyes_open"] = torch.sigmoid(ge * c[:, 0] + 0.2)
        params["mouth_open"] = torch.sigmoid(gm * c[:, 1] - 0.3)
        params["yaw"] = torch.tanh(gp * c[:, 2])
        return params


class _SideEffect(_Wrapper):
    """``inner``'s faces, with ``strength * (eyes coordinate)`` added to the logit of ``param``."""

    param = ""

    def __init__(self, inner, directions: Mapping[str, np.ndarray], layer: str, strength: float):
        super().__init__(inner, directions, layer)
        self.strength = float(strength)
        self.weights_id += f"-{self.strength}"

    def face_params(self, mid: Tensor, layer: str) -> dict[str, Tensor]:
        mid = self._check(mid, layer)
        params = self.inner.face_params(mid, layer)
        shift = self.strength * self.coords(mid)[:, 0]
        params[self.param] = torch.sigmoid(_logit(params[self.param]) + shift)
        return params


class BackgroundShiftGenerator(_SideEffect):
    """The eyes edit also brightens or darkens the background (a non-local edit)."""

    param = "background"


class EyesMoveMouthGenerator(_SideEffect):
    """The eyes edit also opens or closes the mouth (cross-property leakage)."""

    param = "mouth_open"
