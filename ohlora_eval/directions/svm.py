"""Linear-SVM directions: the unit normal separating high from low scorers."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from ohlora_eval.errors import ConfigError, UserError, number_in


def top_bottom(scores: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the top and bottom ``ratio`` of samples by score (ties broken by index)."""
    number_in("directions.ratio", ratio, 0.0, 0.5, low_open=True)
    k = int(len(scores) * ratio)
    if k < 2:
        raise ConfigError(
            f"directions.ratio={ratio} of {len(scores)} samples leaves fewer than 2 per side"
        )
    order = np.argsort(scores, kind="stable")
    return order[-k:], order[:k]


def fit_svm_direction(
    mid: np.ndarray,
    scores: np.ndarray,
    ratio: float = 0.2,
    seed: int = 0,
    c: float = 1.0,
    val_fraction: float = 0.0,
) -> tuple[np.ndarray, float | None]:
    """Fit ``LinearSVC`` on the top vs. bottom ``ratio`` of samples.

    Returns the unit normal (pointing towards high scores) and the validation
    accuracy on a held-out ``val_fraction`` of the chosen samples (None if 0).
    """
    top, bottom = top_bottom(np.asarray(scores), ratio)
    x = np.concatenate([mid[top], mid[bottom]]).astype(np.float64)
    y = np.concatenate([np.ones(len(top)), np.zeros(len(bottom))])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_val = int(len(y) * val_fraction)
    val, train = perm[:n_val], perm[n_val:]
    svm = LinearSVC(C=c, dual="auto", max_iter=5000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(x[train], y[train])
    normal = svm.coef_[0]
    norm = np.linalg.norm(normal)
    if not np.isfinite(norm) or norm == 0:
        raise UserError("the SVM found no separating direction (all coefficients zero)")
    acc = float(svm.score(x[val], y[val])) if n_val else None
    return (normal / norm).astype(np.float32), acc
