"""``python -m ohlora_eval.verify``: see ``ohlora_eval/apps/verify.py``."""

from ohlora_eval.apps.commands import verify as main

if __name__ == "__main__":
    main()
