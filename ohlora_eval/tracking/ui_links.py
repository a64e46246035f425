"""Links to MLflow's UI: where ``make ui`` shows an experiment's runs, or one run.

``ui_url`` is the one place that builds a link (the Model-training runs view, with the
columns chosen); ``ui_links`` lists every experiment of a store, ``experiments_url`` is
MLflow's list of them (ones made later too), and ``python -m
ohlora_eval.tracking.ui_links <tracking uri> [port]`` prints them (``make ui``). Used by
the closing summary of a run (``runs.py``) and of a sweep (``sweep.py``).
"""

from __future__ import annotations

import sys

from mlflow.tracking import MlflowClient

from ohlora_eval.tracking import store


def ui_url(uri: str, experiment_id: str, run_id: str | None = None, port: int = 5000) -> str:
    """Where ``make ui`` shows an experiment's runs (or one run), in the Model-training view
    (MLflow 3.17's UI otherwise opens every experiment on its GenAI overview)."""
    base = uri.rstrip("/") if uri.startswith("http") else f"http://127.0.0.1:{port}"
    where = f"/#/experiments/{experiment_id}/runs"
    if run_id:
        return f"{base}{where}/{run_id}?workflowType=machine_learning"
    return f"{base}{where}?workflowType=machine_learning&viewStateShareKey={store.UI_VIEW_KEY}"


def experiments_url(uri: str, port: int = 5000) -> str:
    """MLflow's list of every experiment of the store, ones made later included."""
    base = uri.rstrip("/") if uri.startswith("http") else f"http://127.0.0.1:{port}"
    return f"{base}/#/experiments"


def ui_links(uri: str, port: int = 5000) -> list[str]:
    """One line per experiment of the store: its name and the link to its runs view."""
    client = MlflowClient(uri)
    lines = []
    for exp in store.retry(client.search_experiments):
        if exp.name == "Default" and not store.retry(
            client.search_runs, [exp.experiment_id], max_results=1
        ):
            continue
        lines.append(f"  {exp.name:<22} {ui_url(uri, exp.experiment_id, port=port)}")
    return lines


def main(argv: list[str] | None = None) -> None:
    """``python -m ohlora_eval.tracking.ui_links <tracking uri> [port]``: the UI links (make ui)."""
    args = sys.argv[1:] if argv is None else argv
    uri, port = args[0], int(args[1]) if len(args) > 1 else 5000
    try:
        lines = ui_links(uri, port)
    except Exception as exc:  # noqa: BLE001 - a store that cannot be read yet: no links
        print(f"ohlora_eval: no experiments to link yet ({type(exc).__name__})")
        return
    print("ohlora_eval: open an experiment's runs (Model training view, columns chosen):")
    print("\n".join(lines) if lines else "  (no experiments yet: run python -m ohlora_eval)")
    print(f"  every experiment, also those made after this: {experiments_url(uri, port)}")


if __name__ == "__main__":
    main()
