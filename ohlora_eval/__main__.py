"""``python -m ohlora_eval``: one screening run (``-m`` for a sweep)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .cli import CONFIG_DIR, friendly_errors
from .evaluate import evaluate
from .rejudge import rejudge


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
@friendly_errors
def main(cfg: DictConfig) -> None:
    if cfg.source.kind == "imported":
        rejudge(cfg)
    else:
        evaluate(cfg)


if __name__ == "__main__":
    main()
