"""`make bench`'s scale section: local vs Ray with 1 and 2 workers, and the per-chunk cost."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray", reason="Ray missing: pip install -e '.[scale]'")

from ohlora_eval.bench import cli  # noqa: E402


def test_bench_has_a_scale_section(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = cli.main(
        [
            "--skip-synthetic",
            "--skip-real",
            "--skip-sweep",
            "--skip-switches",
            "--skip-faces",  # its own test: tests/bench/test_bench.py
            "--scale-vectors",
            "8",
            "--scale-faces",
            "200",
            "--scale-faces-batch",
            "100",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    scale = json.loads(out.read_text())["scale"]
    for key in ("ray_1", "ray_2"):
        assert scale[key]["identical_to_local"] is True
        assert scale[key]["images_per_sec"] > 0
        assert scale[key]["driver_overhead_per_chunk_ms"] >= 0
    assert scale["local"]["images_per_sec"] > 0 and scale["ray1_over_local"] > 0
    for key in ("faces_ray_1", "faces_ray_2"):  # a direction fit's sampling, 2 batches
        assert scale[key]["identical_to_local"] is True and scale[key]["faces_per_sec"] > 0
    assert scale["faces_local"]["faces"] == 200
    printed = capsys.readouterr().out
    assert "[5] Scale: one process vs Ray workers" in printed
    assert "Ray 1 worker / local:" in printed
    assert "direction fit, 200 faces in batches of 100" in printed
