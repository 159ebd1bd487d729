"""Sub-clusters: the units of one cluster within one analysed layer, and random same-size baselines.

Clusters span layers, and layers at different depths represent different things, so importance and
coherence are tested per *sub-cluster* (paper section 3; docs/methods.md §4): the units of analysed layer
``l`` (MLP hidden layers, CNN conv layers; ``LayerSpec.analysed``) whose label is ``c``. Units labelled
-1 (isolated, removed before clustering) never belong to a sub-cluster.

Each sub-cluster is compared with random unit sets of the same size from the same layer
(:func:`random_sets`). Whether isolated (-1) units may be drawn is a parameter, because the reference
differs by experiment: its lesion draws exclude them, its feature-visualisation (Lucid) draws include
them (docs/methods.md §4, 9.26).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import validate
from .errors import ModularityError
from .partition import Partition
from .utils import rng_for


@dataclass(frozen=True, eq=False)
class SubCluster:
    """The units of cluster ``cluster`` in layer ``layer``.

    Attributes:
        layer: layer name (unit address, as in :mod:`modularity.layers`).
        cluster: spectral cluster label.
        units: sorted indices within the layer (read-only int64 array).
        layer_width: number of units in the layer.
        isolated: sorted indices of the layer's isolated units (label -1); used by
            ``random_sets(..., exclude_isolated=True)``.
    """

    layer: str
    cluster: int
    units: np.ndarray
    layer_width: int
    isolated: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        for name in ("units", "isolated"):
            arr = np.array(np.sort(validate.unit_indices(getattr(self, name), f"{self.layer}/{self.cluster} {name}")))
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "cluster", int(self.cluster))
        object.__setattr__(self, "layer_width", int(self.layer_width))

    @property
    def size(self) -> int:
        return int(self.units.size)

    @property
    def proportion(self) -> float:
        """Size as a fraction of the layer's width."""
        return self.size / self.layer_width

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SubCluster):
            return NotImplemented
        return (self.layer, self.cluster, self.layer_width) == (other.layer, other.cluster, other.layer_width) \
            and np.array_equal(self.units, other.units) and np.array_equal(self.isolated, other.isolated)

    def __hash__(self) -> int:
        return hash((self.layer, self.cluster, self.layer_width, self.units.tobytes()))

    def __repr__(self) -> str:
        return f"SubCluster(layer={self.layer!r}, cluster={self.cluster}, size={self.size}/{self.layer_width})"


def subclusters(partition: Partition, min_size: int = 1, max_prop: float = 1.0,
                layers: list[str] | None = None) -> list[SubCluster]:
    """Every non-empty (layer, cluster) unit set of the analysed layers, ordered by layer then cluster.

    Kept: ``min_size <= size <= max_prop * layer_width``. The reference's lesion tests used no filter
    (``min_size=1, max_prop=1``); its ImageNet lesions ``min_size=5, max_prop=0.8``; its Lucid runs
    ``4 <= size < 0.8 n`` (``min_size=4, max_prop=0.8``: ``0.8 n`` is not an integer for any of the
    paper's layer widths, so ``<`` and ``<=`` agree).

    Args:
        partition: a :class:`Partition`.
        layers: analysed layer names to restrict to (default: all analysed layers of the graph).
    """
    if not isinstance(min_size, int | np.integer) or min_size < 1:
        raise ModularityError(f"min_size must be an integer >= 1, got {min_size!r}")
    if not 0 < max_prop <= 1:
        raise ModularityError(f"max_prop must be in (0, 1], got {max_prop!r}")
    analysed = [s for s in partition.graph.layers if s.analysed]
    if layers is not None:
        known = {s.name for s in analysed}
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise ModularityError(f"not analysed layers: {', '.join(map(str, unknown))}; analysed: {', '.join(known)}")
        analysed = [s for s in analysed if s.name in set(layers)]
    out = []
    for spec in analysed:
        labels = partition.labels_of(spec.name)
        isolated = np.flatnonzero(labels < 0)
        for c in np.unique(labels[labels >= 0]):
            units = np.flatnonzero(labels == c)
            if min_size <= units.size <= max_prop * spec.width:
                out.append(SubCluster(spec.name, int(c), units, spec.width, isolated))
    return out


def subcluster_table(subs: list[SubCluster]) -> pd.DataFrame:
    """One row per sub-cluster: ``layer``, ``cluster``, ``size``, ``layer_width``, ``proportion``."""
    return pd.DataFrame({"layer": [s.layer for s in subs], "cluster": [s.cluster for s in subs],
                         "size": [s.size for s in subs], "layer_width": [s.layer_width for s in subs],
                         "proportion": [s.proportion for s in subs]})


def eligible_units(subcluster: SubCluster, exclude_isolated: Any = None) -> np.ndarray:
    """The units of the sub-cluster's layer that a random set may contain.

    ``exclude_isolated``: ``None``/``False`` = every unit (the reference's Lucid draws); ``True`` = all
    but the layer's isolated units recorded in ``subcluster.isolated`` (the reference's lesion draws);
    a :class:`Partition` = all but the units it labels -1 in this layer; an array of the layer's labels
    (length ``layer_width``) = all but those labelled -1.
    """
    all_units = np.arange(subcluster.layer_width)
    if exclude_isolated is None or exclude_isolated is False:
        return all_units
    if exclude_isolated is True:
        return np.setdiff1d(all_units, subcluster.isolated)
    if isinstance(exclude_isolated, Partition):
        labels = exclude_isolated.labels_of(subcluster.layer)
    else:
        labels = np.asarray(exclude_isolated)
    if labels.shape != (subcluster.layer_width,):
        raise ModularityError(f"exclude_isolated labels must have one entry per unit of layer {subcluster.layer!r} "
                              f"({subcluster.layer_width}), got shape {labels.shape}")
    return np.flatnonzero(labels >= 0)


def random_sets(subcluster: SubCluster, n: int, seed: int, exclude_isolated: Any = None) -> np.ndarray:
    """``n`` random unit sets of the sub-cluster's size from its layer, shape ``(n, size)``, rows sorted.

    Each row is drawn uniformly without replacement from :func:`eligible_units` (see there for
    ``exclude_isolated``), independently of the other rows, from the stream
    ``rng_for(seed, "random_sets", layer, cluster)``: the draws of one sub-cluster do not depend on
    which other sub-clusters exist.
    """
    if not isinstance(n, int | np.integer) or n < 0:
        raise ModularityError(f"n must be a non-negative integer, got {n!r}")
    pool = eligible_units(subcluster, exclude_isolated)
    if pool.size < subcluster.size:
        raise ModularityError(f"layer {subcluster.layer!r} has {pool.size} eligible units, fewer than the "
                              f"sub-cluster's {subcluster.size}")
    rng = rng_for(seed, "random_sets", subcluster.layer, int(subcluster.cluster))
    # The first `size` positions of a uniformly random permutation, one permutation per row.
    picks = np.argsort(rng.random((int(n), pool.size)), axis=1)[:, :subcluster.size]
    return np.sort(pool[picks], axis=1)


def lesion_draws(subclusters: Sequence[SubCluster], n_random: int, seed: int, exclude_isolated: Any = None,
                 complete: str = "skip") -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """Which sub-clusters a lesion test compares with random sets, and their draws.

    A sub-cluster that is a whole layer (no eligible unit outside it) has no random same-size set that
    differs from it: ``complete`` says whether such a sub-cluster is skipped (``"skip"``), refused
    (``"error"``) or kept (``"include"``, the reference). Returns ``whole`` and ``tested`` (bool, one per
    sub-cluster) and the draws, ``(n_random, size)`` per tested sub-cluster (:func:`random_sets`), None for
    the others.
    """
    whole = np.array([eligible_units(sc, exclude_isolated).size <= sc.size for sc in subclusters])
    if whole.any() and complete == "error":
        sc = subclusters[int(np.flatnonzero(whole)[0])]
        raise ModularityError(f"sub-cluster (layer {sc.layer!r}, cluster {sc.cluster}) is the whole layer "
                              f"({sc.size} units): no random same-size set differs from it")
    tested = ~whole if complete == "skip" else np.ones(len(subclusters), dtype=bool)
    if not tested.any():
        raise ModularityError("every sub-cluster is a whole layer: nothing to compare with random sets")
    draws = [random_sets(sc, int(n_random), seed, exclude_isolated=exclude_isolated) if t else None
             for sc, t in zip(subclusters, tested, strict=True)]
    return whole, tested, draws

