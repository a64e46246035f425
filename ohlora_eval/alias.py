"""``python -m ohlora_eval.alias``: see ``ohlora_eval/apps/alias.py``."""

from ohlora_eval.apps.commands import alias as main

if __name__ == "__main__":
    main()
