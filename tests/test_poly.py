"""The POLY regression networks: dataset, term bookkeeping, per-term MSE, lesion directions, end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from modularity import poly
from modularity.errors import ModularityError
from modularity.lesion import regression
from modularity.subclusters import SubCluster

# --------------------------------------------------------------------------------------------------
# Terms and dataset


def test_nine_terms_each_in_256_of_512_outputs() -> None:
    assert poly.N_TERMS == 9 and poly.N_OUTPUTS == 512
    assert poly.term_names() == ["1", "x2", "x2^2", "x1", "x1*x2", "x1*x2^2", "x1^2", "x1^2*x2", "x1^2*x2^2"]
    c = poly.coefficients()
    assert c.shape == (512, 9)
    assert len({tuple(row) for row in c}) == 512  # every 0/1 combination exactly once
    assert (c.sum(axis=0) == 256).all()
    m = poly.term_membership()
    assert m.shape == (9, 512) and (m.sum(axis=1) == 256).all()
    assert c[0].tolist() == [0] * 9 and c[511].tolist() == [1] * 9
    assert c[0b101].tolist() == [1, 0, 1, 0, 0, 0, 0, 0, 0]  # output 5 = 1 + x2^2


def test_targets_by_hand() -> None:
    x = np.array([[2.0, 3.0]], dtype=np.float32)
    # monomials x1^a x2^b in (a, b) order (0,0) (0,1) (0,2) (1,0) (1,1) (1,2) (2,0) (2,1) (2,2)
    assert poly.monomials(x)[0].tolist() == [1, 3, 9, 2, 6, 18, 4, 12, 36]
    y = poly.targets(x)[0]
    assert y.dtype == np.float32
    assert y[0] == 0 and y[1] == 1 and y[2] == 3 and y[5] == 1 + 9 and y[511] == 91
    assert y[256] == 36 and y[0b110000] == 6 + 18


def test_dataset_shapes_seeded_and_deterministic() -> None:
    a = poly.make_arrays(n_train=50, n_test=20)
    assert a["x_train"].shape == (50, 2) and a["y_train"].shape == (50, 512)
    assert a["x_test"].shape == (20, 2) and a["y_test"].shape == (20, 512)
    assert all(v.dtype == np.float32 for v in a.values())
    b = poly.make_arrays(n_train=50, n_test=20)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    expected_x = np.random.RandomState(42).standard_normal((70, 2)).astype(np.float32)
    assert np.array_equal(a["x_train"], expected_x[:50]) and np.array_equal(a["x_test"], expected_x[50:])
    assert np.array_equal(a["y_test"], poly.targets(a["x_test"]))
    assert not np.array_equal(poly.make_arrays(seed=1, n_train=50, n_test=20)["x_train"], a["x_train"])


def test_load_dataset_knows_poly_without_writing_files(tmp_path) -> None:
    from modularity.data import GENERATED, load_arrays, load_dataset

    assert "poly" in GENERATED
    ds = load_dataset("poly", root=tmp_path)
    assert not any(tmp_path.iterdir())  # generated, nothing prepared on disk
    assert ds.x_train.shape == (60000, 2) and ds.y_train.shape == (60000, 512)
    assert ds.x_test.shape == (10000, 2) and ds.y_test.shape == (10000, 512)
    assert ds.n_classes == 512 and ds.y_test.dtype == torch.float32
    small = poly.make_arrays(n_train=60000, n_test=10000)
    assert torch.equal(ds.x_test, torch.from_numpy(small["x_test"]))  # not divided by 255
    with pytest.raises(ModularityError, match="poly"):
        load_arrays("no-such-dataset", root=tmp_path)


# --------------------------------------------------------------------------------------------------
# Per-term MSE


def test_per_output_and_per_term_mse_by_hand() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert poly.per_output_mse(pred, torch.zeros(2, 2)).tolist() == [5.0, 10.0]  # (1+9)/2, (4+16)/2
    # output j has MSE j: the mean of j over the 256 outputs with bit t set is (511 + 2^t) / 2
    per_term = poly.per_term_mse(np.arange(512.0))
    assert per_term.tolist() == [(511 + 2 ** t) / 2 for t in range(9)]
    # a hand-built grouping: 2 terms over 3 outputs
    groups = np.array([[True, True, False], [False, True, True]])
    assert poly.per_term_mse(np.array([[1.0, 3.0, 8.0]]), groups).tolist() == [[2.0, 5.5]]


def test_range_of_the_per_term_change_by_hand() -> None:
    unl = np.ones(9)
    true = (unl + np.array([1, 1, 1, 1, 1, 1, 1, 1, 10.0]))[None]  # delta mean 2: normalised 0.5 .. 5
    rnd = np.stack([unl + np.full(9, 1.0 + 0.1 * r) for r in range(5)])[:, None]  # uniform change: range 0
    s = regression.regression_summary(unl, true, rnd, seed=0, n_boot=50)
    assert s["true_range"][0] == pytest.approx(4.5)
    assert s["random_range_median"][0] == pytest.approx(0.0)
    assert s["p_ranges"][0] == pytest.approx(1 / 6)
    assert s["true_mean_mse"][0] == pytest.approx(3.0)


# --------------------------------------------------------------------------------------------------
# Direction


def _case(true_higher: bool, n_sub: int = 6, n: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    unl = np.ones(9)
    rnd = 2.0 + rng.random((n, n_sub, 9))  # random lesions: per-term MSE in [2, 3)
    true = np.full((n_sub, 9), 5.0 if true_higher else 1.5) + rng.random((n_sub, 9)) * 0.1
    return unl, true, rnd


@pytest.mark.parametrize("true_higher", [True, False])
def test_direction_flips_the_side_of_the_mean_test(true_higher: bool) -> None:
    unl, true, rnd = _case(true_higher)
    paper = regression.regression_summary(unl, true, rnd, direction="paper", n_boot=50)
    ref = regression.regression_summary(unl, true, rnd, direction="reference", n_boot=50)
    low, high = 1 / 21, 1.0
    # paper: a lesion matters when it RAISES the MSE; reference: small p when it LOWERS the MSE
    assert np.allclose(paper["p_means"], low if true_higher else high)
    assert np.allclose(ref["p_means"], high if true_higher else low)
    assert (paper["combined_p_means"] < 0.01) == true_higher
    assert (ref["combined_p_means"] < 0.01) == (not true_higher)
    assert (paper["effect_means"] > 1) == true_higher  # true / random
    assert (ref["effect_means"] > 1) == (not true_higher)  # random / true (the reference's 7.8 for POLY)
    assert np.sign(paper["log_effect_means"]) == -np.sign(ref["log_effect_means"])
    # the range test does not depend on the direction
    assert np.array_equal(paper["p_ranges"], ref["p_ranges"]) and paper["combined_p_ranges"] == ref["combined_p_ranges"]
    assert paper["direction"] == "paper" and ref["direction"] == "reference"


def test_unknown_direction_is_refused() -> None:
    unl, true, rnd = _case(True)
    with pytest.raises(ModularityError, match="direction"):
        regression.regression_summary(unl, true, rnd, direction="up")


def test_classification_ignores_direction() -> None:
    from modularity.importance import importance
    from modularity.models import MLP

    torch.manual_seed(0)
    model = MLP(in_features=4, hidden=(8, 8), n_classes=3).eval()
    x = torch.rand(60, 4)
    y = model(x).argmax(1)  # labels the net gets right: any lesion can only hurt
    subs = [SubCluster("hidden1", 0, np.array([0, 1, 2]), 8), SubCluster("hidden2", 1, np.array([3, 4]), 8)]
    a = importance(model, subs, (x, y), n_random=10, require_above_chance=False, direction="paper").summary
    b = importance(model, subs, (x, y), n_random=10, require_above_chance=False, direction="reference").summary
    assert "direction" not in a
    assert json.dumps({k: v for k, v in a.items() if k not in ("counts", "seconds")}, default=str) == \
        json.dumps({k: v for k, v in b.items() if k not in ("counts", "seconds")}, default=str)


# --------------------------------------------------------------------------------------------------
# Tags, training, graph, lesions end to end


def test_poly_tags_follow_the_reference_recipe() -> None:
    from modularity.models import build_model, is_regression, tag_spec

    for tag, l1, l2 in (("POLY", 0.0, 0.0), ("POLY+L1REG", 5e-5, 0.0), ("POLY+L2REG", 0.0, 5e-5)):
        spec = tag_spec(tag)
        assert (spec.family, spec.dataset, spec.l1, spec.l2, spec.dropout) == ("mlp", "poly", l1, l2, False)
        assert (spec.epochs, spec.pruning_epochs, spec.batch_size) == (20, 20, 128)
        assert is_regression(spec)
    assert not is_regression(tag_spec("MNIST"))
    widths = [(m.in_features, m.out_features) for m in build_model("POLY").modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [(2, 256), (256, 256), (256, 256), (256, 256), (256, 512)]


def test_train_graph_and_importance_end_to_end(tmp_path) -> None:
    from modularity.graph import graph_of
    from modularity.importance import importance
    from modularity.models import load_checkpoint, tag_spec
    from modularity.partition import partition
    from modularity.subclusters import subclusters
    from modularity.train import regularisation, train

    data = poly.dataset(n_train=300, n_test=200)
    paths = train("POLY+L1REG", 0, out=tmp_path, epochs=1, pruning_epochs=1, data=data, progress=False)
    model, meta = load_checkpoint(paths["pruned"])
    assert "test_acc" not in meta and meta["test_mse"] > 0
    with torch.no_grad():
        penalty = float(regularisation(model, tag_spec("POLY+L1REG")))
    assert meta["test_loss"] == pytest.approx(meta["test_mse"] + penalty) and penalty > 0
    assert max(meta["sparsity"].values()) == pytest.approx(0.9, abs=1e-3)

    graph = graph_of(model)
    assert graph.adjacency.shape == (2 + 1024 + 512, 2 + 1024 + 512)
    part = partition(graph, k=12, seed=0)
    subs = subclusters(part)
    assert {s.layer for s in subs} <= {"hidden1", "hidden2", "hidden3", "hidden4"}

    res = {d: importance(model, subs, data, n_random=5, seed=0, require_above_chance=False, direction=d)
           for d in regression.DIRECTIONS}
    paper, ref = res["paper"], res["reference"]
    n_sub = paper.summary["n_subclusters"]
    assert paper.counts["true"].shape[1] == 9 and paper.counts["random"].shape[0] == 5
    assert np.array_equal(paper.counts["true"], ref.counts["true"])  # same lesions, another side
    tested = paper.table["tested"].to_numpy()
    p_paper, p_ref = paper.table["p_mean"].to_numpy()[tested], ref.table["p_mean"].to_numpy()[tested]
    ties = paper.table["n_ties_mean"].to_numpy()[tested]
    assert np.allclose(p_paper + p_ref, (5 + 2 - ties) / 6)  # right + left strict rank p-values of the same values
    assert np.array_equal(paper.table["p_range"].to_numpy(), ref.table["p_range"].to_numpy(), equal_nan=True)
    assert len(paper.table) == n_sub + paper.summary["n_complete"]
    # a lesion table row checked by hand: its per-term MSEs from the lesion primitive
    row = paper.table[tested].iloc[0]
    sc = next(s for s in subs if s.layer == row["layer"] and s.cluster == row["cluster"])
    by_hand = regression.lesion_term_mse(model, sc.layer, [sc.units], data.x_test, data.y_test)[0]
    assert row["lesioned_mse"] == pytest.approx(by_hand.mean(), rel=1e-6)


def test_untrained_network_is_refused() -> None:
    from modularity.models import build_model

    model = build_model("POLY").eval()  # predicts about 0; the targets' mean is 2 on average
    data = poly.dataset(n_train=10, n_test=100)
    subs = [SubCluster("hidden1", 0, np.arange(10), 256)]
    with pytest.raises(ModularityError, match="predicting the mean"):
        regression.regression_importance(model, subs, data, n_random=3)


def test_hooked_path_equals_the_cut_path() -> None:
    from modularity.models import build_model

    torch.manual_seed(1)
    model = build_model("POLY").eval()
    data = poly.dataset(n_train=10, n_test=64)
    sets = [np.array([0, 5, 9]), np.arange(100), np.zeros(0, dtype=np.int64)]
    fast = regression._outputs_with_lesions(model, "hidden2", sets, data.x_test, data.y_test)

    from modularity.lesion import lesioned_logits  # the lesion definition (a forward hook)

    for m, units in enumerate(sets):
        mask = torch.zeros(256, dtype=torch.bool)
        mask[torch.from_numpy(units)] = True
        with torch.no_grad():
            out = lesioned_logits(model, "hidden2", data.x_test, mask)
        assert np.allclose(fast[m], poly.per_output_mse(out, data.y_test), rtol=1e-6)
    assert not np.allclose(fast[0], fast[2])  # a lesion changes the outputs


# --------------------------------------------------------------------------------------------------
# Benchmark


def test_benchmark_rows_and_direction_reason() -> None:
    from benchmark.compare import like_for_like
    from benchmark.dvcgen import dataset_dep
    from benchmark.plan import Profile, Row, load_profile, load_tables, plan

    tables = load_tables()
    default = plan(load_profile("default"), tables)
    poly_rows = [r for r in default.rows if r.tag.startswith("POLY")]
    assert {(r.table, r.tag, r.pruned) for r in poly_rows} == {
        ("clusterability", "POLY", False), ("clusterability", "POLY+L1REG", False),
        ("clusterability", "POLY+L2REG", False), ("importance", "POLY", True), ("output_coherence", "POLY", True)}
    assert all(r.skip and "not in the default profile" in r.skip for r in poly_rows)
    paper = plan(load_profile("paper"), tables)
    kinds = {(s.kind, s.tag, s.pruned) for s in paper.stages if s.tag.startswith("POLY")}
    assert ("importance", "POLY", True) in kinds and ("cluster", "POLY+L2REG", False) in kinds
    assert ("train", "POLY+L1REG", False) in kinds
    assert dataset_dep("POLY") == "modularity/poly.py"

    table = next(t for t in tables if t.name == "importance")
    row = Row("importance", "mlp", "POLY", True, 12, (0,))
    profile = Profile("p", {"importance": {"default": {"n_random": 20}}, "train": {}})
    prow = pd.DataFrame({"tag": ["POLY"]})
    reasons = like_for_like(table, row, profile, pd.DataFrame({"direction": ["paper"]}), prow)
    assert any(r.startswith("direction: paper") for r in reasons)
    reasons = like_for_like(table, row, profile, pd.DataFrame({"direction": ["reference"], "arithmetic": ["float"]}),
                            prow)
    assert not any(r.startswith("direction") or r.startswith("ties") for r in reasons)
