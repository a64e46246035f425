"""The plug points every model implements (docs/architecture.md, "Plug points").

Kept tiny on purpose: anything that can produce images from latents and
anything that can measure properties on images can be screened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: the protocols load without torch or numpy
    import numpy as np
    from torch import Tensor

CORE_PROPERTIES: tuple[str, ...] = ("eyes", "mouth", "pose")
GROUP_PROPERTIES: tuple[str, ...] = ("hair_color", "hair_length", "background_mean", "hairstyle")


@runtime_checkable
class Generator(Protocol):
    """Latent vector -> intermediate ("mid") vector -> image.

    ``synthesize`` returns float images in [-1, 1], shape (n, 3, H, W), on the
    generator's own device (the scorer moves them if it needs to).
    Optional attributes the suite uses when present:
    ``mid_dims: dict[str, int]`` (mid vector length per layer),
    ``weights_id: str`` (a hash of the weights, for caches and lineage),
    ``set_noise_seed(seed: int | None)`` (generators with per-layer noise),
    ``batch_size`` (images per forward; the hot loop sizes its calls to it),
    ``pad_multiple: int`` (calls are padded to a multiple of this many rows so an
    image's numbers never depend on its batch-mates; default 64),
    ``set_speed(channels_last: bool, compile: bool)`` and ``speed`` (the current pair;
    ``measure.channels_last`` / ``measure.compile``, see ``pipeline/device.py``),
    ``edit_unit: dict[str, float]`` (per layer, how far one grid unit moves a mid vector
    along a unit direction; 1.0, Oh-LoRA's, where absent: ``EditSetup.steps``),
    ``check_installed(**config)`` (a static method: its packages and files are there,
    checked before a run opens).
    """

    latent_dim: int
    layers: tuple[str, ...]

    def sample_latents(self, n: int, seed: int) -> Tensor: ...

    def to_mid(self, z: Tensor, layer: str) -> Tensor: ...

    def synthesize(self, mid: Tensor, layer: str) -> Tensor: ...


@runtime_checkable
class PropertyScorer(Protocol):
    """Images -> one score per property per image.

    ``properties`` must include eyes, mouth and pose; the grouping properties
    (hair_color, hair_length, background_mean, hairstyle) are needed for
    grouped directions. Optional: ``group_medians: dict[str, float] | None``
    (fixed thresholds for grouping; None means "use the sample's medians"),
    ``weights_id: str``, ``pad_multiple: int``, ``set_speed`` / ``speed`` (as for
    generators), ``score_on_device(images) -> dict[str, Tensor]`` (scores left on the
    device, copied to the host once per chunk by the hot loop),
    ``set_train_mode(on: bool)`` (``measure.scorer_mode=train``),
    ``group_properties: tuple[str, ...]`` (what groups its faces; ``GROUP_PROPERTIES`` where
    absent: k of them give 2^k groups), ``score_async(images)`` (returns at once; its
    ``.result()`` is ``score``'s: the hot loop generates the next faces meanwhile),
    ``check_installed(**config)`` (as for generators).
    """

    properties: tuple[str, ...]

    def score(self, images: Tensor) -> dict[str, Tensor]: ...


@runtime_checkable
class IdentityModel(Protocol):
    """Faces -> descriptors whose distance says whether two faces are the same person.

    ``embed`` takes images as the generators make them ((n, 3, H, W) float in [-1, 1]) and
    returns an (n, dim) float array; a face it cannot align is a row of NaN (never a guess).
    ``threshold``: the model's own same-person distance (below it: the same person), which
    marks contact sheets and counts "same person" where no ``cutoff.identity`` is set.
    Optional: ``embed_detailed(images)`` (``.vectors`` as ``embed``, ``.reasons``: per row
    why it is NaN, "" otherwise), ``weights_id`` (keys the kept descriptors), ``name``,
    ``scope`` (which vectors a screening measures: ``near_pass``, ``passed`` or ``all``),
    ``check_installed(**config)`` (as for generators).
    """

    dim: int
    threshold: float

    def embed(self, images: Tensor) -> np.ndarray: ...
