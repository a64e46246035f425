"""``python -m ohlora_eval.bench [ARGS]``: run the benchmark (flags: ``--help``)."""

import sys

from ohlora_eval.bench.cli import main

sys.exit(main())
