"""The commands: one thin module per command, each a ``@hydra.main`` over the stages below.

``screen`` (``python -m ohlora_eval``), ``find_directions``, ``select``, ``verify``,
``import_results``, ``rejudge``; ``build`` checks a config and builds its models,
``config`` registers the config schemas, ``cli`` turns bad input into one-line errors.
Apps may import every other package; nothing imports apps except the entry points
and the benchmark (docs/architecture.md).
"""

from ohlora_eval.apps import config as _config  # noqa: F401 - registers the config schemas
