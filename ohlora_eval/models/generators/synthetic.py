"""An embedded synthetic face generator with the shape of Oh-LoRA's StyleGAN-FineTune-v9.

Why it exists: the screening needs a generator that runs anywhere, with no
weights to download, and that behaves like a real one in the way that
matters here: face properties are smooth but non-linear, entangled functions
of the mid vector, so a linear edit works well for some vectors and badly for
others.

Structure (all weights drawn from a fixed seed, identical on every machine),
the same wiring as the v9 mapping network:

    z (512 + 7 labels) --trunk MLP--> h (512)
    w1 = head1(h) (512),   w2 = head2(h) (2048)          mapping_split1 = concat(w1, w2)
    w1' = tail1(w1) (512), w2' = tail2(w2) (512)         mapping_split2 = concat(w1', w2')
    w = w1' + w2' (512) --decoder--> face parameters --renderer--> image
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ohlora_eval.errors import ConfigError, int_in
from ohlora_eval.models.generators.face_render import render_faces
from ohlora_eval.pipeline.device import cuda_environment
from ohlora_eval.pipeline.fingerprint import digest

Z_DIM = 512
LABEL_DIM = 7
W_DIM = 512
W2_DIM = 2048
N_FACTORS = 24
LAYERS: tuple[str, ...] = ("w", "mapping_split1", "mapping_split2")
MID_DIMS: dict[str, int] = {
    "w": W_DIM,
    "mapping_split1": W_DIM + W2_DIM,
    "mapping_split2": 2 * W_DIM,
}


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when present, else CPU. A CUDA device gets the environment CUDA
    computing reads (``pipeline.device.cuda_environment``)."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available; use device=cpu or auto")
    return cuda_environment(torch.device(device))


def check_layer(layer: str, layers: tuple[str, ...]) -> None:
    if layer not in layers:
        raise ConfigError(f"unknown layer {layer!r}; allowed: {', '.join(layers)}")


def _lrelu(x: Tensor) -> Tensor:
    return torch.nn.functional.leaky_relu(x, 0.2)


class SyntheticFaceGenerator:
    """The default generator (``generator=synthetic``): a seeded MLP and a face renderer."""

    latent_dim = Z_DIM + LABEL_DIM
    layers = LAYERS
    mid_dims = MID_DIMS

    def __init__(
        self,
        resolution: int = 64,
        seed: int = 0,
        device: str = "cpu",
        batch_size: int = 256,
        edit_scale: float = 1.6,
    ) -> None:
        self.resolution = int_in("generator.resolution", resolution, 32)
        self.seed = int(seed)
        self.device = resolve_device(device)
        # Rendered a few hundred faces at a time (they stay in the CPU caches); a multiple of
        # 64 keeps every face on the same code path whatever batch it shares.
        self.batch_size = max(64, -(-int(batch_size) // 64) * 64)
        self.edit_scale = float(edit_scale)
        self._build_weights()
        self.weights_id = self._weights_hash()

    # --- weights -----------------------------------------------------------------------
    def _build_weights(self) -> None:
        g = torch.Generator().manual_seed(1_000_003 + self.seed)

        def dense(fan_in: int, fan_out: int, gain: float = math.sqrt(2.0)) -> Tensor:
            return (torch.randn(fan_in, fan_out, generator=g) * (gain / math.sqrt(fan_in))).to(
                self.device
            )

        dims = [Z_DIM + LABEL_DIM, W_DIM, W_DIM, W_DIM]
        self._trunk = [dense(a, b) for a, b in zip(dims, dims[1:])]
        self._trunk_bias = [(torch.randn(b, generator=g) * 0.1).to(self.device) for b in dims[1:]]
        self._head1, self._head2 = dense(W_DIM, W_DIM, 0.7), dense(W_DIM, W2_DIM, 0.7)
        self._tail1, self._tail2 = dense(W_DIM, W_DIM, 1.0), dense(W2_DIM, W_DIM, 1.0)
        self._factors = dense(W_DIM, N_FACTORS, 1.0)
        # Standardise the factors over a fixed calibration sample so every factor
        # is about N(0, edit_scale^2) across faces.
        self._f_mean = torch.zeros(N_FACTORS, device=self.device)
        self._f_std = torch.ones(N_FACTORS, device=self.device)
        w = self.to_mid(self.sample_latents(4096, seed=987_654_321), "w")
        f = w @ self._factors
        self._f_mean = f.mean(0)
        self._f_std = f.std(0) / self.edit_scale

    def _weights_hash(self) -> str:
        arrays = [
            *self._trunk,
            *self._trunk_bias,
            self._head1,
            self._head2,
            self._tail1,
            self._tail2,
            self._factors,
            self._f_mean,
            self._f_std,
        ]
        weights = [a.detach().cpu().numpy() for a in arrays]
        return digest({"weights": weights, "resolution": self.resolution})[:16]

    # --- protocol ------------------------------------------------------------------------
    def sample_latents(self, n: int, seed: int) -> Tensor:
        """(n, 519) standard normal latents (512 z + 7 label dims), reproducible by seed."""
        return self.draw_latents(torch.Generator().manual_seed(int(seed)), int(n))

    def draw_latents(self, g: torch.Generator, k: int) -> Tensor:
        """The next ``k`` rows of the seeded stream (``pipeline/latents.py``)."""
        return torch.randn(int(k), self.latent_dim, generator=g)

    @torch.inference_mode()
    def to_mid(self, z: Tensor, layer: str) -> Tensor:
        check_layer(layer, self.layers)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"latents must have shape (n, {self.latent_dim}); got {tuple(z.shape)}"
            )
        x = z.to(self.device, torch.float32)
        zn = x[:, :Z_DIM]
        zn = zn * torch.rsqrt(zn.pow(2).mean(1, keepdim=True) + 1e-8)  # pixel norm
        h = torch.cat([zn, x[:, Z_DIM:]], 1)
        for wt, b in zip(self._trunk, self._trunk_bias):
            h = _lrelu(h @ wt + b)
        split1 = torch.cat([_lrelu(h @ self._head1), _lrelu(h @ self._head2)], 1)
        if layer == "mapping_split1":
            return split1
        split2 = self._split2_from_split1(split1)
        return split2 if layer == "mapping_split2" else split2[:, :W_DIM] + split2[:, W_DIM:]

    def _split2_from_split1(self, split1: Tensor) -> Tensor:
        return torch.cat(
            [_lrelu(split1[:, :W_DIM] @ self._tail1), _lrelu(split1[:, W_DIM:] @ self._tail2)], 1
        )

    def _to_w(self, mid: Tensor, layer: str) -> Tensor:
        """Any layer's mid vectors -> w, the decoder's input."""
        if layer == "mapping_split1":
            mid = self._split2_from_split1(mid)
            layer = "mapping_split2"
        if layer == "mapping_split2":
            return mid[:, :W_DIM] + mid[:, W_DIM:]
        return mid

    def face_params(self, mid: Tensor, layer: str) -> dict[str, Tensor]:
        """Mid vectors -> face parameters: smooth, saturating, entangled."""
        check_layer(layer, self.layers)
        mid = mid.to(self.device, torch.float32)
        if mid.ndim != 2 or mid.shape[1] != self.mid_dims[layer]:
            raise ValueError(
                f"mid vectors for layer {layer!r} must have shape (n, {self.mid_dims[layer]});"
                f" got {tuple(mid.shape)}"
            )
        u = (self._to_w(mid, layer) @ self._factors - self._f_mean) / self._f_std
        t = torch.tanh(u)
        sig = torch.sigmoid
        # How well an edit "takes" depends on other factors (t[:, 6..8]), properties
        # leak into each other, and each property saturates.
        eyes = u[:, 0] * (1 + 0.55 * t[:, 6]) + 0.35 * u[:, 2] * t[:, 9] + 0.25 * t[:, 1] * t[:, 10]
        mouth = (
            u[:, 1] * (1 + 0.55 * t[:, 7]) + 0.35 * u[:, 0] * t[:, 11] + 0.25 * t[:, 2] * t[:, 12]
        )
        pose = (
            u[:, 2] * (1 + 0.55 * t[:, 8]) + 0.35 * u[:, 1] * t[:, 13] + 0.25 * t[:, 0] * t[:, 14]
        )
        return {
            "eyes_open": sig(1.5 * eyes + 0.2),
            "mouth_open": sig(1.5 * mouth - 0.3),
            "yaw": torch.tanh(0.8 * pose),
            "hair_color": sig(1.2 * u[:, 3] + 0.3 * t[:, 15]),
            "hair_length": sig(1.3 * u[:, 4] + 0.2 * t[:, 16]),
            "hairstyle": sig(1.6 * u[:, 5]),
            "background": sig(1.1 * u[:, 17] + 0.15 * t[:, 0] + 0.15 * t[:, 2]),
            "skin": sig(u[:, 18]),
            "face_width": sig(u[:, 19] + 0.3 * t[:, 1]),
            "face_length": sig(u[:, 20]),
            "bg_tint": sig(u[:, 21]),
            "brow": sig(u[:, 22] + 0.5 * t[:, 0]),
        }

    @torch.inference_mode()
    def synthesize(self, mid: Tensor, layer: str) -> Tensor:
        out = []
        for i in range(0, mid.shape[0], self.batch_size):
            p = self.face_params(mid[i : i + self.batch_size], layer)
            out.append(render_faces(p, self.resolution))
        if not out:
            return torch.empty(0, 3, self.resolution, self.resolution, device=self.device)
        return out[0] if len(out) == 1 else torch.cat(out, 0)
