"""`make bench`'s scale section: local vs Ray with 1 and 2 workers, and the per-chunk cost."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray", reason="Ray missing: pip install -e '.[scale]'")

from ohlora_eval.bench import cli  # noqa: E402


def _scale(tmp_path, *faces: str) -> dict:
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
            *faces,
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
    return scale


def test_bench_has_a_scale_section(tmp_path, capsys):
    """The measuring layouts (a direction fit's sampling on Ray, the same numbers as local:
    tests/scale/test_ray.py::test_fit_faces_on_ray_are_the_local_faces; timed: the slow test)."""
    scale = _scale(tmp_path, "--scale-faces", "0")
    assert not any(k.startswith("faces_") for k in scale)
    printed = capsys.readouterr().out
    assert "[5] Scale: one process vs Ray workers" in printed
    assert "Ray 1 worker / local:" in printed
    assert "direction fit" not in printed


@pytest.mark.slow
def test_bench_scale_section_times_a_direction_fit_on_ray(tmp_path, capsys):
    scale = _scale(tmp_path, "--scale-faces", "200", "--scale-faces-batch", "100")
    for key in ("faces_ray_1", "faces_ray_2"):  # a direction fit's sampling, 2 batches
        assert scale[key]["identical_to_local"] is True and scale[key]["faces_per_sec"] > 0
    assert scale["faces_local"]["faces"] == 200
    assert "direction fit, 200 faces in batches of 100" in capsys.readouterr().out
