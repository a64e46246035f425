"""``python -m ohlora_eval.find_directions``: see ``ohlora_eval/apps/find_directions.py``."""

from ohlora_eval.apps.find_directions import main

if __name__ == "__main__":
    main()
