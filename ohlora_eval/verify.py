"""``python -m ohlora_eval.verify``: see ``ohlora_eval/apps/verify.py``."""

from ohlora_eval.apps.verify import main

if __name__ == "__main__":
    main()
