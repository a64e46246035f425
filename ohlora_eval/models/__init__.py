"""The models behind the two plug points (``pipeline/protocols.py``).

``generators`` (latent -> mid -> image: the embedded synthetic face generator and
Oh-LoRA's StyleGAN-FineTune-v9), ``scorers`` (image -> property scores: the
synthetic pixel scorer and Oh-LoRA's merged property CNN) and ``networks`` (the
PyTorch networks and checkpoint loading). Pure PyTorch: no MLflow, Hydra or
OmegaConf, and nothing from the other packages but ``pipeline`` (docs/architecture.md).
"""
