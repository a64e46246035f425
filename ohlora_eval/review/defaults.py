"""The review settings' default values that the computing modules share with the schema
(``settings.ReviewSettings``). Imports nothing, so composing a command's config (``--help``
too) loads neither pandas nor torch.
"""

from __future__ import annotations

# Sum of |r| minus penalties: a leak of 0.3 costs as much as losing 0.3 of summed
# |r|; background drift costs 0.1 per multiple of the run's median drift.
DEFAULT_RANK_BY = "sum_abs_corr - 1.0*max_leak - 0.1*bg_drift_rel"

# The face region used by ``locality.locality_stats``: the ellipse inscribed in this box,
# (x0, y0, x1, y1) in normalised image coordinates (x, y in [-1, 1], y down).
# Suits centred portrait faces: the embedded synthetic faces (face within
# y -0.55..0.55, shifting sideways by up to 0.1 when the head turns) and the
# Oh-LoRA StyleGAN faces (the property CNN's eyes..mouth crops sit in y -0.25..0.63).
DEFAULT_FACE_BOX: tuple[float, float, float, float] = (-0.55, -0.65, 0.55, 0.85)
