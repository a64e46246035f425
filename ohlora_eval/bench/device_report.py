"""The JSON report of ``scripts/device_check.sh``: its steps' logs and results, in one file.

``python -m ohlora_eval.bench.device_report <work dir> <report path>`` reads what the
script left in ``<work dir>/steps/`` (per step: ``<name>.rc``, ``.seconds``, ``.log``,
``.skipped``), the benchmark JSONs and the verification's printed max |recorded r -
re-measured r|, and writes the report. Standard library only: it must run even when the
setup step failed. The script calls it after every step, so a check cut short still
leaves a report of what ran.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from ohlora_eval.bench.text import plain_json

SCHEMA = "ohlora_eval.device_check/1"
VERIFY_LINE = re.compile(
    r"(\d+) of (\d+) still pass .*?max \|recorded r - re-measured r\| = ([0-9.eE+-]+|nan)"
)
RUN_LINE = re.compile(r"run ([0-9a-f]{32})(?: \([^)]*\))? in experiment")  # "(name)" optional
TAIL_CHARS = 3000
# What the report keeps of each switch that ran (the benchmark JSON has more).
SWITCH_FIGURES = "images_per_sec speed_vs_fp32 warmup_seconds max_abs_delta_r same_verdict_share"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def step_record(steps: Path, name: str) -> dict[str, Any]:
    """One step: exit status (124 = its timeout), seconds, skip reason, the log's tail."""
    rec: dict[str, Any] = {"name": name}
    skipped = _read(steps / f"{name}.skipped")
    if skipped is not None:
        return {**rec, "skipped": True, "reason": skipped.strip()}
    rc, seconds, log = (_read(steps / f"{name}.{ext}") for ext in ("rc", "seconds", "log"))
    rec["rc"] = int(rc) if rc and rc.strip().lstrip("-").isdigit() else None
    rec["timed_out"] = rec["rc"] in (124, 137)
    rec["seconds"] = float(seconds) if seconds and seconds.strip() else None
    rec["log_tail"] = (log or "")[-TAIL_CHARS:]
    return rec


def verification(log: str) -> dict[str, Any] | None:
    """The verify command's verdict from its printed summary (None when it did not print)."""
    match = VERIFY_LINE.search(log)
    if match is None:
        return None
    diff = float(match.group(3))
    return {
        "still_pass": int(match.group(1)),
        "selected": int(match.group(2)),
        "max_abs_r_diff": diff if diff == diff else None,  # NaN is not JSON
        "exact": diff == 0.0,
    }


def switch_summary(bench: dict[str, Any]) -> dict[str, Any]:
    """images/s and agreement per switch, per model set, from a benchmark JSON."""
    sw = bench.get("switches") or {}
    out: dict[str, Any] = {}
    for which, ms in (sw.get("model_sets") or {}).items():
        rows = {}
        for name, run in ms.get("runs", {}).items():
            if run.get("skipped") or run.get("failed"):
                rows[name] = {
                    k: run[k] for k in ("skipped", "failed", "reason", "error") if k in run
                }
            else:
                rows[name] = {k: run.get(k) for k in SWITCH_FIGURES.split()}
        out[which] = {"settings": ms.get("settings"), "runs": rows}
    return out


def build_report(work: Path) -> dict[str, Any]:
    steps = work / "steps"
    order = (_read(steps / "ORDER") or "").split()
    env = {}
    env_text = _read(work / "environment.json")
    if env_text:
        try:
            env = json.loads(env_text)
        except ValueError:
            env = {"unreadable": env_text[-500:]}
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "settings": json.loads(_read(work / "settings.json") or "{}"),
        "environment": env,
        "steps": [step_record(steps, name) for name in order],
        "benchmarks": {},
    }
    for path in sorted(work.glob("bench_*.json")):
        try:
            bench = json.loads(path.read_text())
        except ValueError:
            continue
        report["benchmarks"][path.stem] = {
            "machine": bench.get("machine"),
            "switches": switch_summary(bench),
        }
    for rec in report["steps"]:
        name = rec["name"]
        log = _read(steps / f"{name}.log") or ""
        rec["ok"] = rec.get("rc") == 0
        if name == "screen":
            run = RUN_LINE.search(log)
            report["screen_run_id"] = run.group(1) if run else None
        if name == "verify":
            report["verification"] = verification(log)
            # verify exits 1 when a recorded vector no longer passes; the check selects
            # failed vectors too (random weights pass none), so its verdict is the line.
            rec["ok"] = report["verification"] is not None and rec.get("rc") in (0, 1)
    done = [s for s in report["steps"] if not s.get("skipped")]
    report["all_steps_ok"] = bool(done) and all(s["ok"] for s in done)
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m ohlora_eval.bench.device_report <work dir> <report.json>")
        return 2
    work, out = Path(args[0]), Path(args[1])
    report = build_report(work)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(plain_json(report), indent=2, allow_nan=False) + "\n")
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
