"""The public API of README.md, end to end on a quickly trained DIGITS network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modularity as m


def test_every_public_name_resolves() -> None:
    for name in m.__all__:
        assert getattr(m, name) is not None, name
    assert m.stats.rank_pvalue(0, np.arange(100), side="left") == 1 / 101


@pytest.mark.slow  # trains a network
def test_readme_flow_on_digits(tmp_path: Path) -> None:
    paths = m.train("DIGITS", 0, out=tmp_path, epochs=3, pruning_epochs=3, progress=False)
    model, meta = m.load_checkpoint(paths["pruned"])
    graph = m.graph_of(model)
    assert graph.adjacency.shape == (64 + 4 * 256 + 10,) * 2
    part = m.partition(graph, k=6, seed=0)
    assert part.labels.shape == (graph.adjacency.shape[0],) and 0 < part.ncut < 6
    null = m.clusterability(model, k=6, n_shuffles=3, seed=0, n_jobs=1)
    assert null.percentile in (0.25, 0.5, 0.75, 1.0)
    subs = m.subclusters(part)
    assert {s.layer for s in subs} <= {"hidden1", "hidden2", "hidden3", "hidden4"}
    table, summary = m.importance(model, subs, m.load_dataset("digits"), n_random=20, seed=0)
    assert len(table) == len(subs) and 0 < summary["combined_p_means"] <= 1
    coherence, csummary = m.input_coherence(model, subs, n_random=3, steps=4, seed=0)
    assert 0 < csummary["combined_p_loss"] <= 1 and {"layer", "cluster"} <= set(coherence.columns)
