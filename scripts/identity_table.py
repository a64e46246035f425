"""The identity table of docs/real_faces.md: for each point of a real-faces sweep (or any
screening runs of one experiment), how many passed vectors keep their person at a distance
of 0.6 and 0.5, the mean distance, and which property's edit moves the face most.

    PYTHONPATH=. python scripts/identity_table.py --root <tracking.root> [--parent <sweep run id>]

Reads each run's per_vector.csv (nothing is measured). Without --parent: every finished
screening run of experiment ohlora-real-faces.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

PROPS = ("eyes", "mouth", "pose")


def recipe(params: dict[str, str]) -> tuple[str, str]:
    method = params.get("directions.method", "?")
    grouped = params.get("directions.grouped", "True") == "True"
    label = {
        "gradient": "gradient",
        "svm": "SVM, 4 groups" if grouped else "SVM, one group",
        "mixed": "mixed",
    }.get(method, method)
    return params.get("layer", "?"), label


def summary(table: pd.DataFrame) -> dict[str, object]:
    ok = table[table["passed"] == "O"]
    worst = ok["identity_max"].astype(float)
    along = ok[[f"identity_{p}" for p in PROPS]].astype(float)
    most = along.idxmax(axis=1).str.replace("identity_", "") if len(ok) else pd.Series([])
    counts = {p: int((most == p).sum()) for p in PROPS}
    return {
        "passed": len(ok),
        "same_06": int((worst <= 0.6).sum()),
        "same_05": int((worst <= 0.5).sum()),
        "unknown": int(worst.isna().sum()),
        "mean_max": float(worst.mean()) if len(ok) else float("nan"),
        "mean_along": {p: float(along[f"identity_{p}"].mean()) for p in PROPS},
        "most": counts,
        "best": ok.loc[worst.idxmin()] if len(ok) else None,
        "worst": ok.loc[worst.idxmax()] if len(ok) else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--parent", default=None)
    a = p.parse_args()
    client = MlflowClient(f"sqlite:///{a.root.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ohlora-real-faces")
    flt = "attributes.status = 'FINISHED' and tags.`ohlora.kind` = 'evaluation'"
    if a.parent:
        flt += f" and tags.`mlflow.parentRunId` = '{a.parent}'"
    runs = client.search_runs([exp.experiment_id], filter_string=flt)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            path = client.download_artifacts(run.info.run_id, "per_vector.csv", tmp)
            table = pd.read_csv(path, keep_default_na=False, na_values=[""])
            if "identity_max" not in table.columns:
                continue
            rows.append((recipe(run.data.params), run.info.run_id, summary(table)))
    order = ["gradient", "SVM, 4 groups", "SVM, one group", "mixed"]
    rows.sort(key=lambda r: (r[0][0] != "z", order.index(r[0][1]) if r[0][1] in order else 9))
    print(
        "| layer | directions | passed | same person at 0.6 | at 0.5 | mean identity_max |"
        " edit that moves the face most (eyes / mouth / pose) | mean distance along"
        " eyes / mouth / pose |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (layer, label), _, s in rows:
        most = " / ".join(str(s["most"][q]) for q in PROPS)
        along = " / ".join(f"{s['mean_along'][q]:.3f}" for q in PROPS)
        print(
            f"| {layer} | {label} | {s['passed']} | {s['same_06']} | {s['same_05']} |"
            f" {s['mean_max']:.3f} | {most} | {along} |"
        )
    print()
    for (layer, label), run_id, s in rows:
        for kind in ("best", "worst"):
            row = s[kind]
            if row is None:
                continue
            rs = ", ".join(f"{q} r {float(row[f'{q}_corr']):+.3f}" for q in PROPS)
            print(
                f"{layer} {label} {kind}: run {run_id} case {int(row['case'])}"
                f" identity_max {float(row['identity_max']):.3f} ({rs})"
            )
    total = sum(s["passed"] for _, _, s in rows)
    kept = sum(s["same_06"] for _, _, s in rows)
    share = kept / total if total else np.nan
    print(f"\nall recipes: {kept} of {total} passed vectors within 0.6 ({share:.1%})")


if __name__ == "__main__":
    main()
