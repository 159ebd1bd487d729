"""Statistics of importance and coherence: rank p-values, network-level tests, effect sizes, correction.

Every test here compares a *true* sub-cluster with ``n`` random same-size sets of the same layer
(docs/methods.md §5.3-5.5, 6.2):

* :func:`rank_pvalue` - the empirical ``(r+1)/(n+1)`` p-value of one sub-cluster (North et al. 2002),
  left or right sided, with an explicit tie rule.
* :func:`chi2_uniformity` and :func:`fisher_combined` - the reference's two network-level tests on the
  list of per-sub-cluster p-values ("percentiles").
* :func:`balanced_accuracy`, :func:`range_statistic` - the per-lesion quantities of docs/methods.md §5.2.
* :func:`lesion_summary` - all of the above from integer correct-prediction counts, compared in exact
  arithmetic, plus the reference effect factors and robust (median log-ratio, bootstrap) effect sizes.
* :func:`coherence_summary` - the same network-level statistics for feature-visualisation values.
* :func:`correct` - multiple-comparison correction (statsmodels ``multipletests``), Holm by default;
  :func:`correct_columns` applies it to p-value columns of a table (e.g. across networks).
* :func:`categorize` - the "important / prunable / ..." taxonomy of docs/methods.md §5.5 on corrected p-values.
* :func:`min_draws_for_significance` - how many random draws make corrected significance reachable.

Tie rules (``ties=``), for a left-sided test (right-sided: mirror the inequalities):

``"strict"`` (default, the reference code)
    ``r = #{random < true}``. A random draw that *ties* with the true value is not counted as at
    least as extreme, so ties make p *smaller*: they count in favour of significance (anti-conservative).
    (docs/methods.md §9.23 says ties "count against significance"; with the unit test of 5.3 and the formula
    this is the other way round: ``rank_pvalue(5, [5]*20) == 1/21``.)
``"mid"``
    ``r = #{random < true} + #{random == true}/2`` (mid-rank): ties count half.
``"conservative"``
    ``r = #{random <= true}``: ties count as at least as extreme. This is the valid permutation
    p-value of North et al. 2002 (never below its nominal level under the null).

Undefined lesion ranges (``undefined_ranges=`` of :func:`lesion_summary`). A lesion that changes no
class's accuracy on balance (mean per-class change exactly 0) has no class-specificity range (0/0,
NaN). Compared with ``<``/``>`` a NaN is *unordered*, so by default (``"as_ties"``) it follows the tie
rule: ``"strict"`` scores an undefined true range as more class-specific than every random draw (the
smallest p), ``"conservative"`` as less (p = 1). Neither is meaningful, so two named alternatives:

``"mid"``
    every comparison involving an undefined range (true or random) counts half, whatever ``ties``
    says for exact ties: an undefined range is neither more nor less class-specific than anything.
``"exclude"``
    sub-clusters whose true range is undefined are left out of the range tests (their ``p_ranges``
    is NaN and ``n_undefined_ranges`` counts them); undefined random ranges count half, as ``"mid"``.
"""

from __future__ import annotations

import gc
import math
import warnings
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.stats
from statsmodels.stats.multitest import multipletests

from . import validate
from .errors import ModularityError
from .utils import rng_for

Side = Literal["left", "right"]
Ties = Literal["strict", "mid", "conservative"]

TIE_RULES: tuple[str, ...] = validate.TIE_RULES
#: How an undefined class-specificity range enters the range tests (module docstring).
UNDEFINED_RANGE_RULES: tuple[str, ...] = ("as_ties", "mid", "exclude")
UndefinedRanges = Literal["as_ties", "mid", "exclude"]
CORRECTION_METHODS: tuple[str, ...] = validate.CORRECTION_METHODS

#: Default number of random draws per sub-cluster. With ``n`` draws the smallest rank p-value is
#: ``1/(n+1)``; Holm across ``m`` sub-clusters needs ``m/(n+1) <= alpha`` for the best one to survive,
#: so 1000 draws make corrected significance reachable for up to 50 sub-clusters per network at
#: alpha = 0.05 (k = 12 MLPs have 28-30; see :func:`min_draws_for_significance`). The reference used 20.
DEFAULT_N_RANDOM = 1000

#: Random draws of the reference's feature-visualisation (Lucid) experiments.
DEFAULT_N_RANDOM_COHERENCE = 9

#: Categories of :func:`categorize`, in the order they are tested.
CATEGORIES: tuple[str, ...] = (
    "complete", "small", "important", "prunable", "least_important", "sig-but-not-diff",
    "diff-but-not-sig", "other",
)


# ----------------------------------------------------------------------------------------------------
# Rank p-values and network-level tests
# ----------------------------------------------------------------------------------------------------


def rank_pvalue(
    true: Any, random: Any, side: Side = "left", ties: Ties = "strict"
) -> float | np.ndarray:
    """Empirical p-value ``(r+1)/(n+1)`` of ``true`` against ``n`` random draws (docs/methods.md §5.3).

    ``side="left"``: small when ``true`` is *lower* than the random values (e.g. balanced accuracy
    after a lesion: the true lesion hurts more). ``side="right"``: small when ``true`` is *higher*.
    ``true`` is a scalar or shape ``(S,)``; ``random`` is ``(n,)`` or ``(n, S)``, draws first. Values
    may be floats, integers or exact ``Fraction`` objects (object arrays). A comparison involving NaN
    is *unordered* and is treated like a tie: not counted by ``"strict"`` (the reference's float ``<``:
    a NaN ``true`` then gets the smallest p), half by ``"mid"``, fully by ``"conservative"``.
    Returns a float for a scalar ``true``, else an array of shape ``(S,)``.
    """
    _check_choice("side", side, ("left", "right"))
    _check_choice("ties", ties, TIE_RULES)
    scalar = np.ndim(true) == 0
    t = np.asarray(true, dtype=_dtype_of(true))
    r = np.asarray(random, dtype=_dtype_of(random))
    if r.ndim == 0 or r.shape[0] == 0:
        raise ModularityError("rank_pvalue needs at least one random draw (random has shape (n,) or (n, S))")
    if r.shape[1:] != t.shape:
        raise ModularityError(
            f"rank_pvalue: random has shape {r.shape}, expected (n,) + true's shape {t.shape} (draws first)"
        )
    n = r.shape[0]
    with np.errstate(invalid="ignore"):  # NaN compares False, as in the reference
        more = np.asarray((r < t) if side == "left" else (r > t), dtype=bool)
        less = np.asarray((r > t) if side == "left" else (r < t), dtype=bool)
    rank = np.sum(more, axis=0).astype(float)
    if ties != "strict":  # unordered pairs: exact ties, or a NaN on either side
        unordered = np.sum(~(more | less), axis=0)
        rank = rank + (0.5 if ties == "mid" else 1.0) * unordered
    p = (rank + 1.0) / (n + 1.0)
    return float(p) if scalar else p


def chi2_uniformity(percentiles: Any, n_random: int) -> float:
    """Two-sided chi-squared test that the sub-cluster ranks are uniform on {0..n} (docs/methods.md §5.4).

    Each percentile ``p`` becomes the rank ``p(n+1) - 1``; ranks are histogrammed into ``n+1`` bins
    and compared with the uniform expectation by ``scipy.stats.chisquare`` (df = n). It detects any
    departure from the null, in either direction. Half-integer ranks (from ``ties="mid"``) add half a
    count to each neighbouring bin.
    """
    ranks = _ranks_of(percentiles, n_random)
    observed = np.zeros(n_random + 1)
    low = np.floor(ranks).astype(int)
    frac = ranks - low
    np.add.at(observed, low, 1.0 - frac)
    high = np.minimum(low + 1, n_random)
    np.add.at(observed, high, frac)
    return float(scipy.stats.chisquare(observed).pvalue)


def fisher_combined(percentiles: Any, n_random: int) -> float:
    """One-sided Fisher combination of the sub-cluster percentiles (docs/methods.md §5.4 ``combine_ps``).

    The discrete percentiles are shifted by ``-1/(2(n+1))`` so that their null mean is 1/2, then
    combined by ``scipy.stats.combine_pvalues(method="fisher")`` (X^2 = -2 sum ln p ~ chi2 with 2m df).
    Small when the sub-clusters are collectively more extreme than random in the tested direction.
    """
    p = _as_percentiles(percentiles, n_random)
    shifted = p - 1.0 / (2.0 * (n_random + 1))
    return float(scipy.stats.combine_pvalues(shifted, method="fisher").pvalue)


def _as_percentiles(percentiles: Any, n_random: int) -> np.ndarray:
    if not isinstance(n_random, int | np.integer) or n_random < 1:
        raise ModularityError(f"n_random must be a positive integer, got {n_random!r}")
    p = np.asarray(percentiles, dtype=float).ravel()
    if p.size == 0:
        raise ModularityError("no percentiles to test (the network has no sub-clusters)")
    if not np.all(np.isfinite(p)):
        raise ModularityError("percentiles must be finite (drop NaN sub-clusters first)")
    lo = 1.0 / (n_random + 1)
    if np.any(p < lo - 1e-9) or np.any(p > 1 + 1e-9):
        raise ModularityError(f"percentiles must lie in [1/(n+1), 1] = [{lo:.4g}, 1] for n_random={n_random}")
    return p


def _ranks_of(percentiles: Any, n_random: int) -> np.ndarray:
    p = _as_percentiles(percentiles, n_random)
    ranks = p * (n_random + 1) - 1
    halves = np.round(2 * ranks)
    if np.any(np.abs(2 * ranks - halves) > 1e-6):
        raise ModularityError(
            f"percentiles are not rank p-values (r+1)/(n+1) for n_random={n_random} (wrong n_random?)"
        )
    return np.clip(halves / 2, 0, n_random)


# ----------------------------------------------------------------------------------------------------
# Per-lesion quantities
# ----------------------------------------------------------------------------------------------------


def balanced_accuracy(correct_counts: Any, class_sizes: Any) -> np.ndarray:
    """Mean over classes of per-class recall, ``mean_c count_c / size_c`` (float; leading batch dims kept)."""
    counts, sizes = _check_counts(correct_counts, class_sizes)
    return np.mean(counts / sizes, axis=-1)


def range_statistic(acc: Any, unlesioned_acc: Any) -> np.ndarray:
    """Class-specificity of a lesion's damage (docs/methods.md §5.2): ``max - min`` of ``delta / mean(delta)``.

    ``delta = acc - unlesioned_acc`` per class (last axis). Equal to ``(max d - min d) / |mean d|``,
    hence >= 0. Undefined (NaN) when the mean change is 0 and some class is unchanged (0/0), as in
    the reference; +-inf/huge values can appear when the float mean is 0 but no class is unchanged.
    """
    acc = np.asarray(acc, dtype=float)
    delta = acc - np.asarray(unlesioned_acc, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = delta / np.mean(delta, axis=-1, keepdims=True)
    return np.max(normalised, axis=-1) - np.min(normalised, axis=-1)


def _check_counts(correct_counts: Any, class_sizes: Any) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(correct_counts)
    sizes = np.asarray(class_sizes)
    if sizes.ndim != 1 or sizes.size == 0:
        raise ModularityError("class_sizes must be a non-empty 1-D array (test images per class)")
    if counts.shape[-1:] != sizes.shape:
        raise ModularityError(f"counts have {counts.shape[-1:]} classes on the last axis, class_sizes {sizes.shape}")
    if not (np.issubdtype(counts.dtype, np.integer) and np.issubdtype(sizes.dtype, np.integer)):
        raise ModularityError("correct-prediction counts and class sizes must be integers")
    if np.any(sizes <= 0):
        raise ModularityError("every class needs at least one test image (class_sizes > 0)")
    if np.any(counts < 0) or np.any(counts > sizes):
        raise ModularityError("correct-prediction counts must lie in [0, class size]")
    return counts.astype(np.int64), sizes.astype(np.int64)


def _exact_balanced(counts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Balanced accuracy times ``C * L`` (L = lcm of class sizes) as exact integers: order-preserving."""
    lcm = math.lcm(*(int(s) for s in sizes))
    weights = [lcm // int(s) for s in sizes]
    if lcm * int(sizes.max()) * len(sizes) < 2**62:
        return counts @ np.asarray(weights, dtype=np.int64)
    # Python integers never overflow (object arrays); only for unusually varied class sizes.
    return counts.astype(object) @ np.asarray(weights, dtype=object)


def _exact_range(counts: np.ndarray, unlesioned: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """:func:`range_statistic` as exact ``Fraction`` objects (object array).

    A zero mean change makes the statistic undefined: NaN (the reference's float gives NaN whenever
    its mean is exactly 0 and a class is unchanged, and rounding noise otherwise).
    """
    lcm = math.lcm(*(int(s) for s in sizes))
    weights = np.asarray([lcm // int(s) for s in sizes], dtype=object)
    delta = (counts - unlesioned).astype(object) * weights  # exact integers, scaled by lcm
    spread = delta.max(axis=-1) - delta.min(axis=-1)
    total = delta.sum(axis=-1)
    n_classes = len(sizes)
    out = np.empty(spread.shape, dtype=object)
    for idx in np.ndindex(spread.shape):
        s, t = int(spread[idx]), int(total[idx])
        out[idx] = Fraction(n_classes * s, abs(t)) if t != 0 else math.nan
    return out


# ----------------------------------------------------------------------------------------------------
# Effect sizes
# ----------------------------------------------------------------------------------------------------


def reference_effect(true: Any, random: Any, positive_only: bool = False) -> float:
    """The reference's effect factor: mean over sub-clusters of ``mean_r(random) / true`` (nanmean).

    ``positive_only`` restricts it to sub-clusters with ``true > 0`` (the Lucid version, docs/methods.md §6.2).
    Heavy-tailed (a mean of ratios; docs/methods.md §9.12): keep it only to compare with the stored CSVs.
    """
    t = np.asarray(true, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.mean(np.asarray(random, dtype=float), axis=0) / t
    if positive_only:
        ratio = ratio[t > 0]
    finite_or_inf = ratio[~np.isnan(ratio)]
    return float(np.mean(finite_or_inf)) if finite_or_inf.size else math.nan


def log_ratio_effect(
    true: Any,
    random: Any,
    seed: int = 0,
    key: str = "effect",
    center: Literal["mean", "median"] = "mean",
    n_boot: int = 2000,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Robust effect size: the median over sub-clusters of ``log(center_r(random) / true)``.

    ``center="median"`` takes the median over draws, ignoring undefined (NaN) draws.
    Returns ``{"log_effect": median, "ci_low": ..., "ci_high": ..., "n": sub-clusters used}``, the
    interval a percentile bootstrap over sub-clusters (``scipy.stats.bootstrap``, seeded through
    :func:`modularity.utils.rng_for` with ``key``). Sub-clusters whose ratio is undefined (0/0 or
    NaN) are dropped; +-inf ratios are kept (the median is robust to a few). ``exp(log_effect)`` is
    a typical "random / true" factor: > 1 means the random values are larger.
    """
    t = np.asarray(true, dtype=float)
    r = np.asarray(random, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = np.mean(r, axis=0) if center == "mean" else _nanmedian(r)
        logs = np.log(centre) - np.log(t)
    logs = logs[~np.isnan(logs)]
    out = {"log_effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": int(logs.size)}
    if logs.size == 0:
        return out
    out["log_effect"] = float(np.median(logs))
    if logs.size >= 2 and np.unique(logs).size > 1:
        with np.errstate(invalid="ignore"):  # +-inf log-ratios make scipy's standard error NaN; unused
            res = scipy.stats.bootstrap(
                (logs,), np.median, n_resamples=n_boot, confidence_level=confidence, method="percentile",
                vectorized=True, random_state=rng_for(seed, "stats", key),
            )
        out["ci_low"], out["ci_high"] = float(res.confidence_interval.low), float(res.confidence_interval.high)
    else:  # all values equal (or a single sub-cluster): no spread to resample
        out["ci_low"] = out["ci_high"] = out["log_effect"] if logs.size >= 2 else math.nan
    return out


# ----------------------------------------------------------------------------------------------------
# Network summaries
# ----------------------------------------------------------------------------------------------------


def lesion_summary(
    unlesioned: Any,
    true: Any,
    random: Any,
    class_sizes: Any,
    ties: Ties = "strict",
    arithmetic: Literal["exact", "float"] = "exact",
    correction: str = "holm",
    alpha: float = 0.05,
    seed: int = 0,
    n_boot: int = 2000,
    undefined_ranges: UndefinedRanges = "as_ties",
) -> dict[str, Any]:
    """Importance and output-coherence statistics of one network from correct-prediction counts.

    Inputs (integers): ``unlesioned`` (classes,), ``true`` (subclusters, classes), ``random``
    (draws, subclusters, classes), ``class_sizes`` (classes,). ``arithmetic="exact"`` compares
    balanced accuracies and ranges as exact rationals, so ties are found exactly; ``"float"``
    mimics the reference (float64 ``counts/size`` and ``<``), where ties fall by rounding.
    ``undefined_ranges`` decides how undefined ranges enter the range tests (module docstring); with a
    rule other than the default, ``undefined_ranges`` and ``n_undefined_ranges`` (sub-clusters whose
    true range is undefined) are added to the network-level keys; ``undefined_range`` (S,) is always there.

    Network-level keys (docs/methods.md §5.4): ``chi2_p_means``, ``combined_p_means``, ``chi2_p_ranges``,
    ``combined_p_ranges``, ``effect_means``, ``effect_ranges`` (reference effect factors),
    ``log_effect_means`` / ``log_effect_ranges`` with ``*_ci`` (low, high) bootstrap intervals
    (median over sub-clusters of log(mean random balanced accuracy / true), and of
    log(median random range / true range): the median over draws because random ranges can be inf),
    and the parameters ``n_random``, ``n_subclusters``, ``ties``, ``arithmetic``, ``correction``,
    ``alpha``, ``seed``, ``unlesioned_balanced_acc``, ``unlesioned_overall_acc``.

    Per-sub-cluster arrays (length S): ``p_means`` (left-sided, balanced accuracy), ``p_ranges``
    (right-sided, range), ``p_overall`` (left-sided, overall accuracy: the docs/methods.md §5.5 test),
    ``p_means_upper`` / ``p_overall_upper`` (the opposite tails: "less damaging than random"), their
    ``*_corrected`` versions (``correction`` across the network's sub-clusters), ``true_mean_acc``,
    ``random_mean_acc`` (mean over draws), ``true_overall_acc``, ``random_overall_acc``, ``diff_overall``
    (overall-accuracy change of the true lesion), ``true_range``, ``random_range_median``,
    ``n_ties_means`` / ``n_ties_ranges`` (draws tying the true value exactly; NaN never ties) and ``degenerate`` (every random
    draw equals the true lesion, e.g. a whole-layer sub-cluster; excluded from the correction, whose
    p-values are NaN for them). Full draws: ``random_mean_acc_draws`` (n, S).
    """
    sizes = np.asarray(class_sizes)
    unl, sizes = _check_counts(unlesioned, sizes)
    tru, _ = _check_counts(true, sizes)
    rnd, _ = _check_counts(random, sizes)
    _check_choice("arithmetic", arithmetic, ("exact", "float"))
    if unl.ndim != 1 or tru.ndim != 2 or rnd.ndim != 3 or rnd.shape[1:] != tru.shape:
        raise ModularityError(
            "lesion_summary expects unlesioned (classes,), true (subclusters, classes), random (draws, "
            f"subclusters, classes); got {unl.shape}, {tru.shape}, {rnd.shape}"
        )
    n_random, n_sub = rnd.shape[0], tru.shape[0]
    if n_sub == 0 or n_random == 0:
        raise ModularityError("lesion_summary needs at least one sub-cluster and one random draw")

    acc_unl, acc_true, acc_rand = unl / sizes, tru / sizes, rnd / sizes
    mean_true, mean_rand = acc_true.mean(-1), acc_rand.mean(-1)
    range_true = range_statistic(acc_true, acc_unl)
    range_rand = range_statistic(acc_rand, acc_unl)
    overall_true, overall_rand = tru.sum(-1) / sizes.sum(), rnd.sum(-1) / sizes.sum()

    if arithmetic == "exact":
        cmp_mean_t, cmp_mean_r = _exact_balanced(tru, sizes), _exact_balanced(rnd, sizes)
        cmp_range_t, cmp_range_r = _exact_range(tru, unl, sizes), _exact_range(rnd, unl, sizes)
        cmp_over_t, cmp_over_r = tru.sum(-1), rnd.sum(-1)
    else:
        cmp_mean_t, cmp_mean_r = mean_true, mean_rand
        cmp_range_t, cmp_range_r = range_true, range_rand
        cmp_over_t, cmp_over_r = overall_true, overall_rand

    p_means = rank_pvalue(cmp_mean_t, cmp_mean_r, "left", ties)
    _check_choice("undefined_ranges", undefined_ranges, UNDEFINED_RANGE_RULES)
    undefined_true = _is_undefined(cmp_range_t)
    if undefined_ranges == "as_ties":
        p_ranges = rank_pvalue(cmp_range_t, cmp_range_r, "right", ties)
    else:
        p_ranges = _range_pvalue_undefined_half(cmp_range_t, cmp_range_r, ties)
        if undefined_ranges == "exclude":
            p_ranges = np.where(undefined_true, np.nan, p_ranges)
    p_overall = rank_pvalue(cmp_over_t, cmp_over_r, "left", ties)
    p_means_upper = rank_pvalue(cmp_mean_t, cmp_mean_r, "right", ties)
    p_overall_upper = rank_pvalue(cmp_over_t, cmp_over_r, "right", ties)
    degenerate = np.all(rnd == tru[None], axis=(0, 2))
    n_ties = np.sum(np.asarray(cmp_mean_r == cmp_mean_t, dtype=bool), axis=0)
    n_ties_ranges = np.sum(np.asarray(cmp_range_r == cmp_range_t, dtype=bool), axis=0)

    out: dict[str, Any] = {
        "n_random": n_random, "n_subclusters": n_sub, "ties": ties, "arithmetic": arithmetic,
        "correction": correction, "alpha": alpha, "seed": seed,
        "unlesioned_balanced_acc": float(acc_unl.mean()), "unlesioned_overall_acc": float(unl.sum() / sizes.sum()),
        "chi2_p_means": chi2_uniformity(p_means, n_random),
        "combined_p_means": fisher_combined(p_means, n_random),
        "chi2_p_ranges": _nan_if_empty(chi2_uniformity, p_ranges, n_random),
        "combined_p_ranges": _nan_if_empty(fisher_combined, p_ranges, n_random),
        "effect_means": reference_effect(mean_true, mean_rand),
        "effect_ranges": reference_effect(range_true, range_rand),
    }
    if undefined_ranges != "as_ties":  # only then: the default summary keeps its keys (stored results)
        out["undefined_ranges"], out["n_undefined_ranges"] = undefined_ranges, int(np.sum(undefined_true))
    eff_m = log_ratio_effect(mean_true, mean_rand, seed, "lesion_means", "mean", n_boot)
    eff_r = log_ratio_effect(range_true, range_rand, seed, "lesion_ranges", "median", n_boot)
    out["log_effect_means"], out["log_effect_means_ci"] = eff_m["log_effect"], (eff_m["ci_low"], eff_m["ci_high"])
    out["log_effect_ranges"], out["log_effect_ranges_ci"] = eff_r["log_effect"], (eff_r["ci_low"], eff_r["ci_high"])

    per = {
        "p_means": p_means, "p_ranges": p_ranges, "p_overall": p_overall,
        "p_means_upper": p_means_upper, "p_overall_upper": p_overall_upper,
    }
    for name, p in per.items():
        out[name] = p
        masked = np.where(degenerate, np.nan, p)
        out[f"{name}_corrected"] = correct(masked, correction, alpha)[1]
    out.update(
        true_mean_acc=mean_true, random_mean_acc=mean_rand.mean(0), random_mean_acc_draws=mean_rand,
        true_overall_acc=overall_true, random_overall_acc=overall_rand.mean(0),
        diff_overall=overall_true - unl.sum() / sizes.sum(),
        true_range=range_true, random_range_median=_nanmedian(range_rand),
        n_ties_means=n_ties, n_ties_ranges=n_ties_ranges, degenerate=degenerate, undefined_range=undefined_true,
    )
    return out


def _is_undefined(values: np.ndarray) -> np.ndarray:
    """NaN test that also works on object arrays of ``Fraction`` (NaN is the only value != itself)."""
    v = np.asarray(values)
    return np.asarray([x != x for x in v.ravel()], dtype=bool).reshape(v.shape)


def _range_pvalue_undefined_half(true: np.ndarray, random: np.ndarray, ties: Ties) -> np.ndarray:
    """Right-sided rank p-value where a pair with an undefined (NaN) side counts half, exact ties per ``ties``."""
    t, r = np.asarray(true), np.asarray(random)
    undefined = _is_undefined(r) | _is_undefined(t)[None]
    with np.errstate(invalid="ignore"):
        more = np.asarray(r > t, dtype=bool) & ~undefined
        less = np.asarray(r < t, dtype=bool) & ~undefined
    exact_ties = ~(more | less | undefined)
    weight = {"strict": 0.0, "mid": 0.5, "conservative": 1.0}[ties]
    rank = np.sum(more, axis=0) + weight * np.sum(exact_ties, axis=0) + 0.5 * np.sum(undefined, axis=0)
    return (rank + 1.0) / (r.shape[0] + 1.0)


def _nan_if_empty(test: Any, pvalues: np.ndarray, n_random: int) -> float:
    """``test`` on the defined p-values (NaN ones left out); NaN when none is left."""
    p = np.asarray(pvalues, dtype=float)
    p = p[~np.isnan(p)]
    return test(p, n_random) if p.size else math.nan


def coherence_summary(
    true_values: Any,
    random_values: Any,
    side: Side,
    ties: Ties = "strict",
    correction: str = "holm",
    alpha: float = 0.05,
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Input-coherence statistics (docs/methods.md §6.2) for one statistic of feature visualisations.

    ``true_values`` (S,), ``random_values`` (n, S) with n = 9 in the reference. Use ``side="right"``
    for the activation reached ("loss": higher = more coherent) and ``side="left"`` for the output
    entropy (lower = more confidently one class). Returns ``percentiles`` (S,), their corrected
    versions ``percentiles_corrected``, ``chi2_p``, ``combined_p``, ``effect_factor`` (the reference's
    mean over sub-clusters with true > 0 of mean(random)/true) and ``log_effect`` with ``log_effect_ci``
    (median log(mean random / true), bootstrap interval), plus ``n_random``, ``n_subclusters``, ``side``,
    ``ties``, ``correction``, ``alpha``, ``seed``.
    """
    t = np.asarray(true_values, dtype=float)
    r = np.asarray(random_values, dtype=float)
    if t.ndim != 1 or r.ndim != 2 or r.shape[1] != t.shape[0] or t.size == 0 or r.shape[0] == 0:
        raise ModularityError(
            f"coherence_summary expects true (S,) and random (n, S) with S, n >= 1; got {t.shape}, {r.shape}"
        )
    n_random = r.shape[0]
    p = rank_pvalue(t, r, side, ties)
    eff = log_ratio_effect(t, r, seed, f"coherence_{side}", "mean", n_boot)
    return {
        "n_random": n_random, "n_subclusters": t.size, "side": side, "ties": ties,
        "correction": correction, "alpha": alpha, "seed": seed,
        "percentiles": p, "percentiles_corrected": correct(p, correction, alpha)[1],
        "chi2_p": chi2_uniformity(p, n_random), "combined_p": fisher_combined(p, n_random),
        "effect_factor": reference_effect(t, r, positive_only=True),
        "log_effect": eff["log_effect"], "log_effect_ci": (eff["ci_low"], eff["ci_high"]),
    }


# ----------------------------------------------------------------------------------------------------
# Multiple comparisons and the taxonomy
# ----------------------------------------------------------------------------------------------------


def correct(pvalues: Any, method: str = "holm", alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Multiple-comparison correction by ``statsmodels.stats.multitest.multipletests``.

    Returns ``(reject, p_corrected)`` with the input's shape, like statsmodels. NaN p-values (e.g.
    sub-clusters with no random alternative) are left out of the family and stay NaN / not rejected.
    Use it across the sub-clusters of one network and across the networks of a table.
    """
    _check_choice("method", method, CORRECTION_METHODS)
    if not 0 < alpha < 1:
        raise ModularityError(f"alpha must be in (0, 1), got {alpha}")
    p = np.asarray(pvalues, dtype=float)
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ModularityError("p-values must lie in [0, 1]")
    reject = np.zeros(p.shape, dtype=bool)
    corrected = np.full(p.shape, np.nan)
    if finite.any():
        rej, pc = _multipletests(p[finite], alpha, method)
        reject[finite], corrected[finite] = rej, pc
    return reject, corrected


def correct_columns(
    frame: pd.DataFrame, columns: Sequence[str], method: str = "holm", alpha: float = 0.05
) -> pd.DataFrame:
    """A copy of ``frame`` with ``<column>_corrected`` added for each p-value column.

    Each column is one family (e.g. ``combined_p_means`` over the networks of a table); the method is
    recorded in a ``correction`` column so the table carries the parameters that made it.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ModularityError(f"no p-value column(s) {', '.join(missing)} in the table")
    out = frame.copy()
    for column in columns:
        out[f"{column}_corrected"] = correct(out[column].to_numpy(dtype=float), method, alpha)[1]
    out["correction"] = method
    return out


def _multipletests(p: np.ndarray, alpha: float, method: str) -> tuple[np.ndarray, np.ndarray]:
    """statsmodels' ``multipletests``; its Holm branch runs ``gc.collect()`` (0.2 s with torch loaded),
    so existing objects are frozen out of that collection (``gc.freeze``) for the call."""
    gc.freeze()
    try:
        reject, corrected, _, _ = multipletests(p, alpha=alpha, method=method)
    finally:
        gc.unfreeze()
    return reject, corrected


def min_draws_for_significance(
    n_tests: int, alpha: float = 0.05, method: str = "holm", n_significant: int = 1
) -> int:
    """Smallest number of random draws ``n`` for which corrected significance is reachable.

    With ``n`` draws the best possible rank p-value is ``1/(n+1)``. This returns the smallest ``n``
    such that ``n_significant`` sub-clusters at that best p-value (the other tests at p = 1) are
    rejected by ``multipletests(method)`` among ``n_tests``. For Holm / Bonferroni and one
    significant test that is ``ceil(n_tests/alpha) - 1``: 559 for 28 sub-clusters at 0.05.
    """
    if n_tests < 1 or not 1 <= n_significant <= n_tests:
        raise ModularityError("need n_tests >= 1 and 1 <= n_significant <= n_tests")

    def reachable(n: int) -> bool:
        p = np.ones(n_tests)
        p[:n_significant] = 1.0 / (n + 1)
        return bool(np.all(correct(p, method, alpha)[0][:n_significant]))

    if reachable(1):
        return 1
    lo, hi = 1, 2  # invariant: not reachable(lo)
    while not reachable(hi):
        lo, hi = hi, hi * 2
        if hi > 2**40:
            raise ModularityError(f"corrected significance is unreachable with {method} at alpha={alpha}")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reachable(mid) else (mid, hi)
    return hi


def categorize(
    p_corrected: Any,
    diff: Any,
    is_whole_layer: Any,
    size: Any,
    n_random: int,
    p_upper_corrected: Any = None,
    alpha: float = 0.05,
    threshold: float = 0.01,
    small_size: int = 12,
    rule: Literal["corrected", "reference"] = "corrected",
) -> np.ndarray:
    """The docs/methods.md §5.5 taxonomy of sub-clusters; returns an array of category names (``CATEGORIES``).

    ``diff`` is the change of *overall* accuracy caused by the true lesion (negative = damage);
    "diff" below means ``diff <= -threshold`` (1 percentage point by default, compared with a 1e-12
    tolerance so that exact count differences such as 100/10000 are not lost to rounding). The first
    matching category wins: ``complete`` (whole layer), ``small`` (size <= small_size), ``important``
    (sig and diff), ``prunable`` (bottom and not diff), ``least_important`` (bottom and diff),
    ``sig-but-not-diff``, ``diff-but-not-sig``, ``other``.

    ``rule="corrected"`` (default): "sig" means the corrected left-sided p-value ``p_corrected`` is
    <= ``alpha``; "bottom" (the reference's ``p == 1``, i.e. no random lesion was less damaging)
    becomes its mirror image: the corrected *right*-sided p-value ``p_upper_corrected`` is <= alpha
    (the sub-cluster is significantly *less* damaging than random). A literal "corrected p == 1"
    would be meaningless because correction pushes most p-values to 1.
    ``rule="reference"``: raw p-values as in the reference: "sig" is ``p < 1/n_random`` (no random
    draw at least as damaging) and "bottom" is ``p == 1``; ``p_upper_corrected`` is ignored.
    """
    _check_choice("rule", rule, ("corrected", "reference"))
    p = np.asarray(p_corrected, dtype=float)
    d = np.broadcast_to(np.asarray(diff, dtype=float), p.shape)
    whole = np.broadcast_to(np.asarray(is_whole_layer, dtype=bool), p.shape)
    n = np.broadcast_to(np.asarray(size), p.shape)
    if rule == "corrected":
        if p_upper_corrected is None:
            raise ModularityError("categorize(rule='corrected') needs p_upper_corrected (the right-sided test)")
        q = np.broadcast_to(np.asarray(p_upper_corrected, dtype=float), p.shape)
        sig, bottom = p <= alpha, q <= alpha
    else:
        sig, bottom = p < 1.0 / n_random, np.isclose(p, 1.0)
    is_diff = d <= -threshold + 1e-12
    conditions = [
        whole, n <= small_size, sig & is_diff, bottom & ~is_diff, bottom & is_diff, sig & ~is_diff,
        ~sig & is_diff,
    ]
    return np.select(conditions, list(CATEGORIES[:-1]), default=CATEGORIES[-1]).astype(object)


# ----------------------------------------------------------------------------------------------------
# Tidy tables
# ----------------------------------------------------------------------------------------------------

_PER_SUBCLUSTER_KEYS = (
    "true_mean_acc", "random_mean_acc", "true_overall_acc", "random_overall_acc", "diff_overall",
    "true_range", "random_range_median", "p_means", "p_means_corrected", "p_ranges", "p_ranges_corrected",
    "p_overall", "p_overall_corrected", "p_means_upper", "p_means_upper_corrected", "p_overall_upper",
    "p_overall_upper_corrected", "n_ties_means", "n_ties_ranges", "degenerate",
)
_NETWORK_KEYS = (
    "n_subclusters", "n_random", "ties", "arithmetic", "correction", "alpha", "seed",
    "unlesioned_balanced_acc", "unlesioned_overall_acc", "chi2_p_means", "combined_p_means",
    "chi2_p_ranges", "combined_p_ranges", "effect_means", "effect_ranges", "log_effect_means",
    "log_effect_ranges",
)


def summary_frames(
    summary: dict[str, Any], subclusters: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn a :func:`lesion_summary` dict into tidy tables: (one row per sub-cluster, one network row).

    ``subclusters`` (optional, one row per sub-cluster in the same order, e.g. layer/cluster/size) is
    prepended to the per-sub-cluster table. Column names are the summary's keys; the network row adds
    ``*_ci_low`` / ``*_ci_high`` for the bootstrap intervals.
    """
    per = pd.DataFrame({k: np.asarray(summary[k]) for k in _PER_SUBCLUSTER_KEYS})
    if subclusters is not None:
        if len(subclusters) != len(per):
            raise ModularityError(f"{len(subclusters)} sub-cluster rows for {len(per)} summarised sub-clusters")
        per = pd.concat([subclusters.reset_index(drop=True), per], axis=1)
    net = {k: summary[k] for k in _NETWORK_KEYS}
    for key in ("log_effect_means", "log_effect_ranges"):
        net[f"{key}_ci_low"], net[f"{key}_ci_high"] = summary[f"{key}_ci"]
    return per, pd.DataFrame([net])


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ModularityError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _nanmedian(values: np.ndarray) -> np.ndarray:
    """Median over draws (axis 0) ignoring undefined (NaN) values; NaN where all are undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        return np.nanmedian(values, axis=0)


def _dtype_of(values: Any) -> Any:
    """Keep exact objects (Fractions, Python ints) as object arrays; everything else as NumPy numbers."""
    arr = np.asarray(values)
    return object if arr.dtype == object else None
