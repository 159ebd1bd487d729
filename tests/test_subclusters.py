"""Sub-clusters of analysed layers and the seeded random same-size unit sets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from modularity.errors import ModularityError
from modularity.graph import Block, WeightGraph
from modularity.layers import LayerSpec
from modularity.partition import Partition
from modularity.subclusters import SubCluster, eligible_units, random_sets, subcluster_table, subclusters


def _partition(labels_by_layer: dict[str, list[int]], analysed: tuple[str, ...] = ("h1", "h2")) -> Partition:
    """A partition with the given labels on layers in, h1, h2, out (only the labels matter here)."""
    layers = [LayerSpec(name, "dense", len(labels), None, None, analysed=name in analysed)
              for name, labels in labels_by_layer.items()]
    graph = WeightGraph.from_blocks(layers, [Block(layers[0].name, layers[1].name,
                                                   np.ones((layers[0].width, layers[1].width)))])
    labels = np.concatenate([np.asarray(v) for v in labels_by_layer.values()])
    return Partition(labels, 3, 0.0, graph, 0, 25, "arpack")


LABELS = {"in": [0, 1, 2], "h1": [2, 0, 2, -1, 0, 2], "h2": [1, 1, 1, 1], "out": [0, 2]}


def test_subclusters_by_layer_then_cluster_analysed_layers_only() -> None:
    subs = subclusters(_partition(LABELS))
    assert [(s.layer, s.cluster, s.units.tolist()) for s in subs] == [
        ("h1", 0, [1, 4]), ("h1", 2, [0, 2, 5]), ("h2", 1, [0, 1, 2, 3])]
    assert [s.size for s in subs] == [2, 3, 4]
    assert subs[0].layer_width == 6 and subs[0].isolated.tolist() == [3]
    assert subs[1].proportion == 0.5
    table = subcluster_table(subs)
    assert list(table.columns) == ["layer", "cluster", "size", "layer_width", "proportion"]
    assert table["size"].tolist() == [2, 3, 4]


def test_size_filters_are_inclusive() -> None:
    p = _partition(LABELS)
    assert [(s.layer, s.cluster) for s in subclusters(p, min_size=3)] == [("h1", 2), ("h2", 1)]
    # max_prop 0.5 keeps sizes <= 3 of 6 and <= 2 of 4: the whole-layer h2 cluster goes
    assert [(s.layer, s.cluster) for s in subclusters(p, max_prop=0.5)] == [("h1", 0), ("h1", 2)]
    assert subclusters(p, min_size=3, max_prop=0.5)[0].units.tolist() == [0, 2, 5]
    assert [s.layer for s in subclusters(p, layers=["h2"])] == ["h2"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_size": 0}, "min_size"), ({"max_prop": 0.0}, "max_prop"), ({"max_prop": 1.5}, "max_prop"),
    ({"layers": ["out"]}, "not analysed layers: out"),
])
def test_subcluster_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ModularityError, match=message):
        subclusters(_partition(LABELS), **kwargs)


def test_subcluster_is_frozen_with_read_only_sorted_units() -> None:
    s = SubCluster("h1", np.int64(2), np.array([5, 0, 2]), 6)
    assert s.units.tolist() == [0, 2, 5] and isinstance(s.cluster, int)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.layer = "h2"  # type: ignore[misc]
    with pytest.raises(ValueError):
        s.units[0] = 1
    assert s == SubCluster("h1", 2, [0, 2, 5], 6) and hash(s) == hash(SubCluster("h1", 2, [0, 2, 5], 6))
    assert s != SubCluster("h1", 2, [0, 2], 6)
    assert {s, SubCluster("h1", 2, [0, 2, 5], 6)} == {s}


# ------------------------------------------------------------------------------------------------ random sets


def test_random_sets_shape_rows_sorted_distinct_and_seeded() -> None:
    s = SubCluster("h1", 2, [0, 2, 5], 6, isolated=[3])
    draws = random_sets(s, 50, seed=4)
    assert draws.shape == (50, 3)
    assert (np.diff(draws, axis=1) > 0).all()  # sorted, no repeats
    assert draws.min() >= 0 and draws.max() < 6
    np.testing.assert_array_equal(draws, random_sets(s, 50, seed=4))
    assert not np.array_equal(draws, random_sets(s, 50, seed=5))
    assert 3 in draws  # isolated units are eligible by default (the reference's Lucid draws)
    # the first rows do not depend on how many rows are asked for, nor on other sub-clusters
    np.testing.assert_array_equal(random_sets(s, 10, seed=4), draws[:10])


def test_random_sets_excluding_isolated_units() -> None:
    p = _partition(LABELS)
    s = subclusters(p)[1]  # h1 cluster 2; unit 3 is isolated
    for exclude in (True, p, p.labels_of("h1")):
        draws = random_sets(s, 200, seed=0, exclude_isolated=exclude)
        assert 3 not in draws
        assert set(np.unique(draws)) == {0, 1, 2, 4, 5}
    np.testing.assert_array_equal(eligible_units(s, None), np.arange(6))
    np.testing.assert_array_equal(eligible_units(s, False), np.arange(6))
    with pytest.raises(ModularityError, match="one entry per unit"):
        eligible_units(s, np.zeros(4))


def test_random_sets_errors() -> None:
    s = SubCluster("h", 0, [0, 1, 2], 4, isolated=[3, 2])
    with pytest.raises(ModularityError, match="fewer than"):
        random_sets(s, 3, seed=0, exclude_isolated=True)
    with pytest.raises(ModularityError, match="non-negative"):
        random_sets(s, -1, seed=0)
    assert random_sets(s, 0, seed=0).shape == (0, 3)


def test_random_sets_are_uniform_over_units() -> None:
    s = SubCluster("h", 0, [0, 1, 2], 10)
    counts = np.bincount(random_sets(s, 4000, seed=1).ravel(), minlength=10)
    assert stats.chisquare(counts).pvalue > 1e-3
    pairs = random_sets(SubCluster("h", 0, [0, 1], 4), 6000, seed=2)
    _, pair_counts = np.unique(pairs, axis=0, return_counts=True)
    assert len(pair_counts) == 6 and stats.chisquare(pair_counts).pvalue > 1e-3  # all C(4,2) pairs equally likely


@settings(max_examples=50, deadline=None)
@given(width=st.integers(1, 40), data=st.data())
def test_random_sets_property(width: int, data: st.DataObject) -> None:
    size = data.draw(st.integers(1, width))
    isolated = data.draw(st.lists(st.integers(0, width - 1), unique=True, max_size=width - size))
    n = data.draw(st.integers(0, 20))
    s = SubCluster("layer", data.draw(st.integers(0, 20)), np.arange(size), width, isolated=isolated)
    draws = random_sets(s, n, seed=data.draw(st.integers(0, 2**32 - 1)), exclude_isolated=True)
    assert draws.shape == (n, size)
    assert not np.isin(draws, isolated).any()
    assert all(len(set(row)) == size for row in draws.tolist())
