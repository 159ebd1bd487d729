"""Feature visualisation, split as Lucid's ``optvis``: :mod:`.param` (image parameterisation),
:mod:`.transform`, :mod:`.objectives` (what is maximised, read at the registry's post-activation
values) and :mod:`.render` (batched optimisation). The paper's measure built on it, input coherence,
is :mod:`modularity.visualize`."""

from __future__ import annotations

from .objectives import RedirectedReLU, UnitSetObjective
from .param import ImageBatch, inverse_rfft2_matrices, rfft2d_freqs
from .render import FeatureVisualisation, VisConfig, entropy_of_logits, image_shape_of, visualize_sets
from .transform import Transforms

__all__ = ["FeatureVisualisation", "ImageBatch", "RedirectedReLU", "Transforms", "UnitSetObjective", "VisConfig",
           "entropy_of_logits", "image_shape_of", "inverse_rfft2_matrices", "rfft2d_freqs", "visualize_sets"]
