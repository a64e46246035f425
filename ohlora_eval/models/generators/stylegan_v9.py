"""Oh-LoRA v3.1 StyleGAN-FineTune-v9 as a ``Generator`` plug point.

Facts mirrored from the original test (``run_stylegan_vectorfind_v9_test.py``
and ``common_vectorfind_v9.py`` of WannaBeSuperteur/AI_Projects,
2025_06_07_OhLoRA_v3_1):

* a latent is ``concat(z512, label7)``; the original draws both with
  ``torch.randn`` (per case: 512 values, then 7);
* mid vectors: ``w`` (512), ``mapping_split1 = concat(w1, w2)`` (2560),
  ``mapping_split2 = concat(w1_, w2_)`` (1024);
* from ``mapping_split1`` the image is made by ``w = dense7(w1) + dense_new1(w2)``,
  from ``mapping_split2`` by ``w = w1_ + w2_``; then truncation (psi 1.0 in the
  original) and synthesis with the fixed noise stored in the checkpoint;
* before scoring, the original turns the raw image into 8-bit pixels
  (``clip((x + 1) * 127.5 + 0.5, 0, 255)`` truncated to uint8), saves a JPEG and
  reads it back normalised to [-1, 1]. ``postprocess="uint8"`` (default)
  reproduces the 8-bit step, not the lossy JPEG round trip.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ohlora_eval.errors import ConfigError, int_in
from ohlora_eval.models.networks.checkpoints import (
    chunks,
    load_checkpoint,
    resolve_device,
)
from ohlora_eval.models.networks.stylegan_v9 import LABEL_DIM, SPLIT_HIDDEN_DIM, W_DIM, Z_DIM
from ohlora_eval.models.networks.stylegan_v9 import StyleGANV9Network as _Network
from ohlora_eval.pipeline.fidelity import seeded

PUBLISHED_FILE = "stylegan_gen_fine_tuned_v9.pth"
POSTPROCESS_MODES = ("uint8", "clamp", "raw")


def to_uint8_levels(image: Tensor) -> Tensor:
    """Raw generator output -> the [-1, 1] image the original's scorer saw (minus JPEG).

    Same arithmetic as the original: float64 ``(x + 1) * 127.5 + 0.5``, clipped
    to [0, 255] and truncated to an integer, then ``(q / 255 - 0.5) / 0.5`` in
    float32 like torchvision's ToTensor + Normalize(0.5, 0.5).
    """
    levels = ((image.double() + 1.0) * 127.5 + 0.5).clamp(0.0, 255.0).floor()
    return (levels.float() / 255.0 - 0.5) / 0.5


class StyleGANV9Generator:
    """Latent (n, 519) -> mid vector -> image (n, 3, 256, 256) with the Oh-LoRA v3.1 weights.

    ``checkpoint`` is the published ``stylegan_gen_fine_tuned_v9.pth`` (a bare
    state dict); ``None`` is refused unless ``allow_random_init`` (tests and
    benchmarks), which builds deterministic random weights. Mixed precision is a
    measuring setting (``measure.precision``, synthesis only: the mapping always runs
    in float32 because edits are done on its outputs). ``truncation_psi < 1``
    truncates the first ``truncation_layers`` synthesis layers (all 14 when
    None); the original used psi 1.0 (no truncation).
    """

    latent_dim: int = Z_DIM + LABEL_DIM
    layers: tuple[str, ...] = ("w", "mapping_split1", "mapping_split2")
    mid_dims: dict[str, int] = {
        "w": W_DIM,
        "mapping_split1": W_DIM + SPLIT_HIDDEN_DIM,
        "mapping_split2": 2 * W_DIM,
    }
    image_size: int = 256

    @property
    def pad_multiple(self) -> int:
        """Calls padded to whole ``batch_size`` chunks run every image in the same shape."""
        return self.batch_size

    def __init__(
        self,
        checkpoint: str | None,
        device: str = "auto",
        batch_size: int | None = None,
        truncation_psi: float = 1.0,
        truncation_layers: int | None = None,
        postprocess: str = "uint8",
        allow_random_init: bool = False,
        mapping_batch: int = 1,
    ) -> None:
        """Eight parameters, one of two such in the package: Hydra instantiates this class
        from ``conf/generator/stylegan_v9.yaml``, each parameter one ``generator.*`` key."""
        if postprocess not in POSTPROCESS_MODES:
            raise ConfigError(
                f"postprocess must be one of {POSTPROCESS_MODES}, got {postprocess!r}"
            )
        self.device = resolve_device(device)
        # None: 1 image per forward on a CPU (measured fastest there: a batch of 8 or 50
        # costs 2-3x more per image, its 256x256 activations leave the caches), 16 on a GPU.
        if batch_size is None:
            batch_size = 16 if self.device.type == "cuda" else 1
        self.batch_size = max(1, int(batch_size))
        self.truncation_psi = float(truncation_psi)
        self.truncation_layers = truncation_layers
        self.postprocess = postprocess
        # Latents mapped this many at a time. 1 (default): each mid vector is computed
        # alone, as the original did, so it is the original's bit for bit and never depends
        # on the batch (a matrix product's bits change with its row count). The mapping
        # is cheap next to synthesis; raise it only for huge samples on a GPU.
        self.mapping_batch = int_in("generator.mapping_batch", mapping_batch, 1)
        with seeded(0):  # random-init builds are reproducible; the caller's RNG is kept
            network = _Network()
        self.weights_id = load_checkpoint(
            network,
            checkpoint,
            config_key="generator.checkpoint",
            published_name=PUBLISHED_FILE,
            allow_random_init=allow_random_init,
        )
        self.network = network.eval().requires_grad_(False).to(self.device)
        self._stored_noise = [m.noise.clone() for m in self.network.synthesis.noise_layers()]
        self.noise_seed: int | None = None
        self._channels_last = False
        self._compile = False
        self._compiled: Callable[..., Tensor] | None = None

    @property
    def speed(self) -> dict[str, bool]:
        """The memory layout and compilation in use (``set_speed``)."""
        return {"channels_last": self._channels_last, "compile": self._compile}

    def set_speed(self, *, channels_last: bool = False, compile: bool = False) -> list[str]:
        """``measure.channels_last``: the synthesis network's weights (and so its feature
        maps) in NHWC layout; ``measure.compile``: ``torch.compile`` of the synthesis
        (built once, on first use; the mapping is never compiled). Both off: the plain
        network. Returns the switches now on."""
        if bool(channels_last) != self._channels_last:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            self.network.synthesis.to(memory_format=fmt)
            self._channels_last = bool(channels_last)
        if compile and self._compiled is None:
            self._compiled = torch.compile(self.network.synthesize_w, dynamic=False)
        self._compile = bool(compile)
        return [k for k, on in self.speed.items() if on]

    def sample_latents(self, n: int, seed: int) -> Tensor:
        """(n, 519) float32 on CPU: per row ``randn(512)`` then ``randn(7)`` from one seeded stream.

        This is the original test's draw order (z part, then the 7 label dims,
        both standard normal), so row i does not depend on how many rows follow.
        """
        return self.draw_latents(torch.Generator().manual_seed(int(seed)), int(n))

    def draw_latents(self, g: torch.Generator, k: int) -> Tensor:
        """The next ``k`` rows of the seeded stream (``pipeline/latents.py``)."""
        out = torch.empty(int(k), self.latent_dim, dtype=torch.float32)
        for i in range(int(k)):
            out[i, :Z_DIM] = torch.randn(Z_DIM, generator=g)
            out[i, Z_DIM:] = torch.randn(LABEL_DIM, generator=g)
        return out

    def _check_layer(self, layer: str) -> None:
        if layer not in self.mid_dims:
            raise ConfigError(f"unknown layer {layer!r}; choose one of {self.layers}")

    def to_mid(self, z: Tensor, layer: str) -> Tensor:
        """(n, 519) latents -> (n, mid_dims[layer]) float32 mid vectors, returned on CPU."""
        self._check_layer(layer)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape (n, {self.latent_dim}), got {tuple(z.shape)}")
        parts = []
        with torch.no_grad():
            for part in chunks(z.shape[0], self.mapping_batch):
                zz = z[part].to(self.device, torch.float32)
                out = self.network.mapping(zz[:, :Z_DIM], zz[:, Z_DIM:])
                if layer == "w":
                    mid = out.w
                elif layer == "mapping_split1":
                    mid = torch.cat((out.w1, out.w2), dim=1)
                else:
                    mid = torch.cat((out.w1_, out.w2_), dim=1)
                parts.append(mid.float().cpu())
        if not parts:
            return torch.empty(0, self.mid_dims[layer])
        return torch.cat(parts)

    def synthesize(self, mid: Tensor, layer: str) -> Tensor:
        """(n, mid_dim) -> (n, 3, 256, 256) float32 on ``self.device``, post-processed.

        ``postprocess``: "uint8" (default: clamp + 8-bit levels as the original
        before scoring), "clamp" (to [-1, 1]) or "raw" (unclamped network
        output, what the parity numbers record).
        """
        self._check_layer(layer)
        if mid.ndim != 2 or mid.shape[1] != self.mid_dims[layer]:
            raise ValueError(
                f"expected mid of shape (n, {self.mid_dims[layer]}) for {layer!r}, "
                f"got {tuple(mid.shape)}"
            )
        parts = []
        synthesize_w = (
            self._compiled if self._compile and self._compiled else self.network.synthesize_w
        )
        with torch.inference_mode():
            for part in chunks(mid.shape[0], self.batch_size):
                m = mid[part].to(self.device, torch.float32)
                w = self.network.w_from_mid(m, layer)
                image = synthesize_w(w, self.truncation_psi, self.truncation_layers)
                parts.append(self._postprocess(image.float()))
        if not parts:
            return torch.empty(0, 3, self.image_size, self.image_size, device=self.device)
        # Concatenating outside inference mode gives an ordinary tensor.
        return torch.cat(parts)

    def _postprocess(self, image: Tensor) -> Tensor:
        if self.postprocess == "raw":
            return image
        if self.postprocess == "clamp":
            return image.clamp(-1.0, 1.0)
        return to_uint8_levels(image)

    def set_noise_seed(self, seed: int | None) -> None:
        """None: the fixed noise stored in the checkpoint; an int: fresh deterministic noise.

        Fresh noise is one map per layer (shared by the whole batch, as the
        stored noise is), drawn in layer order from ``torch.Generator(seed)``.
        """
        gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        for module, stored in zip(
            self.network.synthesis.noise_layers(), self._stored_noise, strict=True
        ):
            if gen is None:
                fresh = stored
            else:
                fresh = torch.randn(tuple(stored.shape), generator=gen, dtype=stored.dtype)
            module.noise.copy_(fresh.to(module.noise.device))
        self.noise_seed = seed

    def __repr__(self) -> str:
        return (
            f"StyleGANV9Generator(weights_id={self.weights_id!r}, device={str(self.device)!r}, "
            f"postprocess={self.postprocess!r})"
        )
