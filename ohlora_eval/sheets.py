"""``python -m ohlora_eval.sheets``: see ``ohlora_eval/apps/sheets.py``."""

from ohlora_eval.apps.sheets import main

if __name__ == "__main__":
    main()
