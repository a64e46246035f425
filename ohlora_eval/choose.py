"""``python -m ohlora_eval.choose``: see ``ohlora_eval/apps/choose.py``."""

from ohlora_eval.apps.commands import choose as main

if __name__ == "__main__":
    main()
