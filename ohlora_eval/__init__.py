"""ohlora_eval: screen a face generator's latent vectors for editable expressions."""

__version__ = "0.1.0"
