"""``python -m ohlora_eval.find_directions``: fit edit directions as a tracked stage."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from . import tracking
from .build import build_models
from .cli import CONFIG_DIR, friendly_errors
from .directions.stage import FitSpec, run_stage


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="find_directions")
@friendly_errors
def main(cfg: DictConfig) -> None:
    find_directions(cfg)


def find_directions(cfg: DictConfig) -> str:
    """Fit and log one direction run; returns its run id."""
    uri = tracking.resolve_uri(cfg.tracking.uri, cfg.tracking.root)
    generator, scorer = build_models(cfg)
    spec = FitSpec(
        n=cfg.n,
        ratio=cfg.ratio,
        method=OmegaConf.to_container(cfg.method)
        if OmegaConf.is_config(cfg.method)
        else cfg.method,
        grouped=cfg.grouped,
        seed=cfg.seed,
        val_fraction=cfg.val_fraction,
        svm_c=cfg.svm_c,
        gradient=OmegaConf.to_container(cfg.gradient, resolve=True),
    )
    params = tracking.flatten(OmegaConf.to_container(cfg, resolve=True))
    dirs, run_id = run_stage(
        generator,
        scorer,
        cfg.layer,
        spec,
        uri,
        cfg.tracking.root,
        progress=sys.stderr.isatty(),
        params=params,
    )
    print(
        f"\nohlora_eval.find_directions: {dirs.source}\n"
        f"  use it: python -m ohlora_eval directions.run_id={run_id} layer={cfg.layer}\n"
        f"  look at it: {tracking.ui_hint(uri)}"
    )
    return run_id


if __name__ == "__main__":
    main()
