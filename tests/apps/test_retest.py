"""Re-tests: a run's passed vectors re-measured k times under the original's noise."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CONF_DIR
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from ohlora_eval.apps.retest import retest, wilson
from ohlora_eval.apps.screen import evaluate
from ohlora_eval.errors import UserError
from ohlora_eval.tracking import store as tracking


def _retest_cfg(store, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "retest", overrides=[f"tracking.root={store}", "tracking.progress=false", *overrides]
        )


def test_wilson_interval_matches_the_textbook_values():
    lo, hi = wilson(np.array([0, 5, 10]), 10, 0.95)
    np.testing.assert_allclose(lo, [0.0, 0.2366, 0.7225], atol=1e-4)
    np.testing.assert_allclose(hi, [0.2775, 0.7634, 1.0], atol=1e-4)


def test_retest_reports_each_passed_vector_and_is_reproducible(make_cfg, store, tmp_path):
    source = evaluate(make_cfg("cutoff.eyes=0.5", "cutoff.mouth=0.5", "cutoff.pose=0.3"))
    passed = source.per_vector.loc[source.per_vector["passed"] == "O", "case"].tolist()
    assert passed, "the source run needs passed vectors"
    first = retest(_retest_cfg(store, f"run_id={source.run_id}", "k=3", "max_vectors=4"))
    table = first.table
    assert len(table) == min(4, len(passed)) and (table["k"] == 3).all()
    assert table["re_pass_prob"].between(0, 1).all()
    assert (table["re_pass_lo"] <= table["re_pass_prob"]).all()
    assert (table["re_pass_prob"] <= table["re_pass_hi"]).all()
    assert (table["eyes_corr_std"] > 0).any()  # dropout on: r moves between repetitions
    again = retest(_retest_cfg(store, f"run_id={source.run_id}", "k=3", "max_vectors=4"))
    pd.testing.assert_frame_equal(again.table, table)  # seeded: the same numbers again
    client = MlflowClient(tracking.resolve_uri(None, store))
    parent = client.get_run(first.run_id)
    assert parent.data.tags["retest.source_run_id"] == source.run_id
    assert parent.data.metrics["k"] == 3
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{first.run_id}'"
    )
    assert len(children) == 3
    assert client.get_run(source.run_id).data.tags["ohlora.retest"] == again.run_id
    joined = pd.read_csv(client.download_artifacts(again.run_id, "per_vector.csv"))
    assert joined["re_pass_prob"].notna().sum() == len(table)
    page = Path(client.download_artifacts(again.run_id, "review/index.html")).read_text()
    assert page.count("re-pass probability") == len(table)
    # Its cards link the sheets where the screening run's page finds them (its own, or a
    # run of the same measurement); the re-test stores no copy of them.
    shown = json.loads(
        Path(client.download_artifacts(again.run_id, "review/sheets.json")).read_text()
    )
    assert shown and again.run_id not in {v["run_id"] for v in shown.values()}
    assert "review/sheets" not in {a.path for a in client.list_artifacts(again.run_id, "review")}

    # select records the chosen vectors' stability from the run's latest re-test
    from ohlora_eval.apps.select import select
    from ohlora_eval.tracking.selections import load_selection

    chosen = int(table["case"].iloc[0])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        sel_cfg = compose(
            "select",
            overrides=[
                f"tracking.root={store}",
                f"run_id={source.run_id}",
                f"cases=[{chosen}]",
                "name=sel-retest",
                "allow_failed=true",
            ],
        )
    sel = select(sel_cfg)
    manifest, _, _ = load_selection(client, f"sel-retest/{sel.version}", tmp_path)
    recorded = manifest["stability"]
    assert recorded["retest_run_id"] == again.run_id and recorded["k"] == 3
    row = table.set_index("case").loc[chosen]
    assert recorded["cases"][str(chosen)]["re_pass_prob"] == pytest.approx(row["re_pass_prob"])


def test_retest_says_one_progress_and_one_summary(make_cfg, store, caplog):
    """Issue 24, item 7: not a screening's steps and summary per repetition, but one line of
    progress over the repetitions (every few seconds, off a terminal) and one summary."""
    source = evaluate(make_cfg("cutoff.eyes=0.5", "cutoff.mouth=0.5", "cutoff.pose=0.3"))
    cfg = _retest_cfg(store, f"run_id={source.run_id}", "k=3", "max_vectors=3")
    cfg.tracking.progress = True  # as typed; stderr is no terminal here: lines, not a bar
    with caplog.at_level(logging.INFO, logger="ohlora_eval"):
        caplog.clear()  # what the re-test says, not the source run above
        retest(cfg)
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "writing the run's artifacts" in m], said
    assert not [m for m in said if "look at it" in m], said
    assert [m for m in said if m.startswith("ohlora_eval: re-testing 3 vectors")], said
    assert len([m for m in said if m.lstrip().startswith("ohlora_eval.retest:")]) == 1, said


def test_retest_refuses_what_it_cannot_retest(store):
    with pytest.raises(UserError, match=r"k=1 must be an integer in \[2, "):
        retest(_retest_cfg(store, "run_id=x", "k=1"))
    with pytest.raises(UserError, match="run_id=nosuch: no such run"):
        retest(_retest_cfg(store, "run_id=nosuch"))


def test_a_selection_measured_as_published_verifies_exactly(make_cfg, store):
    """Dropout draws are seeded per case, so re-measuring a noisy selection (other vectors
    beside it, another batch) gives the recorded r exactly."""
    from ohlora_eval.apps.select import select
    from ohlora_eval.apps.verify import verify

    loose = ("cutoff.eyes=0.3", "cutoff.mouth=0.3", "cutoff.pose=0.2")
    source = evaluate(make_cfg("measure=as_published", *loose))
    passed = source.per_vector.loc[source.per_vector["passed"] == "O", "case"].tolist()[:2]
    assert passed
    overrides = [f"tracking.root={store}", "tracking.progress=false"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        sel_cfg = compose(
            "select",
            overrides=[*overrides, f"run_id={source.run_id}", f"cases={passed}", "name=sel-noisy"],
        )
        select(sel_cfg)
        check = verify(compose("verify", overrides=[*overrides, "model=sel-noisy@final"]))
    assert check.max_abs_diff == 0.0
