"""The human-readable report: one table per section, the ratios against their targets.

Times nothing; everything printed is also in the JSON (``cli``).
"""

from __future__ import annotations

from typing import Any

from ohlora_eval.bench.faces import faces_report
from ohlora_eval.bench.sweep import TARGET_SWEEP_WITH_CACHE
from ohlora_eval.bench.synthetic import TARGET_P_OVER_A, TARGET_P_OVER_B
from ohlora_eval.bench.text import num, table, verdict
from ohlora_eval.bench.timing import median, ratio


def _settings_lines(settings: dict[str, Any]) -> str:
    return "\n".join(f"    {k}: {v}" for k, v in settings.items())


def format_report(result: dict[str, Any]) -> str:
    """The whole report: machine and settings, then the three sections."""
    mi = result["machine"]
    threads = "torch default" if result["threads_requested"] is None else "--threads"
    out = [
        "ohlora_eval benchmark",
        f"  date: {result['date']}   git commit: {result['git_commit']}",
        f"  machine: {mi['cpu']}, {mi['cores']} cores ({mi['cores_usable']} usable),"
        f" {mi['platform']}, Python {mi['python']}",
        f"  torch {mi['torch']}: {mi['torch_threads']} threads ({threads}),"
        f" {mi['torch_interop_threads']} interop threads, device {result['device']}",
        f"  load average at start: {mi.get('loadavg_start')}, at end: {mi.get('loadavg_end')}"
        " (a busy machine inflates wall time; CPU s = this process, all threads)",
    ]
    out += synthetic_report(result["synthetic"])
    out += real_report(result["real"])
    out += sweep_report(result["sweep"])
    out += switches_report(result.get("switches", {"skipped": True, "reason": "not run"}))
    out += scale_report(result.get("scale", {"skipped": True, "reason": "not run"}))
    out += faces_report(result.get("faces", {"skipped": True, "reason": "not run"}))
    out.append(f"\nJSON: {result['json_path']}")
    return "\n".join(out)


def synthetic_report(syn: dict[str, Any]) -> list[str]:
    out = ["\n[1] Synthetic pipeline: one process, same vectors"]
    if syn.get("skipped"):
        return [*out, f"  skipped ({syn['reason']})"]
    st, ips = syn["settings"], syn["images_per_sec"]
    wall, cpu, faults = syn["runs_seconds"], syn["runs_cpu_seconds"], syn["runs_page_faults"]
    out.append(_settings_lines(st))
    rows = [
        ["variant", "images", "median s", "images/s", "CPU s", "img/CPU-s", "faults/img"]
        + ["runs (wall s)"]
    ]

    def row(label: str, key: str, images: int) -> list[str]:
        return [
            label,
            f"{images:,}",
            num(median(wall[key]), 2),
            num(ratio(images, median(wall[key]))),
            num(median(cpu[key]), 2),
            num(ratio(images, median(cpu[key]))),
            num(median(faults[key]) / images, 1),
            " ".join(f"{x:.2f}" for x in wall[key]),
        ]

    n = st["images"]
    rows.append(row(f"(p) pipeline.measure, {st['vectors_per_batch']} vec/chunk", "p", n))
    if "p_eval" in wall:
        rows.append(row("(p+) same + groups + review image_stats", "p_eval", n))
    for b in ips["a_ceiling_by_batch"]:
        mark = " <- best" if int(b) == ips["a_ceiling_best_batch"] else ""
        rows.append(row(f"(a) bare synthesize+score, batch {b}{mark}", f"a{b}", n))
    rows.append(row("(b) one at a time + JPEG round trip", "b", st["per_image_images"]))
    out.append(table(rows))
    ra = syn["ratios"]
    out.append(
        f"  p/a = {num(ra['p_over_a'], 3)} (target >= {TARGET_P_OVER_A}:"
        f" {verdict(ra['p_over_a'], TARGET_P_OVER_A)}; by CPU s {num(ra['p_over_a_cpu'], 3)})"
        f"   p/b = {num(ra['p_over_b'], 2)} (target >= {TARGET_P_OVER_B}:"
        f" {verdict(ra['p_over_b'], TARGET_P_OVER_B)}; by CPU s {num(ra['p_over_b_cpu'], 2)})"
    )
    ch = syn["checks"]
    diffs = ", ".join(f"{b}: {v:.1e}" for b, v in ch["max_abs_diff_p_vs_a_by_batch"].items())
    out.append(
        f"  checks: max |p - a| score by batch ({diffs}); JPEG loop vs p:"
        f" mean |diff| {ch['jpeg_loop_vs_p_abs_diff_mean']:.4f},"
        f" max {ch['jpeg_loop_vs_p_abs_diff_max']:.4f} (scores ~ N(0, 1))"
    )
    return out


def real_report(real: dict[str, Any]) -> list[str]:
    out = ["\n[2] Real Oh-LoRA networks: recipe weights, one vector"]
    if real.get("skipped"):
        return [*out, f"  skipped ({real['reason']})"]
    st, wall, cpu = real["settings"], real["runs_seconds"], real["runs_cpu_seconds"]
    faults = real["runs_page_faults"]
    out.append(_settings_lines(st))
    rows = [
        ["variant", "images", "seconds", "images/s", "s/image", "CPU s", "CPU s/image"]
        + ["faults/img"]
    ]

    def row(label: str, key: str, images: int) -> list[str]:
        w, c = wall[key][0], cpu[key][0]
        return [
            label,
            str(images),
            num(w, 2),
            num(images / w, 3),
            num(w / images, 3),
            num(c, 2),
            num(c / images, 3),
            num(faults[key][0] / images, 0),
        ]

    m = st["images"]
    rows.append(row("batched pipeline (pipeline.measure)", "pipeline", m))
    rows.append(row("original-style loop (batch 1, JPEG)", "loop", m))
    best = real["images_per_sec"]["ceiling_best_batch"]
    for b in st["ceiling_batch_sizes"]:
        mark = " <- best" if b == best else ""
        rows.append(row(f"bare synthesize+score, batch {b}{mark}", f"a{b}", b))
    out.append(table(rows))
    ra, sec = real["ratios"], real["seconds"]
    out.append(
        f"  batched/loop = {num(ra['batched_over_loop'], 2)}"
        f" (by CPU s {num(ra['batched_over_loop_cpu'], 2)})"
        f"   batched/ceiling = {num(ra['batched_over_ceiling'], 3)}"
        f" (by CPU s {num(ra['batched_over_ceiling_cpu'], 3)})"
        f"   section time {num(sec['section_total'], 1)} s"
    )
    ch = real["checks"]
    out.append(
        "  checks: JPEG loop vs pipeline: mean |diff|"
        f" {ch['jpeg_loop_vs_pipeline_abs_diff_mean']:.4f},"
        f" max {ch['jpeg_loop_vs_pipeline_abs_diff_max']:.4f} (recipe-weight scores are unscaled)"
    )
    return out


def sweep_report(sw: dict[str, Any]) -> list[str]:
    out = ["\n[3] Cutoff sweep cost"]
    if sw.get("skipped"):
        return [*out, f"  skipped ({sw['reason']})"]
    out.append(_settings_lines(sw["settings"]))
    rows = [["run", "seconds", "CPU s", "chunks measured/reused", "passed"]]
    runs = [("(untimed prep, 1 vector)", sw["prep_run"]), ("one run", sw["one_run"])]
    runs += [(f"sweep {r['overrides'][-1]}", r) for r in sw["sweep_runs"]]
    for label, r in runs:
        measured, reused = r.get("measured_chunks"), r.get("reused_chunks")
        chunks = "n/a" if measured is None else f"{int(measured)}/{int(reused or 0)}"
        rows.append(
            [label, num(r["seconds"], 1), num(r["cpu_seconds"], 1), chunks, str(r["passed"])]
        )
    out.append(table(rows))
    out.append(
        f"  sweep total {num(sw['sweep_total_seconds'], 1)} s / one run"
        f" {num(sw['one_run_seconds'], 1)} s = {num(sw['sweep_over_one'], 2)}"
        f" (by CPU s {num(sw['sweep_over_one_cpu'], 2)}; with a measurement cache the target"
        f" is <= {TARGET_SWEEP_WITH_CACHE}:"
        f" {verdict(sw['sweep_over_one'], TARGET_SWEEP_WITH_CACHE, higher=False)})"
    )
    return out


def switches_report(sw: dict[str, Any]) -> list[str]:
    out = ["\n[4] Speed switches: the shipped measuring step vs float32 on the same vectors"]
    if sw.get("skipped"):
        return [*out, f"  skipped ({sw['reason']})"]
    for which, ms in sw["model_sets"].items():
        out.append(f"  {which}:")
        out.append(_settings_lines(ms["settings"]))
        rows = [
            ["switch", "images/s", "x fp32", "warm-up s", "max|dr| eyes", "mouth", "pose"]
            + ["same verdict", "passed"]
        ]
        notes = []
        for name, run in ms["runs"].items():
            if run.get("skipped") or run.get("failed"):
                why = run.get("reason") or run.get("error")
                notes.append(f"    {name}: {'skipped' if run.get('skipped') else 'FAILED'}: {why}")
                continue
            d = run["max_abs_delta_r"]
            rows.append(
                [
                    name,
                    num(run["images_per_sec"]),
                    num(run["speed_vs_fp32"], 2),
                    num(run["warmup_seconds"], 1),
                    *("n/a" if d[p] is None else f"{d[p]:.1e}" for p in ("eyes", "mouth", "pose")),
                    f"{100 * run['same_verdict_share']:.1f}%",
                    str(run["passed"]),
                ]
            )
        out.append(table(rows, indent="    "))
        out += notes
    return out


def scale_report(sc: dict[str, Any]) -> list[str]:
    out = ["\n[5] Scale: one process vs Ray workers (python -m ohlora_eval.bench.scale)"]
    if sc.get("skipped"):
        return [*out, f"  skipped ({sc['reason']})"]
    from ohlora_eval.bench.scale import report

    return [*out, *("  " + line for line in report(sc).splitlines())]
