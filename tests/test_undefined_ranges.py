"""Undefined class-specificity ranges (a lesion that changes no class's accuracy on balance).

``stats.lesion_summary(undefined_ranges=...)``: the default ("as_ties") keeps the stored behaviour (an
undefined range follows the tie rule); "mid" and "exclude" make it neither the most nor the least
class-specific value. The reference's raw counts show how much the output-coherence verdict hangs on it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modularity import stats
from modularity.errors import ModularityError

SIZES2 = np.array([10, 10])


def _case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-cluster 0 changes nothing (range undefined); sub-cluster 1 hurts class 0 only (range defined).

    Random draws: 3 of 4 change class 0 and class 1 differently (defined ranges), 1 changes nothing.
    """
    unlesioned = np.array([10, 10])
    true = np.array([[10, 10], [5, 10]])
    random = np.array([[[9, 8], [9, 8]], [[8, 9], [8, 9]], [[7, 7], [7, 7]], [[10, 10], [10, 10]]])
    return unlesioned, true, random


def test_default_is_unchanged_and_follows_the_tie_rule() -> None:
    u, t, r = _case()
    strict = stats.lesion_summary(u, t, r, SIZES2, n_boot=10)
    cons = stats.lesion_summary(u, t, r, SIZES2, ties="conservative", n_boot=10)
    assert "n_undefined_ranges" not in strict and "undefined_ranges" not in strict  # stored results keep their keys
    assert strict["undefined_range"].tolist() == [True, False]
    assert strict["p_ranges"][0] == pytest.approx(1 / 5)  # strict: undefined true = most class-specific
    assert cons["p_ranges"][0] == pytest.approx(1.0)  # conservative: least


def test_mid_counts_every_undefined_comparison_half() -> None:
    u, t, r = _case()
    s = stats.lesion_summary(u, t, r, SIZES2, undefined_ranges="mid", n_boot=10)
    assert s["n_undefined_ranges"] == 1 and s["undefined_ranges"] == "mid"
    assert s["p_ranges"][0] == pytest.approx((0.5 * 4 + 1) / 5)  # every draw half
    # sub-cluster 1: range 2 (only class 0 changed); draws 0-1 have range 2/17*... < 2, draw 2 range 0,
    # draw 3 undefined (half): rank = 0 + 0.5
    assert s["p_ranges"][1] == pytest.approx((0.5 + 1) / 5)


def test_exclude_leaves_the_subcluster_out_of_the_range_tests() -> None:
    u, t, r = _case()
    s = stats.lesion_summary(u, t, r, SIZES2, undefined_ranges="exclude", n_boot=10)
    assert math.isnan(s["p_ranges"][0]) and s["n_undefined_ranges"] == 1
    assert s["combined_p_ranges"] == pytest.approx(stats.fisher_combined([s["p_ranges"][1]], 4))
    assert s["chi2_p_means"] == stats.lesion_summary(u, t, r, SIZES2, n_boot=10)["chi2_p_means"]  # means untouched


def test_unknown_rule_is_a_one_line_error() -> None:
    u, t, r = _case()
    with pytest.raises(ModularityError, match="undefined_ranges"):
        stats.lesion_summary(u, t, r, SIZES2, undefined_ranges="drop", n_boot=10)  # type: ignore[arg-type]


def test_reference_raw_counts_verdict_depends_on_the_rule() -> None:
    """net_0, k = 12 of the reference's raw data: Fisher p on ranges 0.19 (strict) vs 0.86 (mid) vs 0.98."""
    from test_stats import SIZES, load_raw

    u, t, r = load_raw("net_0", 12)
    p = {rule: stats.lesion_summary(u, t, r, SIZES, n_boot=10, **kw)["combined_p_ranges"]
         for rule, kw in {"strict": {}, "mid-ties": {"ties": "mid"}, "conservative": {"ties": "conservative"},
                          "mid": {"undefined_ranges": "mid"}, "exclude": {"undefined_ranges": "exclude"}}.items()}
    assert p["strict"] == pytest.approx(0.191, abs=1e-3)
    assert p["mid-ties"] == pytest.approx(0.863, abs=1e-3) and p["conservative"] == pytest.approx(0.976, abs=1e-3)
    assert p["mid"] == pytest.approx(0.851, abs=1e-3) and p["exclude"] == pytest.approx(0.828, abs=1e-3)


def test_importance_forwards_the_reference_protocol_options() -> None:
    """importance(arithmetic=, undefined_ranges=) reach lesion_summary; the defaults leave the summary as before."""
    import torch

    from modularity.importance import importance
    from modularity.models import MLP
    from modularity.subclusters import SubCluster
    from tests.helpers import digits_tensors, train_briefly

    x, y = digits_tensors()
    torch.manual_seed(0)
    model = train_briefly(MLP(64, (24, 24), 10), x, y, steps=40, lr=1e-2)
    subs = [SubCluster("hidden1", 0, np.arange(8), 24), SubCluster("hidden2", 0, np.array([0, 1, 2]), 24)]
    _, default = importance(model, subs, (x, y), n_random=5, seed=0)
    _, ref = importance(model, subs, (x, y), n_random=5, seed=0, arithmetic="float", undefined_ranges="mid")
    assert default["arithmetic"] == "exact" and "undefined_ranges" not in default
    assert ref["arithmetic"] == "float" and ref["undefined_ranges"] == "mid" and "n_undefined_ranges" in ref
