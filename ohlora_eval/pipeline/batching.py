"""Calling models with batch shapes that never change a vector's numbers.

Kernels pick code paths by tensor size: BLAS uses other kernels for a handful of
rows, and vectorised element-wise ops compute a ragged tail with scalar code whose
last bits differ. Padding every call to a multiple of ``ROW_MULTIPLE`` rows keeps
each row on the same path wherever it sits, so a vector evaluated alone (a
re-check of a recorded selection) gets exactly the numbers it got in a big batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

ROW_MULTIPLE = 64
T = TypeVar("T")


def pad_rows(x: Tensor, multiple: int = ROW_MULTIPLE) -> tuple[Tensor, int]:
    """Pad with copies of the first row up to a multiple of ``multiple``; return the real count."""
    n = x.shape[0]
    target = max(multiple, -(-n // multiple) * multiple)
    if n == target or n == 0:
        return x, n
    filler = x[:1].expand(target - n, *x.shape[1:])
    return torch.cat([x, filler]), n


def padded_call(fn: Callable[[Tensor], T], x: Tensor, multiple: int = ROW_MULTIPLE) -> T:
    """``fn(x)`` computed on padded rows; the result (a tensor or a dict of them) is cut back."""
    xp, n = pad_rows(x, multiple)
    out = fn(xp)
    if isinstance(out, dict):
        return {k: v[:n] for k, v in out.items()}  # type: ignore[return-value]
    return out[:n]  # type: ignore[index]
