"""``python -m ohlora_eval.find_directions``: see ``ohlora_eval/apps/find_directions.py``."""

from ohlora_eval.apps.commands import find_directions as main

if __name__ == "__main__":
    main()
