"""Spectral partitions, n-cut, the shuffle null and the ``cluster`` command."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

from modularity import cli
from modularity.errors import ModularityError
from modularity.graph import WeightGraph, graph_of
from modularity.models import MLP, SmallCNN, build_model, save_checkpoint
from modularity.partition import (
    Partition,
    clusterability,
    ncut,
    null_statistics,
    output_paths,
    partition,
    shuffled_blocks,
)
from modularity.utils import rng_for


def _set(module: torch.nn.Module, weight: np.ndarray) -> None:
    with torch.no_grad():
        module.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))


# ------------------------------------------------------------------------------------------------ n-cut


def _reference_test_graph() -> WeightGraph:
    """docs/methods.md §3.3: W = [[12,-1.3],[0,7.4]], [[-8.9,0.15],[0.23,-5.7]] (Keras in x out layout)."""
    model = MLP(in_features=2, hidden=(2,), n_classes=2)
    _set(model.fc1, np.array([[12, -1.3], [0, 7.4]]).T)
    _set(model.fc2, np.array([[-8.9, 0.15], [0.23, -5.7]]).T)
    return graph_of(model)


def test_ncut_matches_the_reference_test_vector_and_hand_computation() -> None:
    g = _reference_test_graph()
    labels = np.array([0, 1, 0, 1, 0, 1])
    # cluster 0 = {in0, h0, out0}: vol 13.3 + 21.05 + 9.13 = 43.48; cluster 1: 7.4 + 14.63 + 5.85 = 27.88;
    # both cut 1.3 + 0.15 + 0.23 = 1.68.
    assert ncut(g.adjacency, labels) == pytest.approx(1.68 / 43.48 + 1.68 / 27.88, rel=1e-6)
    assert ncut(g.adjacency, labels) == pytest.approx(0.098897, abs=1e-6)
    assert ncut(g.adjacency, np.zeros(6, int)) == pytest.approx(0.0)


def test_ncut_ignores_unlabelled_vertices() -> None:
    a = sparse.csr_matrix(np.array([[0, 1, 0], [1, 0, 2], [0, 2, 0]], dtype=float))
    # with vertex 2 unlabelled, the graph is the single edge 0-1 split in two: cut/vol = 1/1 + 1/1
    assert ncut(a, np.array([0, 1, -1])) == pytest.approx(2.0)
    assert ncut(a, np.array([-1, -1, -1])) == 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 12), st.integers(2, 4), st.integers(0, 10_000))
def test_ncut_agrees_with_networkx(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.uniform(0, 1, (n, n)) * (rng.uniform(size=(n, n)) < 0.6), 1)
    a = upper + upper.T
    labels = rng.integers(0, k, n)
    graph = nx.from_numpy_array(a)
    expected = 0.0
    for c in np.unique(labels):
        members = set(np.flatnonzero(labels == c).tolist())
        vol = nx.volume(graph, members, weight="weight")
        expected += nx.cut_size(graph, members, weight="weight") / (vol + 1e-8)
    assert ncut(sparse.csr_matrix(a), labels) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert 0 <= ncut(a, labels) <= len(np.unique(labels)) + 1e-9


def test_ncut_bad_input() -> None:
    with pytest.raises(ModularityError, match="one label per vertex"):
        ncut(sparse.eye(3), np.zeros(2, int))
    with pytest.raises(ModularityError, match="square"):
        ncut(np.ones((2, 3)), np.zeros(2, int))


# ------------------------------------------------------------------------------------------------ partition


def _planted_mlp(k: int = 3, per: int = 4, noise: float = 0.01, seed: int = 0) -> tuple[MLP, np.ndarray]:
    """An MLP whose every layer has k modules of `per` units: strong weights within, weak across."""
    n = k * per
    model = MLP(in_features=n, hidden=(n, n, n), n_classes=n)
    module = np.repeat(np.arange(k), per)
    rng = np.random.default_rng(seed)
    for fc in (model.fc1, model.fc2, model.fc3, model.fc4):
        w = np.where(module[:, None] == module[None, :], rng.uniform(0.5, 1.5, (n, n)), noise * rng.uniform(size=(n, n)))
        _set(fc, w * rng.choice([-1, 1], size=(n, n)))
    return model, np.tile(module, 5)


def test_planted_modules_are_recovered_exactly() -> None:
    model, truth = _planted_mlp()
    p = partition(graph_of(model), k=3, seed=0)
    assert adjusted_rand_score(truth, p.labels) == 1.0
    assert p.ncut < 0.1 and p.k == 3 and p.n_init == 25 and p.eigen_solver == "arpack"
    assert isinstance(p, Partition) and p.labels.dtype == np.int64


def test_planted_conv_modules_are_recovered_exactly() -> None:
    k, per = 4, 3
    n = k * per
    model = SmallCNN(in_channels=1, image_size=8, width=n, dense=4)
    module = np.repeat(np.arange(k), per)
    rng = np.random.default_rng(3)
    for conv in (model.conv2, model.conv3):
        strength = np.where(module[:, None] == module[None, :], 1.0, 0.005)
        _set(conv, rng.normal(size=(n, n, 3, 3)) * strength[:, :, None, None])
    p = partition(graph_of(model), k=k, seed=1)
    assert adjusted_rand_score(np.tile(module, 3), p.labels) == 1.0


def test_isolated_vertices_are_labelled_minus_one_and_not_clustered() -> None:
    model, _ = _planted_mlp()
    with torch.no_grad():  # hidden2 unit 5: no incoming and no outgoing weight (fully pruned)
        model.fc2.weight[5, :] = 0
        model.fc3.weight[:, 5] = 0
    g = graph_of(model)
    p = partition(g, k=3, seed=0)
    assert p.n_isolated == 1
    assert p.labels_of("hidden2")[5] == -1
    assert (np.delete(p.labels, g.layer_slice("hidden2").start + 5) >= 0).all()
    assert p.ncut == pytest.approx(ncut(g.adjacency, p.labels))
    assert p.cluster_sizes()[-1] == 1


def test_partition_is_seeded_and_table_is_tidy() -> None:
    g = graph_of(build_model("DIGITS"))
    a, b = partition(g, k=4, seed=7, n_init=3), partition(g, k=4, seed=7, n_init=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.ncut == b.ncut
    t = a.table()
    assert list(t.columns) == ["layer", "index", "label"] and len(t) == g.n_vertices
    assert t.attrs["k"] == 4 and t.attrs["seed"] == 7 and t.attrs["ncut"] == a.ncut
    assert t.loc[t.layer == "hidden1", "index"].tolist() == list(range(256))


@pytest.mark.parametrize("k", [1, 0, 6, 2.5, True])
def test_k_out_of_range_is_a_clear_error(k: object) -> None:
    g = _reference_test_graph()  # 6 vertices
    with pytest.raises(ModularityError, match="k must be an integer from 2 to 5"):
        partition(g, k=k)  # type: ignore[arg-type]


def test_partition_rejects_bad_inputs() -> None:
    with pytest.raises(ModularityError, match="WeightGraph"):
        partition(sparse.eye(4), k=2)  # type: ignore[arg-type]
    with pytest.raises(ModularityError, match="eigen_solver"):
        partition(_reference_test_graph(), k=2, eigen_solver="magic")  # type: ignore[arg-type]


@pytest.mark.parametrize("solver", ["amg", "lobpcg", "dense"])
def test_other_eigen_solvers_find_the_planted_modules(solver: str) -> None:
    model, truth = _planted_mlp(per=8)
    p = partition(graph_of(model), k=3, seed=0, eigen_solver=solver)  # type: ignore[arg-type]
    assert adjusted_rand_score(truth, p.labels) == 1.0


def test_dense_eigen_solver_gives_arpacks_labels_on_planted_modules() -> None:
    model, _ = _planted_mlp(per=8)
    g = graph_of(model)
    a, d = partition(g, k=3, seed=1), partition(g, k=3, seed=1, eigen_solver="dense")
    assert np.array_equal(a.labels, d.labels) and a.ncut == d.ncut


@pytest.mark.slow
def test_dense_eigen_solver_gives_arpacks_labels_on_a_pruned_mlp_and_its_null() -> None:
    # eigen_solver="dense" is scikit-learn's ARPACK path with a dense eigensolve: the same labels, hence
    # the same n-cuts, on a 90%-pruned Glorot MLP and on one of its shuffles.
    from modularity.train import magnitude_mask, prunable_weights

    model = build_model("MNIST")
    with torch.no_grad():
        for w in prunable_weights(model).values():
            w.mul_(magnitude_mask(w, 0.9))
    g = graph_of(model)
    ca = clusterability(g, k=12, n_shuffles=1, seed=0, n_jobs=1, n_init=5)
    cd = clusterability(g, k=12, n_shuffles=1, seed=0, n_jobs=1, n_init=5, eigen_solver="dense")
    a, d = partition(g, k=12, seed=0, n_init=5), partition(g, k=12, seed=0, n_init=5, eigen_solver="dense")
    assert np.array_equal(a.labels, d.labels) and a.ncut == d.ncut == ca.ncut and d.eigen_solver == "dense"
    assert np.array_equal(ca.null_ncuts, cd.null_ncuts) and ca.ncut == cd.ncut


def test_dense_eigen_solver_refuses_large_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    partition_module = sys.modules["modularity.partition"]
    model, _ = _planted_mlp(per=8)
    monkeypatch.setattr(partition_module, "DENSE_MAX_VERTICES", 10)
    with pytest.raises(ModularityError, match="at most 10"):
        partition(graph_of(model), k=3, eigen_solver="dense")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_torchvision_models_cluster(name: str) -> None:
    g = graph_of(getattr(torchvision.models, name)().eval())
    p = partition(g, k=12, seed=0, n_init=5)
    assert len(np.unique(p.labels)) == 12 and 0 < p.ncut < 12


@pytest.mark.slow
def test_resnet50_clusters_with_lobpcg() -> None:
    g = graph_of(torchvision.models.resnet50().eval())
    p = partition(g, k=12, seed=0, n_init=2, eigen_solver="lobpcg")
    assert len(np.unique(p.labels)) == 12 and 0 < p.ncut < 12


# ------------------------------------------------------------------------------------------------ null


def test_null_statistics_by_hand() -> None:
    s = null_statistics(1.0, np.array([0.5, 2.0, 3.0, 4.5]))
    assert s["mean"] == 2.5
    assert s["stdev"] == pytest.approx(np.sqrt((4 + 0.25 + 0.25 + 4) / 4))  # population sd
    assert s["z_score"] == pytest.approx(-1.5 / np.sqrt(2.125))
    assert s["percentile"] == pytest.approx(2 / 5)  # one null value below the true one
    assert null_statistics(0.1, np.array([0.5, 2.0]))["percentile"] == pytest.approx(1 / 3)
    assert null_statistics(9.0, np.array([0.5, 2.0]))["percentile"] == 1.0


def test_shuffle_permutes_each_block_over_the_non_isolated_vertices() -> None:
    model, _ = _planted_mlp()
    with torch.no_grad():
        model.fc2.weight[5, :] = 0
        model.fc3.weight[:, 5] = 0
    g = graph_of(model)
    blocks, keep = shuffled_blocks(g, rng_for(0, "test"))
    assert keep.sum() == g.n_vertices - 1
    for orig, new in zip(g.blocks, blocks, strict=True):
        rows = 11 if orig.src == "hidden2" else 12
        cols = 11 if orig.dst == "hidden2" else 12
        assert new.weights.shape == (rows, cols)
        kept = orig.weights[:rows, :cols] if rows == cols == 12 else None
        if kept is not None:
            np.testing.assert_array_equal(np.sort(new.weights.ravel()), np.sort(kept.ravel()))
            assert not np.array_equal(new.weights, kept)


def test_clusterability_of_planted_modules_is_significant_and_reproducible() -> None:
    model, _ = _planted_mlp()
    serial = clusterability(model, k=3, n_shuffles=6, seed=1, n_jobs=1, n_init=5)
    parallel = clusterability(graph_of(model), k=3, n_shuffles=6, seed=1, n_jobs=2, n_init=5)
    np.testing.assert_array_equal(serial.null_ncuts, parallel.null_ncuts)
    assert serial.percentile == pytest.approx(1 / 7)
    assert serial.ncut < serial.null_ncuts.min()
    assert serial.z_score < -5
    assert serial["mean"] == pytest.approx(serial.null_ncuts.mean())
    assert serial.stdev == pytest.approx(serial.null_ncuts.std(ddof=0))
    d = serial.to_dict()
    assert json.dumps(d) and len(d["null_ncuts"]) == 6 and d["params"]["model"] == "MLP"
    row = serial.to_frame()
    assert len(row) == 1 and row.loc[0, "percentile"] == serial.percentile and row.loc[0, "k"] == 3
    assert {"z_score", "n_shuffles", "seed", "conv_norm", "fold_batchnorm"} <= set(row.columns)
    other = clusterability(model, k=3, n_shuffles=6, seed=2, n_jobs=1, n_init=5)
    assert not np.array_equal(other.null_ncuts, serial.null_ncuts)


def test_clusterability_rejects_bad_shuffle_count() -> None:
    with pytest.raises(ModularityError, match="n_shuffles"):
        clusterability(_reference_test_graph(), k=2, n_shuffles=-1)


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def main():
    """``cli.main`` (the cluster command's parser is in modularity.commands, its function here)."""
    return cli.main


def test_cluster_command_writes_labels_and_summary(tmp_path, capsys, main) -> None:
    ckpt = tmp_path / "DIGITS" / "seed0" / "pruned.pt"
    save_checkpoint(build_model("DIGITS"), ckpt, {"tag": "DIGITS", "seed": 0, "pruned": True})
    out = tmp_path / "out"
    rc = main(["cluster", str(ckpt), "--k", "4", "--shuffles", "2", "--out", str(out), "--n-init", "2", "--jobs", "1"])
    assert rc == 0
    labels_path, summary_path = output_paths(ckpt, 4, 0, out)
    table = pd.read_csv(labels_path)
    assert list(table.columns) == ["layer", "index", "label"] and len(table) == 64 + 4 * 256 + 10
    summary = json.loads(summary_path.read_text())
    assert summary["k"] == 4 and summary["tag"] == "DIGITS" and summary["n_shuffles"] == 2
    assert {"ncut", "null_mean", "null_stdev", "z_score", "percentile", "checkpoint_sha256"} <= set(summary)
    assert "n-cut" in capsys.readouterr().out


def test_cluster_command_labels_reproduce_the_summary_ncut(tmp_path, main) -> None:
    model = build_model("DIGITS")
    ckpt = tmp_path / "unpruned.pt"
    save_checkpoint(model, ckpt, {"tag": "DIGITS"})
    assert main(["cluster", str(ckpt), "--k", "3", "--n-init", "2"]) == 0
    labels_path, summary_path = output_paths(ckpt, 3, 0)
    labels = pd.read_csv(labels_path).label.to_numpy()
    assert ncut(graph_of(model).adjacency, labels) == pytest.approx(json.loads(summary_path.read_text())["ncut"])


def test_cluster_command_user_errors_exit_2(tmp_path, capsys, main) -> None:
    assert main(["cluster", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    ckpt = tmp_path / "m.pt"
    save_checkpoint(build_model("DIGITS"), ckpt, {"tag": "DIGITS"})
    assert main(["cluster", str(ckpt), "--k", "1"]) == 2
    assert "k must be an integer" in capsys.readouterr().err
