"""The Oh-LoRA merged property-score CNN, written from scratch.

Seven small CNNs, each looking at a fixed crop of the 256x256 face image
(values in [-1, 1]); their outputs are concatenated into 8 columns in the order
of the original ``all_scores_v2.csv``: eyes, hair_color, hair_length, mouth,
pose, background_mean, background_std, hairstyle. The ``state_dict`` matches
the original ``MergedPropertyScoreCNN`` key for key, so the published
``ohlora_v3_merged_property_cnn.pth`` loads strictly.

Every conv is 3x3 without padding followed by leaky ReLU (slope 0.01); max
pools are 2x2; the fully connected head is Linear -> tanh -> Linear. The
original's dropout sits where it did there (``Dropout2d(0.05)`` after every conv's
activation, ``Dropout(0.45)`` after ``fc1``'s tanh, ``Dropout(0.25)`` in the
hairstyle head): a no-op in eval mode, active in train mode, which is how the
original scored (it never called ``.eval()``; ``measure.scorer_mode=train``). The
sub-networks run in the original's order, so their dropout draws come in the same
order. Dropout holds no weights: the state-dict keys are the original's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE_SIZE = 256
PROPERTY_COLUMNS: tuple[str, ...] = (
    "eyes",
    "hair_color",
    "hair_length",
    "mouth",
    "pose",
    "background_mean",
    "background_std",
    "hairstyle",
)

_S = IMAGE_SIZE
# (rows, cols) each crop sees, as in the original merged CNN.
CROPS: dict[str, tuple[slice, slice]] = {
    "eyes": (slice(3 * _S // 8, 9 * _S // 16), slice(_S // 4, 3 * _S // 4)),
    "hair_color": (slice(0, _S), slice(0, _S)),
    "hair_length": (slice(_S // 2, _S), slice(0, _S)),
    "mouth": (slice(5 * _S // 8, 13 * _S // 16), slice(3 * _S // 8, 5 * _S // 8)),
    "pose": (slice(7 * _S // 16, 5 * _S // 8), slice(11 * _S // 32, 21 * _S // 32)),
    "background": (slice(0, _S // 2), slice(0, _S)),
    "hairstyle_left": (slice(_S // 2, _S), slice(0, 3 * _S // 8)),
    "hairstyle_right": (slice(_S // 2, _S), slice(5 * _S // 8, _S)),
}


def _crop(x: Tensor, name: str) -> Tensor:
    rows, cols = CROPS[name]
    return x[:, :, rows, cols]


class ConvTrunk(nn.Module):
    """``conv1..convK`` (each ``Sequential(Conv2d 3x3, LeakyReLU, Dropout2d(0.05))``), 2x2 max
    pool after some."""

    def __init__(self, widths: tuple[int, ...], pool_after: frozenset[int]) -> None:
        super().__init__()
        self.n_convs = len(widths)
        self.pool_after = pool_after
        in_ch = 3
        for i, out_ch in enumerate(widths, start=1):
            block = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3), nn.LeakyReLU(), nn.Dropout2d(0.05))
            self.add_module(f"conv{i}", block)
            in_ch = out_ch

    def forward(self, x: Tensor) -> Tensor:
        for i in range(1, self.n_convs + 1):
            x = getattr(self, f"conv{i}")(x)
            if i in self.pool_after:
                x = F.max_pool2d(x, 2, 2)
        return x.flatten(1)


class ScoreHead(ConvTrunk):
    """A trunk plus ``fc1`` (Linear -> tanh -> Dropout(0.45)) and ``fc_final``."""

    def __init__(
        self,
        widths: tuple[int, ...],
        pool_after: frozenset[int],
        flat_dim: int,
        n_out: int = 1,
        hidden: int = 256,
    ) -> None:
        super().__init__(widths, pool_after)
        self.fc1 = nn.Sequential(nn.Linear(flat_dim, hidden), nn.Tanh(), nn.Dropout(0.45))
        self.fc_final = nn.Linear(hidden, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_final(self.fc1(super().forward(x)))


class HairstyleHead(nn.Module):
    """Two trunks (bottom-left and bottom-right of the image) feeding one head."""

    def __init__(self) -> None:
        super().__init__()
        widths, pools = (32, 64, 64, 96, 128, 128), frozenset({2, 3, 4})
        self.bottom_left_cnn = ConvTrunk(widths, pools)
        self.bottom_right_cnn = ConvTrunk(widths, pools)
        self.fc1 = nn.Sequential(nn.Linear(2 * 128 * 6 * 10, 512), nn.Tanh(), nn.Dropout(0.25))
        self.fc_final = nn.Linear(512, 1)

    def forward(self, image: Tensor) -> Tensor:
        left = self.bottom_left_cnn(_crop(image, "hairstyle_left"))
        right = self.bottom_right_cnn(_crop(image, "hairstyle_right"))
        return self.fc_final(self.fc1(torch.cat((left, right), dim=1)))


_FOUR = (32, 64, 64, 128)
_FIVE = (32, 64, 64, 128, 128)
_SIX = (32, 64, 64, 128, 128, 128)


class MergedPropertyCNN(nn.Module):
    """(n, 3, 256, 256) image in [-1, 1] -> (n, 8) scores (columns: ``PROPERTY_COLUMNS``)."""

    def __init__(self) -> None:
        super().__init__()
        self.eyes_score_cnn = ScoreHead(_FOUR, frozenset({2, 3, 4}), 128 * 4 * 14)
        self.mouth_score_cnn = ScoreHead(_FOUR, frozenset({2, 3, 4}), 128 * 4 * 6)
        self.pose_score_cnn = ScoreHead(_FIVE, frozenset({2, 3}), 128 * 6 * 14)
        self.hair_color_score_cnn = ScoreHead(_SIX, frozenset({2, 3, 4, 5, 6}), 128 * 6 * 6)
        self.hair_length_score_cnn = ScoreHead(_SIX, frozenset({2, 3, 4, 5}), 128 * 4 * 12)
        self.background_score_cnn = ScoreHead(_SIX, frozenset({2, 3, 4, 5}), 128 * 4 * 12, 2)
        self.hairstyle_score_cnn = HairstyleHead()

    def forward(self, image: Tensor) -> Tensor:
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"expected (n, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(image.shape)}"
            )
        parts = [
            self.eyes_score_cnn(_crop(image, "eyes")),
            self.hair_color_score_cnn(image),
            self.hair_length_score_cnn(_crop(image, "hair_length")),
            self.mouth_score_cnn(_crop(image, "mouth")),
            self.pose_score_cnn(_crop(image, "pose")),
            self.background_score_cnn(_crop(image, "background")),  # mean, std
            self.hairstyle_score_cnn(image),
        ]
        return torch.cat(parts, dim=1)
