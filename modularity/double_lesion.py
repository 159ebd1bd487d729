"""Double lesions (docs/methods.md §5.6, joint mode): every unordered pair of sub-clusters lesioned together,
against random same-size sets for both, through the lesion definition (:mod:`modularity.lesion.multi`).

Pairs are ``combinations_with_replacement`` of the sub-clusters, as the reference's (so (X, X), a single
lesion, and same-layer pairs are included). Random lesion r of pair (A, B) lesions draw r of A's random
sets together with draw r of B's (:func:`modularity.subclusters.random_sets`, the same streams as
:func:`modularity.importance`). Statistics: :func:`modularity.stats.lesion_summary` with pairs in place
of sub-clusters (left-sided rank p-value of the balanced accuracy, corrected across pairs).
"""

from __future__ import annotations

from itertools import combinations_with_replacement
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from .errors import ModularityError


def double_lesion(model: nn.Module, subclusters: list[Any], data: Any, n_random: int = 50, seed: int = 0,
                  correction: str = "holm", exclude_isolated: Any = True) -> pd.DataFrame:
    """One row per pair: ``layer_a, cluster_a, layer_b, cluster_b, lesioned_acc, lesioned_balanced_acc,
    random_balanced_acc_mean, p_mean, p_mean_corrected``."""
    from . import stats
    from .inputs import as_xy
    from .lesion import check_data, class_sizes, unlesioned_counts
    from .lesion.multi import multi_lesion_counts
    from .subclusters import random_sets

    subs = list(subclusters)
    if len(subs) < 1:
        raise ModularityError("no sub-clusters to pair")
    if correction not in stats.CORRECTION_METHODS:
        raise ModularityError(f"unknown correction {correction!r}; choose from {', '.join(stats.CORRECTION_METHODS)}")
    x, y = as_xy(data)
    x, y, n_classes = check_data(model, x, y)
    draws = [random_sets(sc, n_random, seed, exclude_isolated=exclude_isolated) for sc in subs]
    pairs = list(combinations_with_replacement(range(len(subs)), 2))

    def union(a: tuple[str, np.ndarray], b: tuple[str, np.ndarray]) -> dict[str, np.ndarray]:
        if a[0] == b[0]:
            return {a[0]: np.union1d(a[1], b[1])}
        return {a[0]: a[1], b[0]: b[1]}

    lesions = [union((subs[i].layer, subs[i].units), (subs[j].layer, subs[j].units)) for i, j in pairs]
    for r in range(n_random):
        lesions += [union((subs[i].layer, draws[i][r]), (subs[j].layer, draws[j][r])) for i, j in pairs]
    counts = multi_lesion_counts(model, lesions, x, y)
    true, rand = counts[:len(pairs)], counts[len(pairs):].reshape(n_random, len(pairs), n_classes)
    unl = unlesioned_counts(model, x, y)
    sizes = class_sizes(y.numpy(), n_classes)
    present = np.flatnonzero(sizes > 0)
    unl, true, rand, sizes = unl[present], true[:, present], rand[:, :, present], sizes[present]
    summ = stats.lesion_summary(unl, true, rand, sizes, correction=correction, seed=seed)
    return pd.DataFrame({
        "layer_a": [subs[i].layer for i, _ in pairs], "cluster_a": [subs[i].cluster for i, _ in pairs],
        "layer_b": [subs[j].layer for _, j in pairs], "cluster_b": [subs[j].cluster for _, j in pairs],
        "lesioned_acc": true.sum(1) / sizes.sum(), "lesioned_balanced_acc": (true / sizes).mean(1),
        "random_balanced_acc_mean": np.asarray(summ["random_mean_acc"], dtype=float),
        "p_mean": np.asarray(summ["p_means"], dtype=float),
        "p_mean_corrected": np.asarray(summ["p_means_corrected"], dtype=float),
    })
