"""Identity in a real-faces screening, end to end on the PyPI weights: the identity stage
after judging, cutoff.identity in a run that re-uses the measurement, rejudge and the
frontier from stored distances (nothing generated), and what a run leaves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import compose_app, real_faces_or_skip
from mlflow.tracking import MlflowClient

from ohlora_eval.apps.frontier import frontier
from ohlora_eval.apps.rejudge import rejudge
from ohlora_eval.apps.screen import evaluate
from ohlora_eval.pipeline import judge
from ohlora_eval.tracking import store as tracking
from ohlora_eval.tracking.read_back import run_file

LOOSE = ["cutoff.eyes=0.6", "cutoff.mouth=0.6", "cutoff.pose=0.6"]  # several vectors pass r
FAST = [
    "experiment=real_faces",
    "sampling.n_vectors=16",
    "sampling.vectors_per_batch=8",
    "directions.n=1200",
    "directions.gradient.epochs=3",
    "tracking.grids.passed=2",
    "tracking.grids.best=1",
    "tracking.progress=false",
    "device=cpu",
    *LOOSE,
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A screening without an identity cutoff, then the same with one (re-using both the
    measurement and the descriptors), at the median distance of the vectors that clear r."""
    real_faces_or_skip()
    store = tmp_path_factory.mktemp("identity_run") / "mlruns"
    first = evaluate(compose_app("config", store, *FAST))
    cleared = first.per_vector[judge.r_passed(first.per_vector)]
    limit = float(np.round(cleared["identity_max"].median(), 4))
    second = evaluate(compose_app("config", store, *FAST, f"cutoff.identity={limit}"))
    return store, first, second, limit


def test_the_identity_stage_measures_the_vectors_in_scope(runs):
    store, first, _, _ = runs
    table = first.per_vector
    assert set(judge.IDENTITY_COLUMNS) <= set(table.columns)
    measured = table["identity_unaligned"].notna()
    # The scope: every vector that clears each cutoff less the near-miss margin (0.05).
    gap = judge.shortfall(table, {"eyes": 0.6, "mouth": 0.6, "pose": 0.6})
    assert list(measured) == list(gap <= 0.05)
    assert measured.sum() >= 3
    ok = table[measured]
    assert (ok["identity_max"] > 0).all() and (ok["identity_max"] < 2).all()
    along = ok[["identity_eyes", "identity_mouth", "identity_pose"]].to_numpy()
    assert np.isfinite(along).all()
    assert table.loc[~measured, "identity_max"].isna().all()
    m = first.metrics
    assert m["identity_threshold"] == 0.6  # dlib's same person, with no identity cutoff
    assert m["passed"] == m["r_passed"]  # no identity cutoff: identity decides nothing
    assert m["r_passed_same_person"] + m["r_passed_other_person"] == m["r_passed"]
    assert m["identity_measured_now"] == measured.sum() and m["identity_faces_per_sec"] > 0
    assert "identity (dlib_resnet" in first.identity


def test_what_an_identity_run_leaves(runs):
    store, first, _, _ = runs
    client = MlflowClient(tracking.resolve_uri(None, store))
    run = client.get_run(first.run_id)
    assert run.data.tags["identity"] == "dlib_resnet"
    assert run.data.metrics["r_passed"] == first.metrics["r_passed"]
    path = run_file(client, first.run_id, "per_image.csv", store.parent)
    per_image = pd.read_csv(path)
    measured = first.per_vector.loc[first.per_vector["identity_max"].notna(), "case"]
    dist = per_image.groupby("case")["identity_distance"].max()
    assert np.allclose(
        dist[measured], first.per_vector.set_index("case").loc[measured, "identity_max"]
    )
    assert per_image.loc[~per_image["case"].isin(measured), "identity_distance"].isna().all()
    page = next((store / "artifacts").rglob(f"{first.run_id}/artifacts/review/index.html"))
    text = page.read_text()
    assert "identity distance" in text and 'id="order"' in text
    # The sheets come from a folder of their own (cells past the threshold are framed).
    assert list((store / "cache").rglob("sheets_128px_identity-*"))


def test_sheets_on_request_frame_the_cells_past_the_threshold(runs):
    from PIL import Image

    from ohlora_eval.apps.sheets import render_sheets
    from ohlora_eval.formats.pictures import IDENTITY_MARK

    store, first, _, _ = runs
    table = first.per_vector
    case = int(table.loc[table["identity_max"].idxmax(), "case"])  # past 0.6 somewhere
    assert table["identity_max"].max() > 0.6
    out = render_sheets(compose_app("sheets", store, f"run_id={first.run_id}", f"cases=[{case}]"))
    pix = np.asarray(Image.open(out.files[0]).convert("RGB"))
    assert (pix == np.array(IDENTITY_MARK, np.uint8)).all(-1).sum() > 100


def test_the_identity_cutoff_removes_exactly_the_vectors_past_it(runs):
    _, first, second, limit = runs
    a, b = first.per_vector.set_index("case"), second.per_vector.set_index("case")
    far = a["identity_max"] > limit
    want = (a["passed"] == "O") & ~far
    assert list(b["passed"] == "O") == list(want)
    assert second.metrics["passed"] == first.metrics["passed"] - (far & (a["passed"] == "O")).sum()
    assert 0 < second.metrics["passed"] < first.metrics["passed"]
    # It re-used the measurement and the descriptors: nothing generated or embedded.
    assert second.metrics["measured_images"] == 0
    assert second.metrics["identity_measured_now"] == 0 and second.metrics["identity_reused"] > 0
    for case in b.index[(b["passed"] == "X") & (a["passed"] == "O")]:
        assert b.loc[case, "fail_reason"].startswith(
            f"identity distance {a.loc[case, 'identity_max']:.4f} > {limit:g}"
        )


def test_rejudge_and_frontier_use_the_stored_distances(runs):
    store, first, second, limit = runs
    cfg = compose_app(
        "rejudge", store, f"run_id={first.run_id}", "tracking.experiment=ohlora-real-faces",
        *LOOSE, f"cutoff.identity={limit}",
    )  # fmt: skip
    res = rejudge(cfg)
    assert list(res.per_vector["passed"]) == list(second.per_vector["passed"])
    assert res.metrics["measured_images"] == 0  # nothing generated
    # Looser r cutoffs reach vectors with no stored distance: they fail, with the reason.
    looser = rejudge(
        compose_app(
            "rejudge",
            store,
            f"run_id={first.run_id}",
            "tracking.experiment=ohlora-real-faces",
            "cutoff.eyes=0.01",
            "cutoff.mouth=0.01",
            "cutoff.pose=0.01",
            f"cutoff.identity={limit}",
        )  # fmt: skip
    )
    unknown = looser.per_vector["identity_max"].isna()
    assert unknown.any()
    assert (looser.per_vector.loc[unknown, "passed"] == "X").all()
    assert looser.metrics["r_passed_identity_unknown"] == unknown.sum()
    # The frontier of the run with the cutoff applies it to every triple.
    out = frontier(
        compose_app(
            "frontier",
            store,
            f"run_id={second.run_id}",
            "log=false",
            "want=1",
            "grid.eyes=0.6",
            "grid.mouth=0.6",
            "grid.pose=0.6",
        )  # fmt: skip
    )
    assert out.frontier.identity_limit == limit
    assert int(out.frontier.passed.ravel()[0]) == second.metrics["passed"]


@pytest.mark.parametrize(
    "override, said",
    [
        ("cutoff.identity=0.6", "cutoff.identity=0.6 needs an identity model"),
        ("review.rank_by=sum_abs_corr - identity_max", "review.rank_by uses identity_max"),
    ],
)
def test_identity_settings_without_an_identity_model_are_refused_before_a_run(
    tmp_path, override, said
):
    from omegaconf import OmegaConf

    from ohlora_eval.apps.build import preflight
    from ohlora_eval.errors import ConfigError

    cfg = compose_app("config", tmp_path, override)  # the synthetic default: identity=none
    with pytest.raises(ConfigError, match=said):
        preflight(cfg, OmegaConf.to_container(cfg, resolve=True))
