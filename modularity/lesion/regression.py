"""The lesion test of regression networks (POLY): per-term test MSE instead of per-class accuracy.

What is tested, and the two directions of the mean test (``direction="paper"``, the default: a lesion
matters when it *raises* the MSE more than random same-size lesions; ``"reference"``: the reference
code's inverted test, docs/methods.md §9.11), are described in :mod:`modularity.poly`. A lesion is the
one of :mod:`modularity.lesion.definition` (post-activation values zeroed): for a flat
``nn.Sequential`` the intact prefix up to the lesion point runs once per batch and only the rest per
lesion; other models go through :func:`modularity.lesion.lesioned_logits` (a forward hook). The
statistics reuse :mod:`modularity.stats` (rank p-values, chi-square and Fisher tests, effect sizes,
correction); :func:`modularity.importance.importance` dispatches here for float (N, outputs) targets,
so classification never takes this path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ModularityError
from ..poly import N_OUTPUTS, N_TERMS, per_output_mse, per_term_mse, term_membership

DIRECTIONS = ("paper", "reference")
#: Columns of the per-sub-cluster table of :func:`regression_importance`, in order.
COLUMNS = (
    "layer", "cluster", "size", "layer_width", "proportion", "n_eligible",
    "unlesioned_mse", "lesioned_mse", "random_mse_mean", "mse_increase", "random_mse_increase_mean",
    "p_mean", "p_mean_corrected", "p_range", "p_range_corrected", "n_ties_mean", "lesioned_range",
    "random_range_median", "category", "tested", "n_random", "seed", "correction", "ties", "direction",
)

# --------------------------------------------------------------------------------------------------
# Lesions


def _outputs_with_lesions(model: nn.Module, layer: str, sets: Sequence[np.ndarray], x: torch.Tensor,
                          y: torch.Tensor, batch_size: int = 8192) -> np.ndarray:
    """Per-output test MSE (M, outputs) with each unit set of ``layer`` lesioned (post-activation zeroed).

    A flat ``nn.Sequential`` is cut at the lesion point (:func:`modularity.lesion.lesion_point`): the
    intact prefix runs once per batch and only the rest per lesion. Other models use
    :func:`modularity.lesion.lesioned_logits` (a forward hook). An empty set is the intact network.
    """
    from ..arch import is_flat_sequential, layer_by_name
    from .definition import check_lesionable, lesion_point, lesioned_logits

    spec = layer_by_name(model, layer)
    check_lesionable(spec)
    p = next(model.parameters())
    names = [n for n, _ in model.named_children()]
    point = lesion_point(spec)
    split = names.index(point) + 1 if is_flat_sequential(model) and point in names else None
    children = list(model.children())
    sse = torch.zeros(len(sets), y.shape[1], dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                xb = x[i:i + batch_size].to(device=p.device, dtype=p.dtype)
                yb = y[i:i + batch_size].to(device=p.device, dtype=torch.float64)
                h = nn.Sequential(*children[:split])(xb) if split is not None else None
                for m, units in enumerate(sets):
                    mask = torch.zeros(spec.width, dtype=torch.bool, device=p.device)
                    mask[torch.from_numpy(np.array(units, dtype=np.int64)).to(p.device)] = True
                    if h is not None:
                        keep = ~mask.view(1, -1, *([1] * (h.ndim - 2)))
                        out = nn.Sequential(*children[split:])(torch.where(keep, h, torch.zeros((), dtype=h.dtype)))
                    else:
                        out = lesioned_logits(model, spec, xb, mask)
                    sse[m] += ((out.double() - yb) ** 2).sum(0).cpu()
    finally:
        model.train(was_training)
    return (sse / len(x)).numpy()


def lesion_term_mse(model: nn.Module, layer: str, lesions: Sequence[Any], x: Any, y: Any,
                    membership: np.ndarray | None = None) -> np.ndarray:
    """Per-term test MSE (M, terms) of the network with each lesion (unit indices of ``layer``) applied."""
    from ..arch import layer_by_name
    from .engine import as_unit_sets

    x, y = _check_regression_data(model, x, y)
    sets = as_unit_sets(lesions, layer_by_name(model, layer).width)
    return per_term_mse(_outputs_with_lesions(model, layer, sets, x, y), membership)


def _check_regression_data(model: nn.Module, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    from .. import validate

    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if not (x.dtype.is_floating_point and y.dtype.is_floating_point) or y.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ModularityError(f"regression data must be float inputs (N, ...) and float targets (N, outputs), got "
                              f"{tuple(x.shape)} {x.dtype} and {tuple(y.shape)} {y.dtype}")
    validate.finite_model(model)
    validate.finite_images(x)
    if not bool(torch.isfinite(y).all()):
        raise ModularityError("regression targets contain NaN or infinite values")
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(x[:1].to(device=p.device, dtype=p.dtype))
    except RuntimeError as exc:
        raise ModularityError(f"inputs of shape {tuple(x.shape[1:])} do not fit the model: {str(exc).splitlines()[0]}") from None
    finally:
        model.train(was_training)
    if out.ndim != 2 or out.shape[1] != y.shape[1]:
        raise ModularityError(f"the model has {tuple(out.shape[1:])} outputs, the targets {y.shape[1]}")
    return x.to(torch.float32), y.to(torch.float32)


# --------------------------------------------------------------------------------------------------
# Statistics


def regression_summary(unlesioned: Any, true: Any, random: Any, direction: str = "paper", ties: str = "strict",
                       correction: str = "holm", alpha: float = 0.05, seed: int = 0, n_boot: int = 2000
                       ) -> dict[str, Any]:
    """Importance and output-coherence statistics of one regression network from per-term MSEs.

    Inputs (float): ``unlesioned`` (terms,), ``true`` (subclusters, terms), ``random`` (draws, subclusters,
    terms). Keys as :func:`modularity.stats.lesion_summary` (``chi2_p_means``, ``combined_p_means``,
    ``effect_means``, ``log_effect_means`` (+ ``_ci``), the same for ``ranges``; per sub-cluster
    ``p_means``, ``p_ranges``, their ``*_corrected``, ``true_mean_mse``, ``random_mean_mse``,
    ``true_range``, ``random_range_median``, ``n_ties_means``, ``degenerate``), with ``direction``
    deciding the side of the mean test and the orientation of the mean effect (module docstring). The
    MSEs are compared as float64 values, as the reference did (``arithmetic`` = "float").
    ``log_effect_means`` > 0 means "more damaging than random" under ``"paper"``; under ``"reference"``
    it is the reference's orientation, log(random / true).
    """
    from .. import stats, validate

    validate.choice(direction, DIRECTIONS, "direction")
    unl, tru, rnd = (np.asarray(a, dtype=np.float64) for a in (unlesioned, true, random))
    if unl.ndim != 1 or tru.ndim != 2 or rnd.ndim != 3 or rnd.shape[1:] != tru.shape or tru.shape[1] != unl.size:
        raise ModularityError("regression_summary expects unlesioned (terms,), true (subclusters, terms), random "
                              f"(draws, subclusters, terms); got {unl.shape}, {tru.shape}, {rnd.shape}")
    n_random, n_sub = rnd.shape[0], tru.shape[0]
    if n_sub == 0 or n_random == 0:
        raise ModularityError("regression_summary needs at least one sub-cluster and one random draw")
    mean_true, mean_rand = tru.mean(-1), rnd.mean(-1)
    range_true, range_rand = stats.range_statistic(tru, unl), stats.range_statistic(rnd, unl)
    side = "right" if direction == "paper" else "left"
    p_means = stats.rank_pvalue(mean_true, mean_rand, side, ties)  # type: ignore[arg-type]
    p_ranges = stats.rank_pvalue(range_true, range_rand, "right", ties)  # type: ignore[arg-type]
    degenerate = np.all(rnd == tru[None], axis=(0, 2))
    eff = stats.log_ratio_effect(mean_true, mean_rand, seed, "regression_means", "mean", n_boot)
    eff_r = stats.log_ratio_effect(range_true, range_rand, seed, "lesion_ranges", "median", n_boot)
    if direction == "paper":  # true / random: > 1 (log > 0) when the true lesion raises the MSE more
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = mean_true / mean_rand.mean(0)
        effect_means = float(np.mean(ratio[~np.isnan(ratio)])) if np.any(~np.isnan(ratio)) else math.nan
        log_eff, ci = -eff["log_effect"], (-eff["ci_high"], -eff["ci_low"])
    else:
        effect_means = stats.reference_effect(mean_true, mean_rand)
        log_eff, ci = eff["log_effect"], (eff["ci_low"], eff["ci_high"])
    out: dict[str, Any] = {
        "n_random": n_random, "n_subclusters": n_sub, "ties": ties, "correction": correction, "alpha": alpha,
        "seed": seed, "direction": direction, "arithmetic": "float", "unlesioned_mse": float(unl.mean()),
        "chi2_p_means": stats.chi2_uniformity(p_means, n_random),
        "combined_p_means": stats.fisher_combined(p_means, n_random),
        "chi2_p_ranges": stats._nan_if_empty(stats.chi2_uniformity, p_ranges, n_random),
        "combined_p_ranges": stats._nan_if_empty(stats.fisher_combined, p_ranges, n_random),
        "effect_means": effect_means, "effect_ranges": stats.reference_effect(range_true, range_rand),
        "log_effect_means": log_eff, "log_effect_means_ci": ci,
        "log_effect_ranges": eff_r["log_effect"], "log_effect_ranges_ci": (eff_r["ci_low"], eff_r["ci_high"]),
    }
    for name, p in (("p_means", p_means), ("p_ranges", p_ranges)):
        out[name] = p
        out[f"{name}_corrected"] = stats.correct(np.where(degenerate, np.nan, p), correction, alpha)[1]
    out.update(true_mean_mse=mean_true, random_mean_mse=mean_rand.mean(0), random_mean_mse_draws=mean_rand,
               true_range=range_true, random_range_median=stats._nanmedian(range_rand),
               n_ties_means=np.sum(mean_rand == mean_true[None], axis=0), degenerate=degenerate)
    return out


# --------------------------------------------------------------------------------------------------
# The lesion test


def regression_importance(model: nn.Module, subclusters: Sequence[Any], data: Any, n_random: int | None = None,
                          seed: int = 0, correction: str = "holm", *, direction: str = "paper",
                          ties: str = "strict", alpha: float = 0.05, exclude_isolated: Any = True,
                          complete: str = "skip", require_above_chance: bool = True, progress: bool = False,
                          membership: np.ndarray | None = None) -> Any:
    """Lesion test of a regression network's sub-clusters on the per-term MSE (module docstring).

    Arguments as :func:`modularity.importance.importance` (``data`` = float inputs and float targets
    (N, outputs)), plus ``direction`` (:data:`DIRECTIONS`) and ``membership`` (terms x outputs boolean;
    default the 9 POLY terms over 512 outputs). ``require_above_chance``: refuse a network whose intact
    test MSE is not below that of predicting each output's test mean (it has learnt nothing).

    Returns an :class:`~modularity.results.ImportanceResult`: ``table`` has the columns :data:`COLUMNS`
    (MSE averaged over the terms), ``summary`` the network-level keys of :func:`regression_summary`
    plus ``n_subclusters``, ``n_complete``, ``complete``, ``tie_rule``, ``exclude_isolated``, ``n_test``,
    ``n_outputs``, ``n_terms``, ``seconds`` and ``counts`` (raw per-term MSEs ``unlesioned`` (T,),
    ``true`` (S, T), ``random`` (n, S, T)).
    """
    from .. import validate
    from ..importance import COMPLETE_MODES, _check_subclusters, _default_n_random, _test_split
    from ..results import ImportanceResult
    from ..subclusters import lesion_draws

    n_random = _default_n_random() if n_random is None else n_random
    if not isinstance(n_random, (int, np.integer)) or isinstance(n_random, bool) or n_random < 1:
        raise ModularityError(f"n_random must be a positive integer, got {n_random!r}")
    validate.importance_options(correction, ties, seed, alpha)
    validate.choice(direction, DIRECTIONS, "direction")
    validate.choice(complete, COMPLETE_MODES, "complete")
    subs = list(subclusters)
    _check_subclusters(model, subs)
    x, y = _check_regression_data(model, *_test_split(data))
    groups = term_membership() if membership is None else np.asarray(membership, dtype=bool)
    if groups.ndim != 2 or groups.shape[1] != y.shape[1]:
        raise ModularityError(f"the term membership {groups.shape} does not fit the {y.shape[1]} outputs "
                              f"(default: the POLY terms, {N_TERMS} x {N_OUTPUTS})")
    t0 = time.perf_counter()
    whole, tested, draws = lesion_draws(subs, n_random, seed, exclude_isolated, complete)

    layer0 = subs[0].layer
    unl = per_term_mse(_outputs_with_lesions(model, layer0, [np.zeros(0, dtype=np.int64)], x, y)[0], groups)
    if require_above_chance:
        baseline = per_term_mse(per_output_mse(y.mean(0, keepdim=True).expand_as(y), y), groups).mean()
        if not unl.mean() < baseline:
            raise ModularityError(f"the intact {type(model).__name__} has test MSE {unl.mean():.4g}, not below the "
                                  f"{baseline:.4g} of predicting the mean: its lesion tests would measure noise "
                                  "(require_above_chance=False, --allow-chance: run anyway)")
    n_terms = groups.shape[0]
    true = np.zeros((len(subs), n_terms))
    rand = np.zeros((int(n_random), len(subs), n_terms))
    from ..progress import bar

    lesions = bar(desc="lesions", total=sum(1 + (d is not None) * int(n_random) for d in draws), unit="lesion")
    for layer in dict.fromkeys(sc.layer for sc in subs):
        idx = [i for i, sc in enumerate(subs) if sc.layer == layer]
        sets: list[np.ndarray] = [np.asarray(subs[i].units, dtype=np.int64) for i in idx]
        for i in idx:
            if draws[i] is not None:
                sets.extend(np.asarray(d, dtype=np.int64) for d in draws[i])
        values = per_term_mse(_outputs_with_lesions(model, layer, sets, x, y), groups)
        true[idx] = values[: len(idx)]
        pos = len(idx)
        for i in idx:
            if draws[i] is not None:
                rand[:, i] = values[pos:pos + n_random]
                pos += n_random
        lesions.update(len(sets))
    lesions.close()

    keep = np.flatnonzero(tested)
    summ = regression_summary(unl, true[keep], rand[:, keep], direction, ties, correction, alpha, seed)
    table = _table(subs, summ, keep, unl, true, whole, tested, exclude_isolated, int(n_random), seed, correction,
                   ties, direction)
    summary = {k: v for k, v in summ.items() if np.ndim(v) == 0 or isinstance(v, tuple)}
    summary.update(n_subclusters=int(tested.sum()), n_complete=int(whole.sum()), complete=complete, tie_rule=ties,
                   exclude_isolated=bool(exclude_isolated is True), n_test=int(len(y)), n_outputs=int(y.shape[1]),
                   n_terms=int(n_terms), n_important=0, seconds=round(time.perf_counter() - t0, 2),
                   counts={"unlesioned": unl, "true": true, "random": rand})
    if progress:
        print(f"regression lesions: {summary['n_subclusters']} sub-clusters x {n_random} draws in {summary['seconds']} s")
    return ImportanceResult.from_summary(table, summary)


def _table(subs: list[Any], summ: dict[str, Any], keep: np.ndarray, unl: np.ndarray, true: np.ndarray,
           whole: np.ndarray, tested: np.ndarray, exclude_isolated: Any, n_random: int, seed: int, correction: str,
           ties: str, direction: str) -> pd.DataFrame:
    from ..subclusters import eligible_units

    n = len(subs)

    def spread(key: str) -> np.ndarray:
        out = np.full(n, np.nan)
        out[keep] = np.asarray(summ[key], dtype=float)
        return out

    df = pd.DataFrame({
        "layer": [sc.layer for sc in subs], "cluster": [int(sc.cluster) for sc in subs],
        "size": [int(np.asarray(sc.units).size) for sc in subs], "layer_width": [int(sc.layer_width) for sc in subs],
        "n_eligible": [int(eligible_units(sc, exclude_isolated).size) for sc in subs],
        "unlesioned_mse": float(unl.mean()), "lesioned_mse": true.mean(1), "random_mse_mean": spread("random_mean_mse"),
    })
    df["proportion"] = df["size"] / df["layer_width"]
    df["mse_increase"] = df["lesioned_mse"] - df["unlesioned_mse"]
    df["random_mse_increase_mean"] = df["random_mse_mean"] - df["unlesioned_mse"]
    for col, key in (("p_mean", "p_means"), ("p_range", "p_ranges")):
        df[col] = spread(key)
        df[f"{col}_corrected"] = spread(f"{key}_corrected")
    df["n_ties_mean"] = spread("n_ties_means")
    df["lesioned_range"] = spread("true_range")
    df["random_range_median"] = spread("random_range_median")
    df["category"] = np.where(whole, "complete", "")
    df["tested"] = tested
    df["n_random"], df["seed"], df["correction"], df["ties"], df["direction"] = n_random, seed, correction, ties, direction
    return df[list(COLUMNS)]
