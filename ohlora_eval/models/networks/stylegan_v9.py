"""The Oh-LoRA v3.1 face generator (StyleGAN-FineTune-v9, 256x256), written from scratch.

It computes exactly what the original ``StyleGANGeneratorForV9(resolution=256)``
computes, and its ``state_dict`` has the same key names and shapes, so the
published ``stylegan_gen_fine_tuned_v9.pth`` loads strictly. The design is the
genforce StyleGAN (v1) generator:

* mapping: label (7) @ ``label_weight`` (7x16) appended to z (512), pixel norm,
  dense0..dense5, then two parallel heads. ``w1 = dense6(h)`` (512) and
  ``w2 = dense_new0(h)`` (2048) form "mapping_split1"; ``w1_ = dense7(w1)`` and
  ``w2_ = dense_new1(w2)`` (512 each) form "mapping_split2"; ``w = w1_ + w2_``.
  Every dense layer uses equalized lr (``gain/sqrt(fan_in) * lr_mul``, gain
  sqrt(2), lr_mul 0.01) and leaky ReLU 0.2, the last ones included.
* truncation: ``w`` repeated for the 14 synthesis layers, optionally pulled
  towards ``w_avg``.
* synthesis: 4x4 learned constant, two layers per resolution 4..256 (first one
  upsamples: nearest+conv below 128, transposed conv with the 4-tap summed
  kernel from 128 on, then a 3x3 binomial blur), each followed by fixed noise,
  bias, leaky ReLU 0.2, instance norm and AdaIN style modulation
  ``x * (1 + scale) + shift``. One 1x1 "toRGB" per resolution; with ``lod = 0``
  the image is the last toRGB, raw (no tanh, no clamp).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Z_DIM = 512
LABEL_DIM = 7
LABEL_EMBED_DIM = 16
W_DIM = 512
SPLIT_HIDDEN_DIM = 2048
RESOLUTION = 256
INIT_RESOLUTION = 4
MAPPING_LR_MUL = 0.01
LRELU_SLOPE = 0.2
_GAIN = math.sqrt(2.0)
_EPS = 1e-8
_FUSED_FROM_RESOLUTION = 128  # genforce's "auto" fused-scale threshold


def _scale(gain: float, fan_in: int, lr_mul: float = 1.0) -> float:
    """Equalized-learning-rate runtime multiplier (same float64 arithmetic as the original)."""
    return gain / math.sqrt(fan_in) * lr_mul


def channels_at(resolution: int) -> int:
    """Feature maps per resolution: min(16384 / res, 512)."""
    return min((16 << 10) // resolution, 512)


class MappingOutputs(NamedTuple):
    """Every intermediate vector the Oh-LoRA tooling can edit."""

    w: Tensor
    w1: Tensor
    w2: Tensor
    w1_: Tensor
    w2_: Tensor


class EqualizedDense(nn.Module):
    """Fully connected layer with runtime weight scaling and leaky ReLU."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = MAPPING_LR_MUL) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.weight_scale = _scale(_GAIN, in_dim, lr_mul)
        self.bias_scale = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight * self.weight_scale, self.bias * self.bias_scale)
        return F.leaky_relu(y, LRELU_SLOPE)


class MappingNetwork(nn.Module):
    """z + label -> (w, w1, w2, w1_, w2_); see the module docstring."""

    def __init__(self, n_layers: int = 8) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.label_weight = nn.Parameter(torch.randn(LABEL_DIM, LABEL_EMBED_DIM))
        for i in range(n_layers):
            in_dim = Z_DIM + LABEL_EMBED_DIM if i == 0 else W_DIM
            self.add_module(f"dense{i}", EqualizedDense(in_dim, W_DIM))
        self.dense_new0 = EqualizedDense(W_DIM, SPLIT_HIDDEN_DIM)
        self.dense_new1 = EqualizedDense(SPLIT_HIDDEN_DIM, W_DIM)

    def _dense(self, i: int) -> EqualizedDense:
        return getattr(self, f"dense{i}")

    def forward(self, z: Tensor, label: Tensor) -> MappingOutputs:
        if z.ndim != 2 or z.shape[1] != Z_DIM or label.shape != (z.shape[0], LABEL_DIM):
            raise ValueError(
                f"expected z (n, {Z_DIM}) and label (n, {LABEL_DIM}), "
                f"got {tuple(z.shape)} and {tuple(label.shape)}"
            )
        h = torch.cat((z, label @ self.label_weight), dim=1)
        h = h / torch.sqrt(h.pow(2).mean(dim=1, keepdim=True) + _EPS)  # pixel norm
        for i in range(self.n_layers - 2):
            h = self._dense(i)(h)
        w1 = self._dense(self.n_layers - 2)(h)
        w2 = self.dense_new0(h)
        w1_, w2_ = self.split1_to_split2(w1, w2)
        return MappingOutputs(w=w1_ + w2_, w1=w1, w2=w2, w1_=w1_, w2_=w2_)

    def split1_to_split2(self, w1: Tensor, w2: Tensor) -> tuple[Tensor, Tensor]:
        """The last mapping step of both heads (what the original applies to edited split1)."""
        return self._dense(self.n_layers - 1)(w1), self.dense_new1(w2)


class Truncation(nn.Module):
    """Broadcast w to every synthesis layer, optionally truncated towards ``w_avg``."""

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.register_buffer("w_avg", torch.zeros(W_DIM))

    def forward(self, w: Tensor, psi: float = 1.0, n_truncated: int | None = None) -> Tensor:
        wp = w.unsqueeze(1).expand(-1, self.n_layers, -1)
        n_truncated = self.n_layers if n_truncated is None else n_truncated
        if psi >= 1.0 or n_truncated <= 0:
            return wp
        coefs = torch.ones(1, self.n_layers, 1, dtype=wp.dtype, device=wp.device)
        coefs[:, :n_truncated] = psi
        avg = self.w_avg.view(1, 1, -1)
        return avg + (wp - avg) * coefs


class NoiseInjection(nn.Module):
    """Adds a stored (fixed) single-channel noise map, scaled per channel."""

    def __init__(self, resolution: int, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))
        self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.noise * self.weight.view(1, -1, 1, 1)


class StyleModulation(nn.Module):
    """AdaIN: affine map of w to per-channel (scale, shift); ``x * (1 + scale) + shift``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.weight = nn.Parameter(torch.randn(2 * channels, W_DIM))
        self.bias = nn.Parameter(torch.zeros(2 * channels))
        self.weight_scale = _scale(1.0, W_DIM)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        style = F.linear(w, self.weight * self.weight_scale, self.bias)
        style = style.view(-1, 2, self.channels, 1, 1)
        return x * (style[:, 0] + 1) + style[:, 1]


class BlurFilter(nn.Module):
    """Depthwise 3x3 binomial blur after every upsampling convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps)
        kernel = (kernel / kernel.sum()).expand(channels, 1, 3, 3).contiguous()
        self.register_buffer("kernel", kernel)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel, padding=1, groups=x.shape[1])


def _instance_norm(x: Tensor) -> Tensor:
    """Per-channel standardisation; computed in float32 so fp16 autocast cannot overflow."""
    dtype = x.dtype
    x = x.float()
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return (x / torch.sqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + _EPS)).to(dtype)


class SynthesisLayer(nn.Module):
    """Styled conv layer: [const | (upsample) conv (+blur)] -> noise, bias, act, IN, style.

    ``mode`` is "const" (the 4x4 learned input), "conv" (3x3, same size),
    "upsample" (nearest x2 then 3x3) or "fused_upsample" (stride-2 transposed
    conv with the 4x4 kernel made by summing the four shifted 3x3 kernels).
    """

    def __init__(self, in_ch: int, out_ch: int, resolution: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.bias = nn.Parameter(torch.zeros(out_ch))
        if mode == "const":
            self.const = nn.Parameter(torch.ones(1, in_ch, resolution, resolution))
        else:
            self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
            self.weight_scale = _scale(_GAIN, in_ch * 9)
        self.apply_noise = NoiseInjection(resolution, out_ch)
        self.style = StyleModulation(out_ch)
        if mode in ("upsample", "fused_upsample"):
            self.blur = BlurFilter(out_ch)

    def _convolve(self, x: Tensor) -> Tensor:
        weight = self.weight * self.weight_scale
        if self.mode == "fused_upsample":
            padded = F.pad(weight, (1, 1, 1, 1))
            kernel = (
                padded[:, :, 1:, 1:]
                + padded[:, :, :-1, 1:]
                + padded[:, :, 1:, :-1]
                + padded[:, :, :-1, :-1]
            )
            x = F.conv_transpose2d(x, kernel.transpose(0, 1), stride=2, padding=1)
        else:
            if self.mode == "upsample":
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = F.conv2d(x, weight, padding=1)
        return self.blur(x) if hasattr(self, "blur") else x

    def forward(self, x: Tensor | None, w: Tensor) -> Tensor:
        if self.mode == "const":
            x = self.const.expand(w.shape[0], -1, -1, -1)
        else:
            x = self._convolve(x)
        x = self.apply_noise(x)
        x = x + self.bias.view(1, -1, 1, 1)
        x = F.leaky_relu(x, LRELU_SLOPE)
        x = _instance_norm(x)
        return self.style(x, w)


class ToRGB(nn.Module):
    """Linear 1x1 projection of features to RGB (gain 1)."""

    def __init__(self, in_ch: int, image_channels: int = 3) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(image_channels))
        self.weight = nn.Parameter(torch.randn(image_channels, in_ch, 1, 1))
        self.weight_scale = _scale(1.0, in_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.weight_scale) + self.bias.view(1, -1, 1, 1)


class SynthesisNetwork(nn.Module):
    """wp (n, 14, 512) -> image (n, 3, 256, 256); honours the stored ``lod`` like the original."""

    def __init__(self, resolution: int = RESOLUTION) -> None:
        super().__init__()
        self.register_buffer("lod", torch.zeros(()))
        self.n_blocks = int(math.log2(resolution // INIT_RESOLUTION)) + 1
        self.n_layers = 2 * self.n_blocks
        self.resolutions = [INIT_RESOLUTION << b for b in range(self.n_blocks)]
        for block, res in enumerate(self.resolutions):
            ch = channels_at(res)
            if block == 0:
                first = SynthesisLayer(ch, ch, res, "const")
            else:
                mode = "fused_upsample" if res >= _FUSED_FROM_RESOLUTION else "upsample"
                first = SynthesisLayer(channels_at(res // 2), ch, res, mode)
            self.add_module(f"layer{2 * block}", first)
            self.add_module(f"layer{2 * block + 1}", SynthesisLayer(ch, ch, res, "conv"))
            self.add_module(f"output{block}", ToRGB(ch))

    def noise_layers(self) -> list[NoiseInjection]:
        """Noise modules in layer order (for swapping the fixed noise)."""
        return [getattr(self, f"layer{i}").apply_noise for i in range(self.n_layers)]

    def forward(self, wp: Tensor, lod: float | None = None) -> Tensor:
        lod = float(self.lod) if lod is None else float(lod)
        if not 0.0 <= lod <= self.n_blocks - 1:
            raise ValueError(f"lod must be within [0, {self.n_blocks - 1}], got {lod}")
        x: Tensor | None = None
        image: Tensor | None = None
        for block in range(self.n_blocks):
            block_lod = self.n_blocks - 1 - block
            if lod < block_lod + 1:
                x = getattr(self, f"layer{2 * block}")(x, wp[:, 2 * block])
                x = getattr(self, f"layer{2 * block + 1}")(x, wp[:, 2 * block + 1])
            to_rgb = getattr(self, f"output{block}")
            if block_lod - 1 < lod <= block_lod:
                image = to_rgb(x)
            elif block_lod < lod < block_lod + 1:  # progressive-growing fade-in
                alpha = math.ceil(lod) - lod
                upsampled = F.interpolate(image, scale_factor=2, mode="nearest")
                image = to_rgb(x) * alpha + upsampled * (1 - alpha)
            elif lod >= block_lod + 1:
                image = F.interpolate(image, scale_factor=2, mode="nearest")
        assert image is not None
        return image


class StyleGANV9Network(nn.Module):
    """The whole generator; ``state_dict`` matches the original key for key."""

    def __init__(self) -> None:
        super().__init__()
        # Registration order decides state_dict order: mapping, truncation, synthesis.
        synthesis = SynthesisNetwork()
        self.mapping = MappingNetwork()
        self.truncation = Truncation(synthesis.n_layers)
        self.synthesis = synthesis

    def w_from_mid(self, mid: Tensor, layer: str) -> Tensor:
        """Recover w from an intermediate vector exactly as the original test does."""
        if layer == "w":
            return mid
        if layer == "mapping_split1":
            w1_, w2_ = self.mapping.split1_to_split2(mid[:, :W_DIM], mid[:, W_DIM:])
            return w1_ + w2_
        if layer == "mapping_split2":
            return mid[:, :W_DIM] + mid[:, W_DIM:]
        raise ValueError(f"unknown layer {layer!r}")

    def synthesize_w(self, w: Tensor, psi: float = 1.0, n_truncated: int | None = None) -> Tensor:
        return self.synthesis(self.truncation(w, psi, n_truncated))

    def forward(self, z: Tensor, label: Tensor) -> dict[str, Tensor]:
        """Full pass (truncation off), returning every mapping vector and the raw image."""
        out = self.mapping(z, label)
        return {**out._asdict(), "image": self.synthesize_w(out.w)}
