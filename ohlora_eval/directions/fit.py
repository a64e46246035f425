"""Fitting all directions of a run from sampled mid vectors and their measured scores."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ohlora_eval.directions.gradient import ScoreRegressor, fit_regressor, gradient_field
from ohlora_eval.directions.spec import FitSpec, resolve_methods
from ohlora_eval.directions.svm import fit_svm_direction
from ohlora_eval.pipeline.directions import ALL_GROUPS, Directions
from ohlora_eval.pipeline.groups import all_group_names, group_names
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES, GROUP_PROPERTIES
from ohlora_eval.progress import Step, say

MIN_PER_SIDE = 5  # fewer top (or bottom) samples than this in a group: use the all-sample SVM


@dataclass
class FitReport:
    """What a direction fit measured, for logging."""

    group_sizes: dict[str, int] = field(default_factory=dict)
    svm_val_acc: dict[tuple[str, str], float] = field(default_factory=dict)
    gradient_val_mse: dict[str, float] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        m = {f"svm_val_acc_{p}_{g}": v for (p, g), v in self.svm_val_acc.items()}
        m.update({f"gradient_val_mse_{p}": v for p, v in self.gradient_val_mse.items()})
        for p in CORE_PROPERTIES:
            accs = [v for (q, _), v in self.svm_val_acc.items() if q == p]
            if accs:
                m[f"svm_val_acc_{p}_mean"] = float(np.mean(accs))
        m["fallback_groups"] = float(len(self.fallbacks))
        return m

    def group_table(self) -> pd.DataFrame:
        rows = [{"group": g, "size": s} for g, s in self.group_sizes.items()]
        return pd.DataFrame(rows, columns=["group", "size"])


def fit_work(methods: Mapping[str, str], spec: FitSpec, groups: int) -> tuple[int, str]:
    """(units, their name) of a fit's work, what its progress counts: each gradient
    property's epochs and each SVM property's fits, one per group (``groups``)."""
    epochs = sum(int(spec.gradient.epochs) for p in CORE_PROPERTIES if methods[p] == "gradient")
    svms = sum(groups for p in CORE_PROPERTIES if methods[p] != "gradient")
    unit = "epochs" if not svms else "SVM fits" if not epochs else "epochs and SVM fits"
    return epochs + svms, unit


@dataclass
class Fitted:
    """A fit's result: the directions, the regressors behind gradient ones, the report."""

    directions: Directions
    regressors: dict[str, ScoreRegressor]
    report: FitReport


def fit_directions(
    mid: np.ndarray,
    scores: Mapping[str, np.ndarray],
    layer: str,
    spec: FitSpec,
    medians: Mapping[str, float] | None = None,
    step: Step | None = None,
    group_props: Sequence[str] = GROUP_PROPERTIES,
) -> Fitted:
    """Fit every property's direction(s). SVM: per group (or one for all) on the top vs.
    bottom ``spec.ratio``; gradient: one regressor per property on all samples. Groups are
    ``group_props`` against ``medians`` (2^k groups of k properties). A face whose score of
    a property is NaN (not measured: no face found) is left out of that property's fit.
    ``step`` (a running ``progress.phase``) counts the fit's work (``fit_work``: each
    regressor's epochs, each group's SVM) as it is done, so its lines say how much is left
    and about how long; a line with each property's time is said when its fit is done."""
    method, grouped, ratio = spec.method, spec.grouped, spec.ratio
    val_fraction, seed, svm_c = spec.val_fraction, spec.seed, spec.svm_c
    methods = resolve_methods(method)
    report = FitReport()
    groups = np.array(group_names(scores, medians, group_props)) if grouped else None
    names = all_group_names(len(group_props)) if grouped else [ALL_GROUPS]
    if groups is not None:
        report.group_sizes = {g: int((groups == g).sum()) for g in names}
    else:
        report.group_sizes = {ALL_GROUPS: len(mid)}

    vectors: dict[str, dict[str, np.ndarray]] = {}
    regressors: dict[str, ScoreRegressor] = {}
    fields = {}
    if step is not None:
        step.count(*fit_work(methods, spec, len(names)))
    advance = step.advance if step is not None else None
    for k, p in enumerate(CORE_PROPERTIES):
        y = np.asarray(scores[p])
        measured = np.isfinite(y)
        x_p, y_p = (mid, y) if measured.all() else (mid[measured], y[measured])
        g_p = groups if groups is None or measured.all() else groups[measured]
        start = time.perf_counter()
        if methods[p] == "gradient":
            model, mse = fit_regressor(
                x_p, y_p, spec.gradient, val_fraction, seed + k, on_epoch=advance
            )
            regressors[p] = model
            fields[p] = gradient_field(model)
            report.gradient_val_mse[p] = mse
            if step is not None:
                took = time.perf_counter() - start
                say(f"  {p}: gradient regressor, validation MSE {mse:.4g}, {took:.1f} s")
            continue
        table: dict[str, np.ndarray] = {}
        fallback = None
        for g in names:
            idx = np.arange(len(y_p)) if g_p is None else np.flatnonzero(g_p == g)
            if int(len(idx) * ratio) < MIN_PER_SIDE:
                if fallback is None:
                    fallback, _ = fit_svm_direction(x_p, y_p, ratio, seed=seed + k, c=svm_c)
                table[g] = fallback
                report.fallbacks.append(f"{p}/{g}")
                if advance is not None:
                    advance()
                continue
            d, acc = fit_svm_direction(
                x_p[idx], y_p[idx], ratio, seed=seed + k, c=svm_c, val_fraction=val_fraction
            )
            table[g] = d
            if acc is not None:
                report.svm_val_acc[(p, g)] = acc
            if advance is not None:
                advance()
        vectors[p] = table
        if step is not None:
            took = time.perf_counter() - start
            say(f"  {p}: SVM directions for {len(names)} group(s), {took:.1f} s")
    if report.fallbacks:
        warnings.warn(
            f"{len(report.fallbacks)} property/group pairs had too few samples and use the"
            f" all-sample SVM direction: {', '.join(report.fallbacks[:6])}"
            " (raise n for per-group directions)",
            stacklevel=2,
        )
    dirs = Directions(
        layer=layer,
        dim=mid.shape[1],
        vectors=vectors,
        fields=fields,
        method=methods,
        medians=dict(medians) if medians else None,
        models=dict(regressors),
    )
    return Fitted(dirs, regressors, report)
