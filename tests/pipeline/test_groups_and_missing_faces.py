"""Grouping by whatever properties a scorer offers, and faces that were not found (NaN
scores): left out of a fit, a clear fail reason in a screening, never a silent zero."""

from __future__ import annotations

import numpy as np
import pytest

from ohlora_eval.directions.fit import fit_directions
from ohlora_eval.directions.spec import FitSpec
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.groups import all_group_names, group_names, group_properties, medians
from ohlora_eval.pipeline.protocols import GROUP_PROPERTIES


def test_k_grouping_properties_give_two_to_the_k_groups():
    assert all_group_names(2) == ["ll", "lh", "hl", "hh"]
    assert len(all_group_names(4)) == 16 and all_group_names()[0] == "llll"
    scores = {"a": np.array([0.0, 1.0, 2.0, 3.0]), "b": np.array([3.0, np.nan, 1.0, 0.0])}
    med = medians(scores, ("a", "b"))
    assert med == {"a": 1.5, "b": 1.0}  # NaN: not measured, left out of the median
    assert group_names(scores, med, ("a", "b")) == ["lh", "ll", "hh", "hl"]

    class Scorer:
        group_properties = ("a", "b")

    assert group_properties(Scorer()) == ("a", "b")
    assert group_properties(object()) == GROUP_PROPERTIES  # Oh-LoRA's four


def _sample(n=1200, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    mid = rng.standard_normal((n, dim)).astype(np.float32)
    scores = {
        "eyes": mid[:, 0] + 0.1 * rng.standard_normal(n),
        "mouth": mid[:, 1] + 0.1 * rng.standard_normal(n),
        "pose": mid[:, 2] + 0.1 * rng.standard_normal(n),
        "bg": rng.standard_normal(n),
        "top": rng.standard_normal(n),
    }
    return mid, {k: v.astype(np.float32) for k, v in scores.items()}


@pytest.mark.parametrize("grouped", [True, False])
def test_fit_groups_by_the_scorers_properties_and_leaves_out_unmeasured_faces(grouped):
    mid, scores = _sample()
    scores["eyes"][:300] = np.nan  # no face found on these
    spec = FitSpec(n=1200, method="svm", grouped=grouped, ratio=0.2)
    med = medians(scores, ("bg", "top"))
    fitted = fit_directions(mid, scores, "z", spec, med, group_props=("bg", "top"))
    groups = set(fitted.directions.vectors["eyes"])
    assert groups == ({"ll", "lh", "hl", "hh"} if grouped else {"all"})
    for g, d in fitted.directions.vectors["eyes"].items():
        assert np.isfinite(d).all() and abs(d[0]) > 0.9, g  # found the eyes axis


def test_a_vector_with_missing_faces_fails_with_that_reason():
    corr = np.array([[0.99, 0.99, 0.99], [np.nan, np.nan, np.nan], [np.nan, 0.99, 0.99]])
    table = judge.per_vector_table(
        corr, {"eyes": 0.9, "mouth": 0.9, "pose": 0.9}, no_face=np.array([0, 3, 0]),
        images_per_vector=50,
    )  # fmt: skip
    assert list(table["passed"]) == ["O", "X", "X"]
    assert table.loc[1, "fail_reason"] == "no face on 3 of 50 images"
    assert "correlation undefined" in table.loc[2, "fail_reason"]
    assert list(table[judge.NO_FACE]) == [0, 3, 0]
    clean = judge.per_vector_table(corr[:1], {"eyes": 0.9, "mouth": 0.9, "pose": 0.9})
    assert list(clean.columns) == judge.PER_VECTOR_COLUMNS  # no column when nothing is missing
