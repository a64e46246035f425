"""``python -m ohlora_eval.retest``: see ``ohlora_eval/apps/retest.py``."""

from ohlora_eval.apps.commands import retest as main

if __name__ == "__main__":
    main()
