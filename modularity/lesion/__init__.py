"""Lesions: per-class correct-prediction counts with sets of units silenced.

:mod:`.definition` says what a lesion is (a forward hook zeroing post-activation values);
:mod:`.engine` computes the same counts fast (prefix reuse, low-rank updates, sparse tails) where a
model is a flat ``nn.Sequential``, and through the definition's hooks (many lesions per batch) for every
other model the registry supports.
"""

from __future__ import annotations

from .definition import check_lesionable, lesion_point, lesioned_logits, zeroing_hook
from .engine import (
    DEFAULT_MAX_MEMORY,
    TIE_RTOL,
    _near_tie,
    as_unit_sets,
    check_data,
    class_sizes,
    lesion_counts,
    n_outputs,
    unlesioned_counts,
)

__all__ = [
    "DEFAULT_MAX_MEMORY", "TIE_RTOL", "as_unit_sets", "check_data", "check_lesionable", "class_sizes",
    "lesion_counts", "lesion_point", "lesioned_logits", "n_outputs", "unlesioned_counts", "zeroing_hook",
    "_near_tie",
]
