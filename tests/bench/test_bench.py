"""Smoke test of the benchmark CLI: it runs end to end on a tiny size and writes valid JSON.

A benchmark, not a timed test: nothing here looks at how fast anything was,
only that every number the report promises is there (so ``make bench`` cannot
silently rot between real runs) and that (p)'s number is the time of the shipped step.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from ohlora_eval.bench import cli, forward
from ohlora_eval.models.networks.recipe import recipe_value
from ohlora_eval.pipeline.measure import measure as shipped_measure  # as forward.py imports it

DELAY = 0.3  # seconds the counted measure adds to each call: only a timer around it sees them
REPEATS = 2


class BenchRun(NamedTuple):
    out: Path  # the JSON file
    printed: str  # the report on stdout
    calls: list[dict[str, Any]]  # each call of the shipped measure: its arguments, seconds


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> BenchRun:
    """One tiny synthetic run of the CLI for the tests below (building the models costs
    seconds), with the shipped ``measure`` wrapped: counted, timed and ``DELAY`` slower."""
    calls: list[dict[str, Any]] = []

    def counted(*args, **kwargs):
        t0 = time.perf_counter()
        measured = shipped_measure(*args, **kwargs)
        time.sleep(DELAY)
        bound = inspect.signature(shipped_measure).bind(*args, **kwargs)
        bound.apply_defaults()
        calls.append({**bound.arguments, "seconds": time.perf_counter() - t0})
        return measured

    out = tmp_path_factory.mktemp("bench") / "bench.json"
    tiny = ["--vectors", "2", "--per-image-vectors", "1", "--batch-sizes", "50,100"]
    skip = ["--skip-real", "--skip-sweep", "--skip-switches", "--skip-scale", "--skip-faces"]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(forward, "measure", counted)
        rc = cli.main(
            [*tiny, "--fit-n", "100", "--repeats", str(REPEATS), *skip, "--out", str(out)]
        )
    assert rc == 0
    return BenchRun(out, printed.getvalue(), calls)


def test_bench_smoke_writes_json(bench_run):
    out, printed = bench_run.out, bench_run.printed
    text = out.read_text()
    result = json.loads(text, parse_constant=lambda c: pytest_fail(f"non-JSON constant {c}"))
    for key in (
        "schema",
        "date",
        "git_commit",
        "machine",
        "device",
        "synthetic",
        "real",
        "sweep",
        "switches",
    ):
        assert key in result, key
    assert result["real"] == {"skipped": True, "reason": "--skip-real"}
    assert result["sweep"] == {"skipped": True, "reason": "--skip-sweep"}
    assert result["switches"] == {"skipped": True, "reason": "--skip-switches"}
    for key in ("cpu", "cores", "torch", "torch_threads"):
        assert key in result["machine"], key

    syn = result["synthetic"]
    assert syn["settings"]["vectors"] == 2
    assert syn["settings"]["images"] == 2 * 50
    assert syn["settings"]["vectors_per_batch"] == 40
    assert syn["settings"]["per_image_images"] == 50
    assert set(syn["runs_seconds"]) == {"p", "p_eval", "a50", "a100", "b"}
    assert syn["runs_seconds"].keys() == syn["runs_cpu_seconds"].keys()
    ips = syn["images_per_sec"]
    assert set(ips["a_ceiling_by_batch"]) == {"50", "100"}
    for value in (ips["p_pipeline"], ips["a_ceiling_best"], ips["b_one_at_a_time"]):
        assert value > 0 and math.isfinite(value)
    assert syn["ratios"]["p_over_a"] > 0 and syn["ratios"]["p_over_b"] > 0
    # The bare forward scores the very images the pipeline scores.
    assert max(syn["checks"]["max_abs_diff_p_vs_a_by_batch"].values()) < 1e-4

    assert "p/a =" in printed and "p/b =" in printed and str(out) in printed
    assert "(p) pipeline.measure" in printed
    # Neither the report nor the JSON names tracker issues.
    assert not re.search(r"\bissue\b", printed + text, re.IGNORECASE)


def test_bench_real_faces_section_times_the_three_stages(tmp_path, capsys):
    """Section [6] on the real weights from PyPI (skipped with the reason when they are
    missing, as the section itself is)."""
    from helpers import real_faces_or_skip

    real_faces_or_skip()
    out = tmp_path / "bench.json"
    skip = ["--skip-synthetic", "--skip-real", "--skip-sweep", "--skip-switches", "--skip-scale"]
    rc = cli.main([*skip, "--faces-vectors", "2", "--repeats", "1", "--out", str(out)])
    assert rc == 0
    faces = json.loads(out.read_text())["faces"]
    assert faces["settings"]["images"] == 100
    rates = faces["images_per_sec"]
    for key in ("generate", "score", "pipeline", "generate_1core", "score_1core"):
        assert rates[key] > 0 and math.isfinite(rates[key]), key
    assert 0 < faces["ratios"]["pipeline_over_cpu_bound"] < 2
    printed = capsys.readouterr().out
    assert "[6] Real faces" in printed and "pipeline / slower stage alone" in printed


def test_bench_times_the_shipped_measuring_step(bench_run):
    """(p) is pipeline.measure itself, not a copy of its chunk loop: the shipped function,
    wrapped with a counter and a known delay, is what each reported (p) run timed."""
    assert forward.measure is shipped_measure  # the bench calls the shipped function ...
    syn = json.loads(bench_run.out.read_text())["synthetic"]
    # ... and its (p) runs pass no grouping or image statistics ((p+) and the warm-up do).
    calls = bench_run.calls
    p_calls = [c for c in calls if c["image_stats"] is None]
    assert len(calls) > len(p_calls) == REPEATS, calls
    for call in p_calls:
        assert call["latents"].shape[0] == syn["settings"]["vectors"]
        context = call["context"]  # the default: no cache, no progress bar, this process
        assert call["groups_of"] is None and context.cache is None and context.executor is None
        assert context.progress is False
    reported = syn["runs_seconds"]["p"]
    assert len(reported) == REPEATS
    for call, seconds in zip(p_calls, reported):
        # The run's time is this call's (delay included) and next to nothing else.
        assert DELAY <= call["seconds"] <= seconds <= call["seconds"] + 0.5, (call, seconds)
    images = syn["settings"]["images"]
    assert syn["images_per_sec"]["p_pipeline"] == pytest.approx(
        images / statistics.median(reported)
    )


def test_bench_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "ohlora_eval.bench", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for flag in (
        "--vectors",
        "--real-images",
        "--sweep-vectors",
        "--skip-sweep",
        "--out",
        "--switches",
        "--skip-switches",
        "--skip-scale",
    ):
        assert flag in done.stdout


def pytest_fail(message: str):
    raise AssertionError(message)


def test_recipe_is_deterministic_and_special_cases_keys():
    import torch

    like = torch.empty(4, 3)
    assert torch.equal(recipe_value("a.weight", like), recipe_value("a.weight", like))
    assert not torch.equal(recipe_value("a.weight", like), recipe_value("b.weight", like))
    assert (recipe_value("bn.running_var", like) >= 0.5).all()
    assert torch.equal(recipe_value("synthesis.lod", torch.ones(())), torch.zeros(()))
    kernel = recipe_value("layer.blur.kernel", torch.empty(2, 1, 3, 3))
    assert kernel.shape == (2, 1, 3, 3) and math.isclose(float(kernel[0].sum()), 1.0)
    counter = torch.tensor(7)
    assert torch.equal(recipe_value("bn.num_batches_tracked", counter), counter)
