"""importance(): the table and summary against hand computations, whole-layer handling, bad input, CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from modularity import stats
from modularity.errors import ModularityError
from modularity.importance import COLUMNS, importance
from modularity.models import MLP
from modularity.subclusters import SubCluster, random_sets
from tests.helpers import digits_tensors, train_briefly


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return digits_tensors()


@pytest.fixture(scope="module")
def mlp(digits: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    x, y = digits
    torch.manual_seed(0)
    return train_briefly(MLP(64, (24, 24), 10), x, y, steps=120, lr=1e-2)


def subs_of(*spec: tuple[str, int, list[int]], width: int = 24) -> list[SubCluster]:
    return [SubCluster(layer, c, np.array(u), width) for layer, c, u in spec]


SUBS = (("hidden1", 0, list(range(0, 8))), ("hidden1", 1, [8, 9, 10]), ("hidden2", 0, list(range(12, 24))),
        ("hidden2", 3, [0]))


def naive_correct(model: nn.Module, layer: str, units: np.ndarray, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    m = copy.deepcopy(model)
    fc = m.get_submodule("fc" + layer[-1])
    with torch.no_grad():
        idx = torch.from_numpy(np.array(units, dtype=np.int64))
        fc.weight[idx] = 0
        fc.bias[idx] = 0
        pred = m(x).argmax(1)
    return np.bincount(y[pred == y].numpy(), minlength=10)


def test_table_matches_hand_computation(mlp: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    subs = subs_of(*SUBS)
    n = 19
    df, summary = importance(mlp, subs, (x, y), n_random=n, seed=3)
    assert list(df.columns) == list(COLUMNS) and len(df) == len(subs)
    sizes = np.bincount(y.numpy(), minlength=10)
    with torch.no_grad():
        unl_acc = int((mlp(x).argmax(1) == y).sum()) / len(y)
    assert df["unlesioned_acc"].iloc[0] == pytest.approx(unl_acc)
    for i, sc in enumerate(subs):
        true = naive_correct(mlp, sc.layer, sc.units, x, y)
        draws = random_sets(sc, n, 3, exclude_isolated=True)
        rand = np.stack([naive_correct(mlp, sc.layer, d, x, y) for d in draws])
        row = df.iloc[i]
        assert (row["layer"], row["cluster"], row["size"], row["layer_width"]) == (sc.layer, sc.cluster, sc.size, 24)
        assert row["proportion"] == pytest.approx(sc.size / 24)
        assert row["lesioned_acc"] == pytest.approx(true.sum() / len(y))
        assert row["lesioned_balanced_acc"] == pytest.approx(np.mean(true / sizes))
        assert row["acc_drop"] == pytest.approx(unl_acc - true.sum() / len(y))
        assert row["random_acc_mean"] == pytest.approx(rand.sum(1).mean() / len(y))
        # the balanced-accuracy rank p-value, by hand (strict ties: r = #{random < true})
        bal_t, bal_r = np.mean(true / sizes), (rand / sizes).mean(1)
        r = int(np.sum(bal_r < bal_t - 1e-12))
        assert row["p_mean"] == pytest.approx((r + 1) / (n + 1))
        np.testing.assert_array_equal(summary["counts"]["true"][i], true)
        np.testing.assert_array_equal(summary["counts"]["random"][:, i], rand)
    assert df["p_mean_corrected"].tolist() == pytest.approx(stats.correct(df["p_mean"], "holm")[1].tolist())
    assert (df["p_mean_corrected"] >= df["p_mean"]).all()
    assert df.loc[df["size"] <= 12, "category"].eq("small").all()
    assert (df["n_random"] == n).all() and (df["seed"] == 3).all() and (df["correction"] == "holm").all()
    for key in ("chi2_p_means", "combined_p_means", "chi2_p_ranges", "combined_p_ranges", "effect_means",
                "log_effect_means_ci", "n_random", "seed", "correction", "tie_rule", "exact_decisions"):
        assert key in summary
    assert summary["n_subclusters"] == len(subs) and summary["n_complete"] == 0


def test_deterministic_and_dataset_input(mlp: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    from modularity.data import Dataset

    x, y = digits
    subs = subs_of(*SUBS[:2])
    a, _ = importance(mlp, subs, (x, y), n_random=8, seed=0)
    b, _ = importance(mlp, subs, Dataset("digits", x[:10], y[:10], x, y, 10), n_random=8, seed=0)
    pd.testing.assert_frame_equal(a, b)
    c, _ = importance(mlp, subs, (x, y), n_random=8, seed=1)
    assert not np.allclose(a["random_acc_mean"], c["random_acc_mean"])


def test_default_draws_make_corrected_significance_reachable() -> None:
    from modularity.importance import _default_n_random

    n = _default_n_random()
    assert n >= stats.min_draws_for_significance(30, 0.05, "holm")
    assert stats.min_draws_for_significance(30, 0.05, "holm") > 20  # the reference's 20 cannot reach it


def test_whole_layer_subcluster(mlp: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    subs = subs_of(*SUBS[:2], ("hidden2", 5, list(range(24))))
    df, summary = importance(mlp, subs, (x, y), n_random=5)
    row = df.iloc[2]
    assert row["category"] == "complete" and not row["tested"]
    assert np.isnan(row["p_mean"]) and np.isnan(row["p_mean_corrected"])
    assert row["lesioned_acc"] == pytest.approx(naive_correct(mlp, "hidden2", np.arange(24), x, y).sum() / len(y))
    assert summary["n_complete"] == 1 and summary["n_subclusters"] == 2
    with pytest.raises(ModularityError, match="whole layer"):
        importance(mlp, subs, (x, y), n_random=5, complete="error")
    inc, s_inc = importance(mlp, subs, (x, y), n_random=5, complete="include")
    assert s_inc["n_subclusters"] == 3 and inc["tested"].all()
    assert np.isnan(inc["p_mean_corrected"].iloc[2])  # degenerate: left out of the correction by stats
    with pytest.raises(ModularityError, match="every sub-cluster is a whole layer"):
        importance(mlp, subs[2:], (x, y), n_random=5)


def test_bad_input(mlp: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    good = subs_of(SUBS[0])
    cases = [
        (dict(subclusters=[]), "no sub-clusters"),
        (dict(subclusters=subs_of(("hidden1", 0, []))), "empty unit set"),
        (dict(subclusters=subs_of(("hidden1", 0, [3, 30]))), "0..23"),
        (dict(subclusters=subs_of(("hidden7", 0, [1]))), "not an analysed layer"),
        (dict(subclusters=subs_of(("output", 0, [1]))), "not an analysed layer"),
        (dict(subclusters=[SubCluster("hidden1", 0, np.array([1]), 32)]), "layer_width 32"),
        (dict(data=(x, y + 1)), "labels must lie in 0..9"),
        (dict(data=(x, y[:5])), r"labels \(N,\)"),
        (dict(data=x), r"data must be \(images, labels\)"),
        (dict(n_random=0), "n_random"),
        (dict(complete="maybe"), "complete must be"),
        (dict(correction="nope"), "correction method must be one of .*got .nope."),
        (dict(ties="nope"), "ties must be one of"),
        (dict(data=((x * 255).to(torch.uint8), y)), "uint8"),
        (dict(data=((x * 16).round(), y)), "unscaled 0-16 pixels"),
    ]
    for override, message in cases:
        kw = dict(model=mlp, subclusters=good, data=(x, y), n_random=3) | override
        with pytest.raises(ModularityError, match=message):
            importance(**kw)


@pytest.mark.slow
def test_cli_writes_table_summary_counts_and_plots(tmp_path: Path) -> None:
    from modularity.cli import main
    from modularity.models import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("DIGITS")
    ckpt = tmp_path / "ck" / "pruned.pt"
    save_checkpoint(model, ckpt, {"tag": "DIGITS", "seed": 0, "pruned": True})
    out = tmp_path / "out"
    rc = main(["importance", str(ckpt), "--k", "4", "--n-random", "3", "--out", str(out), "--allow-chance",
               "--data-root", str(tmp_path / "data")])
    assert rc == 0
    stem = "pruned-k4-seed0"
    df = pd.read_csv(out / f"{stem}-importance.csv")
    assert list(df.columns) == list(COLUMNS) and len(df) > 0
    summary = json.loads((out / f"{stem}-importance.json").read_text())
    assert summary["tag"] == "DIGITS" and summary["k"] == 4 and summary["n_random"] == 3
    counts = np.load(out / f"{stem}-lesion-counts.npz")
    assert counts["random"].shape == (3, len(df), 10)
    for name in ("importance.png", "per-class.png"):
        assert (out / f"{stem}-{name}").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*.tmp"))
    assert main(["importance", str(tmp_path / "missing.pt")]) == 2
