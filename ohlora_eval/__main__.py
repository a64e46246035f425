"""``python -m ohlora_eval``: one screening run (``-m`` for a sweep); see ``apps/screen.py``."""

from ohlora_eval.apps.commands import screen as main

if __name__ == "__main__":
    main()
