"""Contact sheets of any vector of a run, near-misses included, one command away."""

from __future__ import annotations

import pytest
from helpers import compose_app
from mlflow.tracking import MlflowClient
from PIL import Image

from ohlora_eval.apps.screen import evaluate
from ohlora_eval.apps.sheets import ARTIFACT_DIR, render_sheets
from ohlora_eval.errors import UserError
from ohlora_eval.pipeline import judge
from ohlora_eval.tracking import store as tracking


def _sheets_cfg(store, *overrides):
    return compose_app("sheets", store, *overrides)


def test_near_miss_sheets_of_failed_cases_are_rendered_and_logged(make_cfg, store):
    res = evaluate(make_cfg())  # the default cutoffs: most of the small sample fails
    table = res.per_vector
    gap = judge.shortfall(table, {"eyes": 0.92, "mouth": 0.88, "pose": 0.88})
    margin = float(gap[gap > 0].min()) + 0.02  # at least the closest failure
    out = render_sheets(_sheets_cfg(store, f"run_id={res.run_id}", f"near_miss={margin}"))
    expected = table.assign(gap=gap)[(gap > 0) & (gap <= margin)]
    expected = expected.sort_values(["gap", "case"])["case"].head(12).tolist()
    assert out.cases == expected and out.cases
    assert all(table.set_index("case").loc[out.cases, "passed"] == "X")
    for path in out.files:
        with Image.open(path) as img:
            assert img.width > 200 and img.height > 100
    client = MlflowClient(tracking.resolve_uri(None, store))
    logged = {a.path for a in client.list_artifacts(res.run_id, ARTIFACT_DIR)}
    assert logged == {f"{ARTIFACT_DIR}/{p.name}" for p in out.files}


def test_given_cases_and_bad_requests(make_cfg, store):
    res = evaluate(make_cfg())
    first = int(res.per_vector["case"].iloc[0])
    out = render_sheets(_sheets_cfg(store, f"run_id={res.run_id}", f"cases=[{first}]"))
    assert out.cases == [first] and out.files[0].name == f"case_{first:05d}.png"
    with pytest.raises(UserError, match=r"cases \[99999\] are not in the run"):
        render_sheets(_sheets_cfg(store, f"run_id={res.run_id}", "cases=[99999]"))
    with pytest.raises(UserError, match="give cases=.* or near_miss"):
        render_sheets(_sheets_cfg(store, f"run_id={res.run_id}"))
    with pytest.raises(UserError, match="run_id=nosuch: no such run"):
        render_sheets(_sheets_cfg(store, "run_id=nosuch", "cases=[1]"))
