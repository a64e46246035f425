"""``python -m ohlora_eval.alias``: see ``ohlora_eval/apps/alias.py``."""

from ohlora_eval.apps.alias import main

if __name__ == "__main__":
    main()
