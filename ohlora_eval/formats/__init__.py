"""File formats at the edges: Oh-LoRA's result tables (``ohlora_results``), z-vector
files and selection manifests (``z_vectors``), and pictures (``pictures``: contact
sheets and summary plots). May import ``pipeline`` only (docs/architecture.md).
"""
