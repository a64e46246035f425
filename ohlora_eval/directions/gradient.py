"""Gradient directions: a small regressor mid vector -> score; edit along its gradient.

Unlike an SVM normal, the direction differs per vector: it is the normalised
gradient of the regressor at that vector's own mid vector. The fit and the gradients run
on a fixed number of CPU threads (``pipeline.device.fixed_cpu_threads``): with 4 or more,
MKL splits their matrix products' sums, and the directions would change with the
machine's cores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ohlora_eval.directions.spec import GradientSpec
from ohlora_eval.pipeline.batching import padded_call
from ohlora_eval.pipeline.device import fixed_cpu_threads
from ohlora_eval.pipeline.fidelity import seeded


class ScoreRegressor(nn.Module):
    """MLP with tanh hidden layers (as Oh-LoRA's gradient network), on standardised inputs."""

    def __init__(self, dim: int, hidden: Sequence[int] = (256, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("x_mean", torch.zeros(dim))
        self.register_buffer("x_std", torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.x_mean) / self.x_std).squeeze(-1)


@fixed_cpu_threads()  # the same bits on any number of cores (module docstring)
def fit_regressor(
    mid: np.ndarray,
    scores: np.ndarray,
    spec: GradientSpec,
    val_fraction: float,
    seed: int,
    on_epoch: Callable[[], None] | None = None,
) -> tuple[ScoreRegressor, float]:
    """Train on a seeded split; returns the model (eval mode) and its validation MSE.
    ``on_epoch()`` is called after each epoch (progress; it changes no number)."""
    hidden, epochs, lr = spec.hidden, spec.epochs, spec.lr
    batch_size, weight_decay = spec.batch_size, spec.weight_decay
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(mid, dtype=torch.float32)
    y = torch.as_tensor(scores, dtype=torch.float32)
    perm = torch.randperm(len(y), generator=g)
    n_val = int(len(y) * val_fraction)
    val, train = perm[:n_val], perm[n_val:]
    with seeded(seed):  # its initial weights, from the global RNG; the caller's is kept
        model = ScoreRegressor(x.shape[1], hidden)
    model.x_mean.copy_(x[train].mean(0))
    model.x_std.copy_(x[train].std(0).clamp_min(1e-6))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(epochs):
        order = train[torch.randperm(len(train), generator=g)]
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch()
    model.eval()
    with torch.no_grad():
        mse = float(nn.functional.mse_loss(model(x[val]), y[val])) if n_val else float("nan")
    return model, mse


def gradient_field(model: ScoreRegressor) -> Callable[[Tensor], Tensor]:
    """mid (n, dim) -> normalised d score / d mid at each row (batch-invariant)."""
    model = model.eval()

    def grad(mid: Tensor) -> Tensor:
        with torch.enable_grad(), torch.inference_mode(False), fixed_cpu_threads():
            x = mid.detach().clone().float().cpu().requires_grad_(True)
            (g,) = torch.autograd.grad(model(x).sum(), x)
        return g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)

    return lambda mid: padded_call(grad, mid).to(mid.device)
