"""``python -m ohlora_eval.retest run_id=<screening run> k=10``: how stable is each verdict?

The original measured with dropout on and through a JPEG file, so its r values were
partly random: only 9 of the 22 vectors it chose passed its own re-test. This command
re-measures a run's passed vectors ``k`` times under a noise model (``noise``: the
original's measuring switches, each repetition with its own dropout seed and, for
generators with per-layer noise, its own noise seed) and reports each vector's
re-pass probability with a Wilson confidence interval.

It logs one parent run in experiment ``ohlora-retest`` (``retest.csv``: per vector
the passes, the probability and its interval, the mean and spread of each r;
``per_vector.csv``: the source table with ``re_pass_prob``, ``re_pass_lo`` and
``re_pass_hi``; ``review/index.html``: the source's review page with each card's
re-pass probability), with one child run per repetition. The source run is tagged
with it, and ``select`` records the chosen vectors' re-pass probabilities from it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ohlora_eval import review
from ohlora_eval.apps.build import has_dropout, has_noise, int_list, replay_config
from ohlora_eval.apps.cli import hydra_app
from ohlora_eval.errors import UserError, int_in, number_in
from ohlora_eval.pipeline.judge import CORR_COLUMNS, wilson_interval
from ohlora_eval.progress import STDOUT, Bar, phase, quiet
from ohlora_eval.tracking import store
from ohlora_eval.tracking.artifacts import LinkedPage, select_command
from ohlora_eval.tracking.contact_sheets import Linker, local_dir
from ohlora_eval.tracking.read_back import RunView, linked_sheets
from ohlora_eval.tracking.runs import note_run, side_run

log = logging.getLogger(__name__)

RETEST_EXPERIMENT = "ohlora-retest"
TOP_SHOWN = 10  # vectors in the printed re-pass table (all are in retest.csv and the page)


@dataclass
class Retest:
    run_id: str
    source_run_id: str
    table: pd.DataFrame  # per vector: passes, re_pass_prob, interval, r mean/std
    k: int


@hydra_app("retest")
def main(cfg: DictConfig) -> None:
    retest(cfg)


def wilson(passes: np.ndarray, k: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion passes / k at confidence ``level``."""
    return wilson_interval(passes, k, level)


def retest(cfg: DictConfig) -> Retest:
    """Re-measure the passed vectors of run ``cfg.run_id`` ``cfg.k`` times; log the result."""
    from ohlora_eval.apps.screen import evaluate

    k = int_in("k", cfg.k, 2, 10_000)  # repetitions
    int_in("seed", cfg.seed, 0, 2**32 - 1)
    if cfg.max_vectors is not None:
        int_in("max_vectors", cfg.max_vectors, 1)
    number_in("ci_level", cfg.ci_level, 0.0, 1.0, low_open=True, high_open=True)
    uri, exp_id = store.setup(RETEST_EXPERIMENT, cfg.tracking.uri, cfg.tracking.root)
    where = store.StoreRef(uri, cfg.tracking.root)
    client = where.client()
    source = _source(client, str(cfg.run_id))
    per_vector, recorded = source.per_vector, OmegaConf.create(source.config)
    cases = _cases(source, cfg)
    index = {int(c): i for i, c in enumerate(per_vector["case"])}
    z = source.latents[[index[c] for c in cases]]
    base = _base_config(source, cfg)
    noisy_generator = has_noise(base)
    _check_randomness(base, noisy_generator and bool(cfg.noise_seeds))
    tags = {
        "ohlora.kind": "retest",
        "retest.source_run_id": source.run_id,
        "git_commit": store.git_commit(),
    }
    source_name = source.name or source.run_id
    name = f"retest {len(cases)} vectors x{k} | {source_name}"
    with side_run(client, exp_id, {**tags, "mlflow.runName": name}) as parent:
        passed, corrs = [], []
        # One bar over the repetitions on a terminal, else a line every few seconds; each
        # repetition's own screening bar and steps are not shown (one summary, below).
        tty = _progress(cfg)
        lines = (
            phase(f"re-testing {len(cases)} vectors", total=k, unit="repetitions")
            if not tty and bool(cfg.tracking.get("progress", True))
            else nullcontext(None)
        )
        bar = Bar(total=k, desc="re-testing", unit="repetition", disable=not tty)
        with bar, lines as step:
            for i in range(k):
                rep = base.copy()
                rep.measure.dropout_seed = int(cfg.seed) + i
                rep.tracking.progress = False
                if noisy_generator and cfg.noise_seeds:
                    rep.noise_seed = i
                with quiet():
                    res = evaluate(
                        rep,
                        latents=z,
                        cases=np.asarray(cases),
                        tags={**tags, "mlflow.parentRunId": parent, "retest.repetition": str(i)},
                        report=False,  # one summary for all repetitions, below
                    )
                table = res.per_vector.set_index("case").loc[cases]
                passed.append((table["passed"] == "O").to_numpy())
                corrs.append(table[CORR_COLUMNS].to_numpy(dtype=np.float64))
                bar.update(1)
                if step is not None:
                    step.advance()
        result = _summary(cases, np.array(passed), np.array(corrs), float(cfg.ci_level))
        _log(client, parent, source.run_id, per_vector, result, cfg, recorded)
    store.retry(client.set_tag, source.run_id, "ohlora.retest", parent)
    note_run(parent)  # the re-test's run, not its last repetition's
    log.info(_report(result, source.run_id, base, parent, client), extra=STDOUT)
    return Retest(parent, source.run_id, result, k)


def _progress(cfg: DictConfig) -> bool:
    import sys

    return bool(cfg.tracking.get("progress", True)) and sys.stderr.isatty()


def _report(result: pd.DataFrame, source_id: str, base: DictConfig, parent: str, client) -> str:
    """The one summary of a re-test: its numbers, the re-pass table of the top vectors (in
    the source run's review order) and where the page with all of them is."""
    from ohlora_eval.tracking.ui_links import ui_url

    k = int(result["k"].iloc[0]) if len(result) else 0
    below = float((result["re_pass_prob"] < 0.5).mean()) if len(result) else float("nan")
    top = result.head(TOP_SHOWN)
    rows = [
        f"  {int(r.case):>6}  {int(r.re_passes):>3}/{k:<3} {r.re_pass_prob:>6.2f}"
        f"  [{r.re_pass_lo:.2f}, {r.re_pass_hi:.2f}]"
        for r in top.itertuples()
    ]
    run = store.retry(client.get_run, parent)
    uri = client.tracking_uri
    more = f" (the first {TOP_SHOWN} of {len(result)})" if len(result) > TOP_SHOWN else ""
    return "\n".join(
        [
            f"\nohlora_eval.retest: {len(result)} vector(s) of run {source_id},"
            f" {k} repetitions under {_noise_text(base)}",
            f"  mean re-pass probability {result['re_pass_prob'].mean():.3f};"
            f" below 0.5: {below:.1%}",
            f"  re-pass table{more}, best review rank first:",
            "    case  passes    prob  interval",
            *rows,
            f"  retest run {parent} in experiment {RETEST_EXPERIMENT!r}",
            f"  the re-test page (every vector, with its contact sheet): artifact"
            f" review/index.html of that run, {ui_url(uri, run.info.experiment_id, parent)}",
        ]
    )


def _source(client, run_id: str) -> RunView:
    run = RunView.open(
        client, run_id, why="re-tests re-measure vectors, so they need a finished screening run"
    )
    if run.kind != "evaluation":
        raise UserError(
            f"run_id={run_id} is not a finished screening run (kind"
            f" {run.kind or '?'}, status {run.run.info.status});"
            " re-tests re-measure vectors, so they need the run that measured them"
        )
    return run


def _cases(source: RunView, cfg: DictConfig) -> list[int]:
    if cfg.cases is not None:  # given: checked against the run; unset: its passed ones
        return source.chosen(int_list("cases", cfg.cases), "re-test")
    passed = source.per_vector[source.per_vector["passed"] == "O"]
    if "review_rank" in passed.columns:
        passed = passed.sort_values("review_rank")
    if passed.empty:
        raise UserError(f"run {cfg.run_id} has no passed vector to re-test; give cases=[...]")
    limit = cfg.max_vectors
    return [int(c) for c in (passed if limit is None else passed.head(int(limit)))["case"]]


def _base_config(source: RunView, cfg: DictConfig) -> DictConfig:
    """The source run's config with the noise model's measuring switches, its directions
    pinned, no cache (each repetition measures), and nothing heavy logged per repetition."""
    rec = replay_config(source.config, cfg.tracking, RETEST_EXPERIMENT, source.directions_run_id)
    rec.tracking.grids.passed, rec.tracking.grids.best = 0, 0
    rec.tracking.per_image = False
    rec.review.page = False
    rec.measure = OmegaConf.merge(rec.get("measure", {}), cfg.noise)
    # A repetition re-measures r only: the noise model is the scorer's (and the generator's
    # noise, which no real-faces generator has); the identity distances of the source stand.
    if rec.get("identity") is not None:
        rec.identity = None
    if rec.get("cutoff") is not None and rec.cutoff.get("identity") is not None:
        rec.cutoff.identity = None
    return rec


def _check_randomness(base: DictConfig, generator_noise: bool) -> None:
    """Repetitions differ only through the scorer's dropout and the generator's noise. A
    scorer without dropout measures clean (its train mode is dropped from the noise model);
    when nothing random is left, every repetition would give the same r and each re-pass
    probability would be a fake 1.0 (or 0.0): say so instead of measuring."""
    if base.measure.scorer_mode == "train" and not has_dropout(base):
        base.measure.scorer_mode = "eval"
        log.warning(
            f"ohlora_eval.retest: {_class_name(base.scorer)} has no noise of its own (no"
            " dropout); repetitions differ only where the generator's noise does"
        )
    if base.measure.scorer_mode != "train" and not generator_noise:
        raise UserError(
            f"nothing in this measurement is random: {_class_name(base.scorer)} has no noise"
            f" of its own (no dropout) and {_class_name(base.generator)} has no per-layer"
            " noise, so every repetition would measure the same r and each re-pass"
            " probability would be a fake 1.0; the verdicts are exactly reproducible"
            " (python -m ohlora_eval.verify re-measures a recorded selection)"
        )


def _class_name(node: DictConfig) -> str:
    return str(node.get("_target_", "?")).rsplit(".", 1)[-1]


def _review_page(client, parent, source_id, joined, recorded, cfg, out: Path) -> None:
    """The source run's review page again, each re-tested card with its re-pass probability.
    Its contact sheets are linked where the source run's page finds them (never copied)."""
    node = OmegaConf.to_container(recorded.get("review") or {}, resolve=True)
    node["local_dir"] = str(Path(cfg.tracking.root) / "review")
    settings = review.ReviewSettings.from_cfg(node)
    if not settings.page:
        return
    where = linked_sheets(client, source_id)
    cutoffs = {p: float(recorded.cutoff[p]) for p in ("eyes", "mouth", "pose")}
    run_dir = local_dir(store.retry(client.get_run, parent).info.artifact_uri)
    linker = Linker(client, parent, run_dir)
    note = f"contact sheets of screening run {source_id}"
    command = select_command(OmegaConf.to_container(cfg.tracking, resolve=True))
    page = LinkedPage(parent, joined, cutoffs, settings, note=note, command=command)
    page.write(out, where, linker, run_dir)
    page.write_local(where, linker)


def _noise_text(cfg: DictConfig) -> str:
    m = cfg.measure
    return (
        f"scorer_mode={m.scorer_mode}, round_trip={m.round_trip}, edit_dtype={m.edit_dtype},"
        f" score_decimals={m.score_decimals}"
    )


def _summary(cases: list[int], passed: np.ndarray, corrs: np.ndarray, level: float) -> pd.DataFrame:
    """passed (k, n) bool, corrs (k, n, 3) -> one row per vector."""
    k = passed.shape[0]
    passes = passed.sum(axis=0)
    lo, hi = wilson(passes, k, level)
    out = pd.DataFrame({"case": cases, "re_passes": passes, "k": k})
    out["re_pass_prob"] = passes / k
    out["re_pass_lo"], out["re_pass_hi"] = lo, hi
    for j, col in enumerate(CORR_COLUMNS):
        out[f"{col}_mean"] = corrs[:, :, j].mean(axis=0)
        out[f"{col}_std"] = corrs[:, :, j].std(axis=0, ddof=1)
    return out


def _log(client, parent: str, source_id: str, per_vector, result, cfg, recorded) -> None:
    k = int(cfg.k)  # checked by retest
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    probs = result["re_pass_prob"]
    metrics = {
        "vectors": float(len(result)),
        "k": float(k),
        "re_pass_prob_mean": float(probs.mean()),
        "share_below_half": float((probs < 0.5).mean()),
        "always_passed": float((probs == 1).sum()),
    }
    store.retry(
        client.log_batch, parent, metrics=[Metric(m, v, now, 0) for m, v in metrics.items()]
    )
    joined = per_vector.merge(
        result[["case", "re_pass_prob", "re_pass_lo", "re_pass_hi"]], on="case", how="left"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        out.mkdir()
        result.to_csv(out / "retest.csv", index=False)
        joined.to_csv(out / "per_vector.csv", index=False)
        (out / "retest.yaml").write_text(OmegaConf.to_yaml(cfg))
        _review_page(client, parent, source_id, joined, recorded, cfg, out)
        store.retry(client.log_artifacts, parent, str(out))
    store.retry(client.set_tag, parent, "retest.k", str(k))
    store.retry(client.set_tag, parent, "retest.ci_level", str(cfg.ci_level))


if __name__ == "__main__":
    main()
