"""``python -m ohlora_eval.import_results``: see ``ohlora_eval/apps/import_results.py``."""

from ohlora_eval.apps.commands import import_results as main

if __name__ == "__main__":
    main()
