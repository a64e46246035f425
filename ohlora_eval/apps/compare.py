"""``python -m ohlora_eval.compare a=<run> b=<run>``: two finished runs side by side.

Reads both runs (``tracking/compare_runs.py``), compares their verdicts
(``review/compare.py``), prints the markdown report and logs it into run b as
``compare/<run a>.md`` (with ``compare/<run a>_changes.csv`` when more than ``list_max``
vectors entered or left the passed set). Nothing is measured. Runs whose candidate vectors
differ are refused with the reason; ``force=true`` compares the case numbers both have.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from ohlora_eval.apps.cli import hydra_app
from ohlora_eval.errors import ConfigError, int_in
from ohlora_eval.progress import STDOUT
from ohlora_eval.review.compare import Comparison
from ohlora_eval.tracking import store
from ohlora_eval.tracking.compare_runs import compare_runs, log_report
from ohlora_eval.tracking.runs import note_run

log = logging.getLogger(__name__)


def _run_id(cfg: DictConfig, key: str) -> str:
    if OmegaConf.is_missing(cfg, key) or cfg[key] in (None, ""):
        raise ConfigError(
            f"{key}=<run id> is required: python -m ohlora_eval.compare a=<run> b=<run>"
        )
    return str(cfg[key])


def compare(cfg: DictConfig) -> tuple[Comparison, str]:
    """Compare runs ``cfg.a`` and ``cfg.b``, log the report into run b; (it, its text)."""
    a, b = _run_id(cfg, "a"), _run_id(cfg, "b")
    if not isinstance(cfg.force, bool):
        raise ConfigError(f"force={cfg.force!r} must be true or false")
    list_max = int_in("list_max", cfg.list_max, 0)
    uri = store.resolve_uri(cfg.tracking.uri, cfg.tracking.root)
    with store.usable(uri):
        client = store.StoreRef(uri, cfg.tracking.root).client()
        result = compare_runs(client, a, b, force=cfg.force, list_max=list_max)
        md_path, csv_path = log_report(client, result)
    note_run(b, uri)
    text = result.markdown(csv_path)
    log.info(text, extra=STDOUT)
    also = f" and {csv_path}" if csv_path else ""
    log.info(f"ohlora_eval.compare: logged to run {b} as {md_path}{also}")
    return result, text


@hydra_app("compare")
def main(cfg: DictConfig) -> None:
    compare(cfg)


if __name__ == "__main__":
    main()
