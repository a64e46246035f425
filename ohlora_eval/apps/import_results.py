"""``python -m ohlora_eval.import_results path=<csv> [statistics=<csv>] [name=...]``.

Years of Oh-LoRA test results belong beside the new runs: each file becomes one finished
run in the evaluation experiment with the metrics and ``per_vector.csv`` of a native run,
judged again with ``cutoff`` (Oh-LoRA v3.1's by default), so it can be compared, swept
(``python -m ohlora_eval.rejudge run_id=<id> ...``) and picked from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ohlora_eval.apps.cli import hydra_app
from ohlora_eval.apps.rejudge import log_judged
from ohlora_eval.errors import ConfigError, MissingFile
from ohlora_eval.formats.ohlora_results import (
    compare_statistics,
    disagreements,
    read_ohlora_results,
    read_ohlora_statistics,
)
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.fingerprint import file_digest
from ohlora_eval.tracking import store
from ohlora_eval.tracking.runs import print_summary, tracked_run


@dataclass
class Imported:
    """What an import logged (kept in memory for callers and tests)."""

    run_id: str
    per_vector: pd.DataFrame
    metrics: dict[str, float]
    disagreements: pd.DataFrame  # rows whose file verdict differs from the recomputed one
    statistics_differences: list[str]  # statistics file vs. recomputed; empty when they agree


def import_results(cfg: DictConfig) -> Imported:
    """Read and check the file(s) first (bad input logs nothing), then log one finished run."""
    path = _input_file(cfg, "path")
    cutoffs = judge.check_cutoffs(cfg.cutoff)
    table = read_ohlora_results(path, cutoffs)
    per_vector = table[judge.PER_VECTOR_COLUMNS]
    disagree = disagreements(table, cutoffs)
    stats_path = _input_file(cfg, "statistics") if cfg.statistics is not None else None
    differences = (
        compare_statistics(read_ohlora_statistics(stats_path), judge.statistics(per_vector))
        if stats_path
        else []
    )

    uri, _ = store.setup(cfg.tracking.experiment, cfg.tracking.uri, cfg.tracking.root)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    tags = {
        "source": "import",
        "ohlora.kind": "imported",
        "import.path": str(path),
        "import.sha256": file_digest(path),
        "import.layout": table.attrs["layout"],
        "import.disagreements": str(len(disagree)),
        "git_commit": store.git_commit(),
    }
    if stats_path:
        tags["import.statistics_path"] = str(stats_path)
        tags["import.statistics_check"] = "; ".join(differences) or "agrees"
    params = {
        **store.flatten(resolved),
        "n_rows": str(len(per_vector)),
        "layout": table.attrs["layout"],
    }
    with tracked_run(tags, run_name=cfg.name or path.stem) as run_id:
        store.log_params(params)
        metrics = log_judged(per_vector, cutoffs, OmegaConf.to_yaml(resolved))
        for original in (path, stats_path):
            if original:
                store.retry(mlflow.log_artifact, str(original), "source")
        if len(disagree):
            store.retry(mlflow.log_text, disagree.to_csv(index=False), "disagreements.csv")
    notes = [f"imported {path} ({table.attrs['layout']})", _verdict_note(table, disagree)]
    if stats_path:
        notes.append(
            f"statistics file differs: {'; '.join(differences)}"
            if differences
            else "statistics file agrees with the recomputed statistics"
        )
    print_summary(
        run_id,
        per_vector,
        metrics,
        cutoffs,
        experiment=cfg.tracking.experiment,
        uri=uri,
        notes=notes,
    )
    return Imported(run_id, per_vector, metrics, disagree, differences)


def _input_file(cfg: DictConfig, key: str) -> Path:
    if OmegaConf.is_missing(cfg, key):
        raise ConfigError(f"{key}=<csv> is required: the Oh-LoRA test-result CSV to import")
    path = Path(str(cfg[key])).expanduser().resolve()
    if not path.is_file():
        raise MissingFile(f"{key}={cfg[key]}: no such file ({path})")
    return path


def _verdict_note(table: pd.DataFrame, disagree: pd.DataFrame) -> str:
    if not (table["file_passed"] != "").any():
        return "the file has no passed column: nothing to compare the verdicts with"
    if disagree.empty:
        return "the file's own passed column agrees on every row"
    shown = ", ".join(
        f"case {r.case} file {r.file_passed} now {r.passed}" for r in disagree.head(5).itertuples()
    )
    more = f" and {len(disagree) - 5} more" if len(disagree) > 5 else ""
    return (
        f"the file's own passed column differs on {len(disagree)} row(s): {shown}{more}"
        " (disagreements.csv; a file judged with other cutoffs needs them: cutoff.eyes=...)"
    )


@hydra_app("import_results")
def main(cfg: DictConfig) -> None:
    import_results(cfg)


if __name__ == "__main__":
    main()
