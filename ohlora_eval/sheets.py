"""``python -m ohlora_eval.sheets``: see ``ohlora_eval/apps/sheets.py``."""

from ohlora_eval.apps.commands import sheets as main

if __name__ == "__main__":
    main()
