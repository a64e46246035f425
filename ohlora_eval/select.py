"""``python -m ohlora_eval.select``: see ``ohlora_eval/apps/select.py``."""

from ohlora_eval.apps.commands import select as main

if __name__ == "__main__":
    main()
