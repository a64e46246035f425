"""The speed-switch section of the benchmark: every switch either runs (images/s, agreement
with fp32 on the same vectors) or says why it was skipped; nothing is timed as a test."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from ohlora_eval.bench import cli, switches


def test_switch_names_parse_and_reject_unknown_ones():
    assert switches.parse_switches("bf16, channels_last,bf16+channels_last") == [
        "bf16",
        "channels_last",
        "bf16+channels_last",
    ]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown switch 'int8'"):
        switches.parse_switches("bf16,int8")
    combo = switches.switch_settings("bf16+channels_last")
    assert combo.precision == "bf16" and combo.channels_last


def test_agreement_of_identical_and_moved_scores():
    grid = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 0, 1) for z in (-1, 1)], float)
    rng = np.random.default_rng(0)
    base = (grid[None] * 2 + rng.normal(0, 0.3, (5, grid.shape[0], 3))).astype(np.float32)
    same = switches.agreement(base, base.copy(), grid, {"eyes": 0.9, "mouth": 0.9, "pose": 0.9})
    assert same["max_abs_delta_r"] == {"eyes": 0.0, "mouth": 0.0, "pose": 0.0}
    assert same["same_verdict_share"] == 1.0
    moved = base.copy()
    moved[0, :, 0] = rng.normal(0, 1, grid.shape[0])  # vector 0 loses its eyes correlation
    diff = switches.agreement(base, moved, grid, {"eyes": 0.9, "mouth": 0.9, "pose": 0.9})
    assert diff["max_abs_delta_r"]["eyes"] > 0.1 and diff["max_abs_delta_r"]["pose"] == 0.0
    assert diff["same_verdict_share"] == pytest.approx(0.8)


@pytest.mark.slow  # 800 s of a 1,959 s run: the switches' measuring paths are covered by
# tests/pipeline/test_measure_speed.py (bf16 on the CPU, the real scorer's speed hook, checked
# settings, the measurement key), this section's parsing and agreement by the tests above, the
# benchmark command by tests/bench/test_bench.py; `make test-all` runs it
def test_switch_section_on_cpu_runs_or_explains_each_switch(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = cli.main(
        [
            "--skip-synthetic",
            "--skip-real",
            "--skip-sweep",
            "--switches",
            "bf16,fp16,channels_last,compile,tf32",
            "--switch-vectors",
            "2",
            "--switch-real-vectors",
            "1",
            "--switch-images",
            "2",
            "--fit-n",
            "300",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    syn = result["switches"]["model_sets"]["synthetic"]["runs"]
    real = result["switches"]["model_sets"]["real"]["runs"]
    for runs in (syn, real):
        assert list(runs)[0] == "fp32"
        assert runs["fp32"]["max_abs_delta_r"] == {"eyes": 0.0, "mouth": 0.0, "pose": 0.0}
        assert runs["fp32"]["images_per_sec"] > 0
        assert runs["bf16"]["images_per_sec"] > 0
        assert 0.0 <= runs["bf16"]["same_verdict_share"] <= 1.0
        assert "--compile-on-cpu" in runs["compile"]["reason"]
        assert "CUDA setting" in runs["tf32"]["reason"]
        assert "--fp16-on-cpu" in runs["fp16"]["reason"]
    assert "set_speed hook" in syn["channels_last"]["reason"]  # no convolutions to speed up
    assert real["channels_last"]["images_per_sec"] > 0  # the real networks have the hook
    assert real["channels_last"]["max_abs_delta_r"]["eyes"] < 0.05
    printed = capsys.readouterr().out
    assert "[4] Speed switches" in printed and "same verdict" in printed
