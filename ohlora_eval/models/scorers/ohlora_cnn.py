"""Oh-LoRA's merged property-score CNN as a ``PropertyScorer`` plug point.

The CNN does its own per-property crops, so any (n, 3, 256, 256) image in
[-1, 1] can be scored. The grouping thresholds default to the medians the
original read from ``v9_property_scores/property_scores_mean_and_median.csv``
(hair_color -0.4315, hair_length 0.5685, background_mean 0.6753, hairstyle
0.0372); a score ``>=`` its median is group "h", else "l".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from ohlora_eval.errors import ConfigError
from ohlora_eval.models.networks.checkpoints import (
    chunks,
    load_checkpoint,
    resolve_device,
)
from ohlora_eval.models.networks.property_cnn import IMAGE_SIZE, PROPERTY_COLUMNS, MergedPropertyCNN
from ohlora_eval.pipeline.fidelity import seeded

PUBLISHED_FILE = "ohlora_v3_merged_property_cnn.pth"
OHLORA_GROUP_MEDIANS: dict[str, float] = {
    "hair_color": -0.4315,
    "hair_length": 0.5685,
    "background_mean": 0.6753,
    "hairstyle": 0.0372,
}


def _medians(group_medians: Mapping[str, float] | str | None) -> dict[str, float] | None:
    """None -> Oh-LoRA's fixed medians; "sample" -> None (use each sample's own medians)."""
    if group_medians is None:
        return dict(OHLORA_GROUP_MEDIANS)
    if isinstance(group_medians, str):
        if group_medians == "sample":
            return None
        raise ConfigError(
            f"group_medians must be a mapping, null or 'sample', got {group_medians!r}"
        )
    try:
        medians = {str(k): float(v) for k, v in group_medians.items()}
    except (AttributeError, TypeError, ValueError):
        raise ConfigError(
            f"group_medians must be a mapping, null or 'sample', got {group_medians!r}"
        ) from None
    unknown = set(medians) - set(PROPERTY_COLUMNS)
    if unknown:
        raise ConfigError(f"group_medians has unknown properties {sorted(unknown)}")
    return medians


class OhLoRACNNScorer:
    """Images -> eight property scores per image with the Oh-LoRA v3.1 merged CNN.

    ``checkpoint`` is the published ``ohlora_v3_merged_property_cnn.pth`` (a
    bare state dict); ``None`` is refused unless ``allow_random_init``.
    Mixed precision is a measuring setting (``measure.precision``), not the scorer's.
    """

    properties: tuple[str, ...] = PROPERTY_COLUMNS

    @property
    def pad_multiple(self) -> int:
        """Calls padded to whole ``batch_size`` chunks run every image in the same shape."""
        return self.batch_size

    def __init__(
        self,
        checkpoint: str | None,
        device: str = "auto",
        batch_size: int | None = None,
        group_medians: Mapping[str, float] | str | None = None,
        allow_random_init: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        # None: 1 image per forward on a CPU (measured: 0.067 s/image at batch 1 vs
        # 0.144 at batch 64 with this network), 64 on a GPU.
        if batch_size is None:
            batch_size = 64 if self.device.type == "cuda" else 1
        self.batch_size = max(1, int(batch_size))
        self.group_medians = _medians(group_medians)
        with seeded(0):  # random-init builds are reproducible; the caller's RNG is kept
            network = MergedPropertyCNN()
        self.weights_id = load_checkpoint(
            network,
            checkpoint,
            config_key="scorer.checkpoint",
            published_name=PUBLISHED_FILE,
            allow_random_init=allow_random_init,
        )
        self.network = network.eval().requires_grad_(False).to(self.device)
        self._channels_last = False
        self._compile = False
        self._compiled: Callable[[Tensor], Tensor] | None = None

    def score_matrix(self, images: Tensor, *, on_device: bool = False) -> Tensor:
        """(n, 3, 256, 256) -> (n, 8) float32 on CPU (``on_device``: where computed), columns
        ``properties``.

        Float images are taken as [-1, 1]; uint8 images are normalised the way
        the original read its saved JPEGs (``q / 255`` then ``(v - 0.5) / 0.5``).
        The batches' scores stay on the device until all are done: one copy to the host.
        """
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"expected images (n, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(images.shape)}"
            )
        forward = self._compiled if self._compile and self._compiled else self.network
        parts = []
        with torch.inference_mode():
            for part in chunks(images.shape[0], self.batch_size):
                x = images[part].to(self.device)
                x = (x.float() / 255.0 - 0.5) / 0.5 if x.dtype == torch.uint8 else x.float()
                if self._channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                parts.append(forward(x).float())
        if not parts:
            out = torch.empty(0, len(self.properties), device=self.device)
        else:
            out = torch.cat(parts)
        return out if on_device else out.cpu()

    @property
    def speed(self) -> dict[str, bool]:
        """The memory layout and compilation in use (``set_speed``)."""
        return {"channels_last": self._channels_last, "compile": self._compile}

    def set_speed(self, *, channels_last: bool = False, compile: bool = False) -> list[str]:
        """``measure.channels_last``: the network's weights and its inputs in NHWC layout;
        ``measure.compile``: ``torch.compile`` of the network (built once, on first use).
        Both off: the plain network. Returns the switches now on."""
        if bool(channels_last) != self._channels_last:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            self.network.to(memory_format=fmt)
            self._channels_last = bool(channels_last)
        if compile and self._compiled is None:
            self._compiled = torch.compile(self.network, dynamic=False)
        self._compile = bool(compile)
        return [k for k, on in self.speed.items() if on]

    def set_train_mode(self, on: bool) -> None:
        """Train mode (``measure.scorer_mode=train``): the network's dropout layers are
        active, as in the original, which never called ``.eval()``. The network has no
        batch norm, so nothing else changes and nothing is learned."""
        self.network.train(bool(on))

    def score(self, images: Tensor) -> dict[str, Tensor]:
        """Each property -> (n,) float32 on CPU."""
        scores = self.score_matrix(images)
        return {name: scores[:, i].contiguous() for i, name in enumerate(self.properties)}

    def score_on_device(self, images: Tensor) -> dict[str, Tensor]:
        """``score``, the scores left on the network's device (the measuring step copies a
        whole chunk's scores to the host at once)."""
        scores = self.score_matrix(images, on_device=True)
        return {name: scores[:, i] for i, name in enumerate(self.properties)}

    def __repr__(self) -> str:
        return f"OhLoRACNNScorer(weights_id={self.weights_id!r}, device={str(self.device)!r})"
