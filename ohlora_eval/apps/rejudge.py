"""``python -m ohlora_eval.rejudge run_id=<finished run> cutoff.eyes=...``: judge again.

Measuring is expensive and judging is cheap: a cutoff sweep over correlations already
measured (or imported from Oh-LoRA) must not generate an image. Nothing here builds a
generator or a scorer. Sweepable (``-m cutoff.eyes=0.88,0.90``). ``log_judged`` is
shared with the import app. The run's review page links to the contact sheets the
source run shows (stored by the run that measured them): it stores no image.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from ohlora_eval import review
from ohlora_eval.apps.cli import hydra_app
from ohlora_eval.errors import ConfigError, UserError
from ohlora_eval.formats.ohlora_results import read_ohlora_results
from ohlora_eval.formats.pictures import summary_plot
from ohlora_eval.pipeline import judge
from ohlora_eval.tracking import lineage, store
from ohlora_eval.tracking.artifacts import LinkedPage, select_command
from ohlora_eval.tracking.contact_sheets import Linker, local_dir
from ohlora_eval.tracking.read_back import PER_VECTOR, RunView, linked_sheets
from ohlora_eval.tracking.runs import log_hydra_files, print_summary, timed, tracked_run


@dataclass
class Rejudged:
    """What a re-judging run decided (kept in memory for callers and tests)."""

    run_id: str
    source_run_id: str
    per_vector: pd.DataFrame
    metrics: dict[str, float]


def rejudge(cfg: DictConfig) -> Rejudged:
    """Judge run ``cfg.run_id``'s ``per_vector.csv`` with ``cfg.cutoff``; log a new run."""
    source_id = _source_run_id(cfg)
    cutoffs = judge.check_cutoffs(cfg.cutoff)
    uri, _ = store.setup(cfg.tracking.experiment, cfg.tracking.uri, cfg.tracking.root)
    client = MlflowClient(uri)
    source = RunView.open(client, source_id, why="only a FINISHED run's correlations are re-judged")
    per_vector = _read_source_table(source, cutoffs)

    own = OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, ["cutoff", "run_id", "tracking"]), resolve=True
    )
    # The source's params describe how these correlations were measured (or which file they
    # came from); this run's own keys replace the ones it re-decides.
    params = {k: v for k, v in source.params.items() if not k.startswith("cutoff.")}
    params.update(store.flatten(own))
    params["n_rows"] = str(len(per_vector))
    source_name = source.name or source_id
    tags = {
        "source": "rejudge",
        "ohlora.kind": "rejudge",
        "rejudge.source_run_id": source_id,
        "rejudge.source_kind": source.kind or "unknown",
        "git_commit": store.git_commit(),
    }
    sheets = linked_sheets(client, source_id)
    threshold = identity_threshold(cutoffs, source)
    cut = " ".join(f"{p}{cutoffs[p]:g}" for p in ("eyes", "mouth", "pose"))
    if judge.identity_cutoff(cutoffs) is not None:
        cut += f" identity{cutoffs['identity']:g}"
    with tracked_run(tags, run_name=f"rejudge {cut} | {source_name}") as run_id:
        store.log_params(params)
        lineage.log_inputs_of(source.run)  # the same candidates and directions as the source
        page = None
        if sheets:  # a screening's table (an import has no pictures and no review columns)
            settings = review.ReviewSettings(local_dir=str(Path(cfg.tracking.root) / "review"))
            if "review_rank" not in per_vector.columns:
                settings.rank_by = "sum_abs_corr"
            page = LinkedPage(
                run_id,
                per_vector,
                cutoffs,
                settings,
                note=f"re-judged from run {source_id}; contact sheets as that run shows them",
                command=select_command(OmegaConf.to_container(cfg.tracking, resolve=True)),
                identity_threshold=threshold,
            )
        metrics = log_judged(
            per_vector, cutoffs, OmegaConf.to_yaml(own), page, sheets, identity_threshold=threshold
        )
    notes = [f"re-judged run {source_id} ({tags['rejudge.source_kind']}); nothing generated"]
    if threshold is not None:
        name = source.tags.get("identity", "identity model")
        notes.append(identity_note(metrics, name, judge.identity_cutoff(cutoffs)))
    print_summary(
        run_id,
        per_vector,
        metrics,
        cutoffs,
        experiment=cfg.tracking.experiment,
        uri=uri,
        notes=notes,
    )
    return Rejudged(run_id, source_id, per_vector, metrics)


def _source_run_id(cfg: DictConfig) -> str:
    if OmegaConf.is_missing(cfg, "run_id") or not cfg.run_id:
        raise ConfigError(
            "run_id=<id> is required: the finished run whose per_vector.csv is re-judged"
            " (an evaluation, import or re-judge run)"
        )
    return str(cfg.run_id)


def _read_source_table(source: RunView, cutoffs: Mapping[str, float]) -> pd.DataFrame:
    """The source's ``per_vector.csv`` judged with ``cutoffs``: the table checked, then its
    r read as a result file (``read_ohlora_results``) and judged again."""
    with tempfile.TemporaryDirectory() as tmp:
        source.per_vector  # noqa: B018 - there, and a table of this project (one error line)
        path = source.file(PER_VECTOR, tmp)
        try:
            # An empty r in a native table is an undefined correlation: it fails, with reason.
            table = read_ohlora_results(path, cutoffs, allow_undefined=True)
        except UserError as exc:
            what = f"{PER_VECTOR} of run {source.run_id}"
            raise UserError(str(exc).replace(path, what)) from None
    # Measurement-derived extras (review columns of a native run) travel with the table.
    return table.drop(columns=["file_passed"], errors="ignore")


def identity_threshold(cutoffs: Mapping[str, float], source: RunView) -> float | None:
    """The distance a re-judge counts "same person" at: its identity cutoff, else the one its
    source run counted at (None: the source measured no identity)."""
    limit = judge.identity_cutoff(cutoffs)
    if limit is not None:
        return limit
    value = source.metrics.get("identity_threshold")
    return None if value is None else float(value)


def identity_note(metrics: Mapping[str, float], name: str, limit: float | None) -> str:
    """What a re-judge says of identity: the counts, and the vectors it could not judge
    (no stored distance: the source run measured only its own scope)."""
    line = judge.identity_summary(metrics, name, limit)
    unknown = int(metrics.get("r_passed_identity_unknown", 0))
    if unknown and limit is not None:
        line += (
            f". {unknown} vectors clear the three r cutoffs but have no stored distance (outside"
            " the source run's identity.scope, or faces not aligned): they fail here, never"
            " kept; screen with these cutoffs (or identity.scope=all) to measure them"
        )
    return line


def log_judged(
    per_vector: pd.DataFrame,
    cutoffs: Mapping[str, float],
    config_yaml: str,
    page: LinkedPage | None = None,
    sheets: Mapping[int, object] | None = None,
    identity_threshold: float | None = None,
) -> dict[str, float]:
    """Into the active run: a native run's metrics (``measured_images`` 0, no images_per_sec:
    nothing was generated; the identity counts at ``identity_threshold`` when the table has
    identity columns), per_vector.csv, statistics.csv, summary.png, the config and Hydra's
    files; with ``page``, a review page linking to ``sheets`` (case -> ``read_back.Logged``),
    stored elsewhere."""
    metrics = judge.run_metrics(per_vector, identity_threshold=identity_threshold)
    metrics["measured_images"] = 0.0
    store.retry(mlflow.log_metrics, metrics)
    with tempfile.TemporaryDirectory() as tmp, timed("writing the run's artifacts"):
        out = Path(tmp)
        per_vector.to_csv(out / PER_VECTOR, index=False)
        judge.statistics(per_vector).to_csv(out / "statistics.csv")
        summary_plot(per_vector, dict(cutoffs), out / "summary.png")
        (out / "config.yaml").write_text(config_yaml)
        if page is not None:
            client = MlflowClient(mlflow.get_tracking_uri())
            run_dir = local_dir(mlflow.get_artifact_uri())
            linker = Linker(client, page.run_id, run_dir)
            shown = set(review.page_cases(per_vector, cutoffs, page.settings))
            where = {c: w for c, w in (sheets or {}).items() if c in shown}
            page.write(out, where, linker, run_dir)
        store.retry(mlflow.log_artifacts, str(out))
    log_hydra_files()
    if page is not None:
        page.write_local(where, linker)
    return metrics


@hydra_app("rejudge")
def main(cfg: DictConfig) -> None:
    rejudge(cfg)


if __name__ == "__main__":
    main()
