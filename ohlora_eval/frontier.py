"""``python -m ohlora_eval.frontier``: see ``ohlora_eval/apps/frontier.py``."""

from ohlora_eval.apps.commands import frontier as main

if __name__ == "__main__":
    main()
