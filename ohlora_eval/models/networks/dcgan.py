"""A DCGAN face generator (64 x 64 RGB from z in R^100), for the weights that the PyPI
package ``gan-face-generate`` ships (trained on DigiFace-1M).

The network is the classic DCGAN generator: five transposed convolutions without biases,
each of the first four followed by BatchNorm and ReLU, the last by tanh. Its parameters
are named ``main.<i>.*`` (one ``nn.Sequential``), the layout of the package's state dict,
so the file loads strictly. ``block1`` is the 512 x 4 x 4 output of the first block (after
its ReLU): an inner layer where edits can be made.

Written here from the architecture; the package itself is never imported to build it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

Z_DIM = 100
IMAGE_SIZE = 64
BLOCK1_SHAPE = (512, 4, 4)
STATE_KEY = "netG_state_dict"
"""The key under which the package's ``weights.tar`` holds the generator's state dict."""


class DCGANNetwork(nn.Module):
    """z (n, 100) -> image (n, 3, 64, 64) in [-1, 1]; ``block1`` splits it in two."""

    def __init__(self, z_dim: int = Z_DIM, width: int = 64, channels: int = 3) -> None:
        super().__init__()
        widths = [z_dim, width * 8, width * 4, width * 2, width]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
            # 1 -> 4 pixels first, then each block doubles the side: 8, 16, 32.
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [
                nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.z_dim = z_dim

    def block1(self, z: Tensor) -> Tensor:
        """(n, z_dim) -> (n, 512 * 4 * 4): the first block's output, flattened."""
        x = z.reshape(z.shape[0], self.z_dim, 1, 1)
        return self.main[:3](x).flatten(1)

    def from_block1(self, h: Tensor) -> Tensor:
        """(n, 512 * 4 * 4) -> images (n, 3, 64, 64)."""
        first = self.main[0]
        x = h.reshape(h.shape[0], first.out_channels, 4, 4)
        if self.main[3].weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.main[3:](x)

    def forward(self, z: Tensor) -> Tensor:
        return self.from_block1(self.block1(z))
