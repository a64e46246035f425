"""A trained face GAN from PyPI as a ``Generator`` plug point (``generator=dcgan_digiface``).

The weights are the file ``gan_face_generate/weights.tar`` inside the wheel of
``gan-face-generate==1.1.1`` (MIT; a DCGAN trained on DigiFace-1M, whose images are for
non-commercial research). The package is installed without its dependencies and never
imported: the file is found through the installed distribution's file list and read with
``torch.load(weights_only=True)`` into our own network (``models/networks/dcgan.py``).

Layers where edits are made: ``z`` (the latent itself, 100 values) and ``block1`` (the
512 x 4 x 4 output of the first block, flattened: 8,192 values). BatchNorm runs in eval
mode (its stored statistics), so an image depends on its own latent only, never on the
other images of its batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ohlora_eval.errors import ConfigError, number_in
from ohlora_eval.models.networks.checkpoints import (
    CheckpointError,
    _unwrap,
    check_state_dict,
    chunks,
    file_weights_id,
    packaged_file,
    read_state_file,
    resolve_device,
)
from ohlora_eval.models.networks.dcgan import BLOCK1_SHAPE, IMAGE_SIZE, STATE_KEY, Z_DIM
from ohlora_eval.models.networks.dcgan import DCGANNetwork as _Network
from ohlora_eval.pipeline.fidelity import seeded

DISTRIBUTION = "gan-face-generate"
WEIGHTS_IN_WHEEL = "gan_face_generate/weights.tar"
INSTALL_HINT = (
    "pip install --no-deps gan-face-generate==1.1.1 (or make setup, which installs .[faces])"
)
LAYERS: tuple[str, ...] = ("z", "block1")
MID_DIMS: dict[str, int] = {"z": Z_DIM, "block1": int(np.prod(BLOCK1_SHAPE))}


def weights_path(checkpoint: str | None) -> Path:
    """``generator.checkpoint`` or, when null, the file inside the installed wheel."""
    if checkpoint is None or str(checkpoint).strip() == "":
        return packaged_file(DISTRIBUTION, WEIGHTS_IN_WHEEL, "generator.checkpoint", INSTALL_HINT)
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint file not found: {path} (generator.checkpoint); leave it null to use"
            f" the weights inside the {DISTRIBUTION} wheel ({INSTALL_HINT})"
        )
    return path


class DCGANFaceGenerator:
    """Latent z (n, 100) -> mid vector (``z`` or ``block1``) -> image (n, 3, 64, 64) in [-1, 1]."""

    latent_dim = Z_DIM
    layers = LAYERS
    mid_dims = MID_DIMS
    image_size = IMAGE_SIZE

    @staticmethod
    def check_installed(checkpoint: str | None = None, **_: object) -> None:
        """Before a run opens: the weights can be found (else one line with the install
        command)."""
        weights_path(checkpoint)

    def __init__(
        self,
        checkpoint: str | None = None,
        device: str = "auto",
        batch_size: int = 256,
        edit_unit: Mapping[str, float] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        units = dict(edit_unit or {})
        unknown = sorted(set(units) - set(LAYERS))
        if unknown:
            raise ConfigError(
                f"generator.edit_unit has unknown layers {unknown}; allowed: {', '.join(LAYERS)}"
            )
        for layer, unit in units.items():
            number_in(f"generator.edit_unit.{layer}", unit, 0.0, 1e6, low_open=True)
        # How far one grid unit moves a mid vector along a unit direction (EditSetup.steps).
        self.edit_unit = {layer: float(u) for layer, u in units.items()}
        # 256 faces per forward: measured fastest on this 2-core CPU (64: 347/s, 256: 373/s,
        # 512: 338/s). A multiple of 64, the rows every call is padded to.
        self.batch_size = max(64, -(-int(batch_size) // 64) * 64)
        path = weights_path(checkpoint)
        key = "generator.checkpoint"
        obj = read_state_file(path, config_key=key)
        if isinstance(obj, dict) and STATE_KEY in obj:
            obj = obj[STATE_KEY]
        state = _unwrap(obj, f"{path} ({key})")
        with seeded(0):  # its random init (replaced by the weights) keeps the caller's RNG
            network = _Network()
        check_state_dict(network, state, f"{path} ({key})")
        network.load_state_dict(state, strict=True)
        self.weights_id = file_weights_id(path)
        self.weights_path = str(path)
        self.network = network.eval().requires_grad_(False).to(self.device)
        self._channels_last = False

    @property
    def pad_multiple(self) -> int:
        """Calls are padded to 64 rows, so a face is computed in the same batch shape however
        many faces share its call (its bits do not depend on the others)."""
        return 64

    @property
    def speed(self) -> dict[str, bool]:
        return {"channels_last": self._channels_last, "compile": False}

    def set_speed(self, *, channels_last: bool = False, compile: bool = False) -> list[str]:
        """``measure.channels_last``: the network in NHWC layout (about 1.3x faster on this
        CPU). ``compile`` is not offered (the network is small; nothing to gain here)."""
        if bool(channels_last) != self._channels_last:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            self.network.to(memory_format=fmt)
            self._channels_last = bool(channels_last)
        return [k for k, on in self.speed.items() if on]

    def sample_latents(self, n: int, seed: int) -> Tensor:
        """(n, 100) standard normal latents from ``seed`` (the DCGAN's own prior)."""
        return self.draw_latents(torch.Generator().manual_seed(int(seed)), int(n))

    def draw_latents(self, g: torch.Generator, k: int) -> Tensor:
        """The next ``k`` rows of the seeded stream (``pipeline/latents.py``)."""
        return torch.randn(int(k), Z_DIM, generator=g)

    def _check(self, x: Tensor, layer: str, dim: int, what: str) -> None:
        if layer not in self.layers:
            raise ConfigError(f"unknown layer {layer!r}; allowed: {', '.join(self.layers)}")
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(f"{what} must have shape (n, {dim}); got {tuple(x.shape)}")

    def to_mid(self, z: Tensor, layer: str) -> Tensor:
        """(n, 100) -> (n, mid_dims[layer]) float32 on ``self.device``."""
        self._check(z, layer, Z_DIM, "latents")
        z = z.to(self.device, torch.float32)
        if layer == "z":
            return z.clone()
        with torch.no_grad():
            parts = [self.network.block1(z[s]) for s in chunks(z.shape[0], self.batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.mid_dims[layer])

    def synthesize(self, mid: Tensor, layer: str) -> Tensor:
        """(n, mid_dims[layer]) -> (n, 3, 64, 64) float32 in [-1, 1] on ``self.device``."""
        self._check(mid, layer, self.mid_dims[layer], f"mid vectors for layer {layer!r}")
        mid = mid.to(self.device, torch.float32)
        step = self.network.forward if layer == "z" else self.network.from_block1
        with torch.inference_mode():
            parts = [step(mid[s]) for s in chunks(mid.shape[0], self.batch_size)]
        if not parts:
            return torch.empty(0, 3, IMAGE_SIZE, IMAGE_SIZE, device=self.device)
        return torch.cat(parts).contiguous()

    def __repr__(self) -> str:
        return f"DCGANFaceGenerator(weights_id={self.weights_id!r}, device={str(self.device)!r})"
