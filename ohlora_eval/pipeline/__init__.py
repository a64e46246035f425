"""The measuring pipeline: sample -> mid -> edit -> synthesize -> score -> judge.

Pure computation on tensors and arrays (torch, numpy, pandas). Nothing here knows
about MLflow, Hydra or the command line; an import-linter contract in
pyproject.toml keeps it that way. The map of the whole flow: docs/architecture.md.
"""
