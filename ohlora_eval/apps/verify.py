"""``python -m ohlora_eval.verify model=<name>@<alias>``: re-evaluate a recorded selection.

Exactly the recorded vectors (full precision), the recorded config and the
recorded directions: on the same device the correlations come out identical.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from ohlora_eval.apps.build import has_noise, replay_config, set_device
from ohlora_eval.apps.cli import UserError, hydra_app
from ohlora_eval.errors import int_in
from ohlora_eval.progress import STDOUT
from ohlora_eval.tracking import store
from ohlora_eval.tracking.registry import repair
from ohlora_eval.tracking.runs import note_run
from ohlora_eval.tracking.selections import load_selection

log = logging.getLogger(__name__)

VERIFY_EXPERIMENT = "ohlora-verify"


@dataclass
class Verification:
    run_id: str
    table: pd.DataFrame  # per vector: recorded vs re-measured r
    max_abs_diff: float
    all_pass: bool
    noise_pass_frequency: pd.Series | None = None


@hydra_app("verify")
def main(cfg: DictConfig) -> None:
    result = verify(cfg)
    if not result.all_pass:
        sys.exit(1)


def verify(cfg: DictConfig) -> Verification:
    from ohlora_eval.apps.screen import evaluate

    int_in("noise_seeds", cfg.noise_seeds, 0, 10_000)
    uri, _ = store.setup(VERIFY_EXPERIMENT, cfg.tracking.uri, cfg.tracking.root)
    client = MlflowClient(uri, registry_uri=uri)
    name = str(cfg.model).split("@", 1)[0].rsplit("/", 1)[0]
    for line in repair(client, name):  # a version an interrupted select left incomplete
        log.warning(f"ohlora_eval.verify: {line}")
    with tempfile.TemporaryDirectory() as tmp:
        manifest, z, label = load_selection(client, str(cfg.model), Path(tmp))
    if not manifest.get("config"):
        raise UserError(f"model={cfg.model}: the selection has no recorded config")
    eval_cfg = recorded_config(manifest, cfg)
    cases = np.asarray(manifest["cases"], dtype=np.int64)
    tags = {
        "ohlora.kind": "verification",
        "verify.model": label,
        "verify.source_run_id": str(manifest["source_run_id"]),
    }
    res = evaluate(eval_cfg, latents=z, cases=cases, tags=tags)
    table = compare(pd.DataFrame(manifest["recorded"]), res.per_vector)
    max_diff = float(table[[f"{p}_diff" for p in ("eyes", "mouth", "pose")]].abs().max().max())
    all_pass = bool((table["passed_now"] == "O").all())
    freq = None
    if int(cfg.noise_seeds) > 0 and not has_noise(eval_cfg):
        log.warning(
            f"ohlora_eval.verify: {eval_cfg.generator._target_} has no noise; noise_seeds ignored"
        )
    elif int(cfg.noise_seeds) > 0:
        freq = _noise_frequency(eval_cfg, z, cases, int(cfg.noise_seeds), tags)
        table["noise_pass_frequency"] = table["case"].map(freq)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "verification.csv"
        table.to_csv(path, index=False)
        store.retry(client.log_artifact, res.run_id, str(path))
    note_run(res.run_id)  # the verification run, not its last noise seed's
    metrics = {
        "max_abs_corr_diff": max_diff,
        "still_passed": float((table["passed_now"] == "O").sum()),
        "n_selected": float(len(table)),
    }
    for k, v in metrics.items():
        store.retry(client.log_metric, res.run_id, k, v)
    verdict = "all still pass" if all_pass else "SOME NO LONGER PASS"
    log.info(
        f"\nohlora_eval.verify: {label}: {int(metrics['still_passed'])} of {len(table)} still"
        f" pass ({verdict}); max |recorded r - re-measured r| = {max_diff:.3g}\n"
        f"  verification run {res.run_id} in experiment {VERIFY_EXPERIMENT!r}",
        extra=STDOUT,
    )
    if freq is not None:
        log.info(
            "  pass frequency under noise seeds: "
            + ", ".join(f"case {c}: {f:.2f}" for c, f in freq.items()),
            extra=STDOUT,
        )
    return Verification(res.run_id, table, max_diff, all_pass, freq)


def recorded_config(manifest: dict, cfg: DictConfig) -> DictConfig:
    """The source run's config, pinned to its directions, with today's store and device."""
    rec = replay_config(
        manifest["config"], cfg.tracking, VERIFY_EXPERIMENT, manifest.get("directions_run_id")
    )
    if cfg.get("device"):
        set_device(rec, cfg.device)
    return rec


def compare(recorded: pd.DataFrame, now: pd.DataFrame) -> pd.DataFrame:
    """Per case: recorded r, re-measured r, their difference, passed then and now."""
    rec = recorded.set_index("case")
    cur = now.set_index("case")
    out = pd.DataFrame({"case": rec.index})
    for p in ("eyes", "mouth", "pose"):
        col = f"{p}_corr"
        out[f"{p}_recorded"] = rec[col].to_numpy(dtype=np.float64)
        out[f"{p}_now"] = cur.loc[rec.index, col].to_numpy(dtype=np.float64)
        out[f"{p}_diff"] = out[f"{p}_now"] - out[f"{p}_recorded"]
    out["passed_recorded"] = rec["passed"].to_numpy()
    out["passed_now"] = cur.loc[rec.index, "passed"].to_numpy()
    out["fail_reason_now"] = cur.loc[rec.index, "fail_reason"].to_numpy()
    return out


def _noise_frequency(
    eval_cfg: DictConfig, z: np.ndarray, cases: np.ndarray, k: int, tags: dict[str, str]
) -> pd.Series:
    from ohlora_eval.apps.screen import evaluate

    passed = []
    for seed in range(k):
        c = eval_cfg.copy()
        c.noise_seed = seed
        res = evaluate(c, latents=z, cases=cases, tags={**tags, "verify.noise_seed": str(seed)})
        passed.append((res.per_vector.set_index("case")["passed"] == "O").astype(float))
    return pd.concat(passed, axis=1).mean(axis=1).rename("noise_pass_frequency")


if __name__ == "__main__":
    main()
