"""``python -m ohlora_eval.rejudge``: see ``ohlora_eval/apps/rejudge.py``."""

from ohlora_eval.apps.commands import rejudge as main

if __name__ == "__main__":
    main()
