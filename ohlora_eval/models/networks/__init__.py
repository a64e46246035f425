"""Re-implemented Oh-LoRA v3.1 networks (generator and property CNN) and checkpoint loading.

Kept separate from the Generator/PropertyScorer adapters so that the pure
``nn.Module`` definitions can be checked key for key against the originals.
"""

from ohlora_eval.models.networks.checkpoints import CheckpointError, load_checkpoint
from ohlora_eval.models.networks.property_cnn import PROPERTY_COLUMNS, MergedPropertyCNN
from ohlora_eval.models.networks.stylegan_v9 import MappingOutputs, StyleGANV9Network

__all__ = [
    "PROPERTY_COLUMNS",
    "CheckpointError",
    "MappingOutputs",
    "MergedPropertyCNN",
    "StyleGANV9Network",
    "load_checkpoint",
]
