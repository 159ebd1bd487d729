"""Importance and output coherence of sub-clusters by lesions (paper section 4; docs/methods.md §5).

For every sub-cluster: lesion it (:mod:`modularity.lesion`), count correct test predictions per class,
do the same for ``n_random`` random same-size unit sets of the same layer
(:func:`modularity.subclusters.random_sets`), and compare with :func:`modularity.stats.lesion_summary`
in exact integer arithmetic:

* importance: left-sided rank p-value of the balanced accuracy after the lesion ("p_mean"), and of the
  overall accuracy ("p_overall", used by the docs/methods.md §5.5 taxonomy);
* output coherence: right-sided rank p-value of the range of the normalised per-class change ("p_range");
* per network: chi-square uniformity and Fisher tests, reference and robust effect sizes;
* multiple-comparison correction across the network's sub-clusters (statsmodels, Holm by default) and
  the taxonomy (important / prunable / ...) on corrected p-values.

Default number of random draws: 1000 (``stats.DEFAULT_N_RANDOM``). With ``n`` draws the smallest
p-value is ``1/(n+1)``; the reference's 20 give 1/21 = 0.048, which no correction over ~30 sub-clusters
lets through. With 1000, Holm at 0.05 can reject for networks of up to 50 sub-clusters.

Whole-layer sub-clusters (every eligible unit of the layer, so every random set is the set itself):
``complete="skip"`` (default) keeps their row (category ``complete``, true-lesion accuracies, NaN
p-values) but leaves them out of the tests and the correction; ``"error"`` raises; ``"include"``
passes them to the statistics as the reference did (docs/methods.md §9.27).

``python -m modularity importance CHECKPOINT --k 12`` partitions the checkpoint and writes the table
(CSV), the network summary (JSON), the raw counts (NPZ) and two plots.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import validate
from .choices import COMPLETE_MODES
from .errors import ModularityError
from .layers import layer_specs
from .lesion import DEFAULT_MAX_MEMORY, check_data, class_sizes, lesion_counts, unlesioned_counts
from .results import ImportanceResult
from .utils import atomic_path, write_json_atomic

#: Columns of the per-sub-cluster table, in order.
COLUMNS = (
    "layer", "cluster", "size", "layer_width", "proportion", "n_eligible",
    "unlesioned_acc", "unlesioned_balanced_acc", "lesioned_acc", "lesioned_balanced_acc",
    "random_acc_mean", "random_balanced_acc_mean", "acc_drop", "random_acc_drop_mean",
    "p_mean", "p_mean_corrected", "p_range", "p_range_corrected", "p_overall", "p_overall_corrected",
    "p_overall_upper", "p_overall_upper_corrected", "n_ties_mean", "lesioned_range", "random_range_median",
    "category", "tested", "n_random", "seed", "correction", "ties", "before_batchnorm",
)


def _default_n_random() -> int:
    from .stats import DEFAULT_N_RANDOM

    return int(DEFAULT_N_RANDOM)


def _test_split(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    from .inputs import as_xy

    return as_xy(data)


def _check_subclusters(model: nn.Module, subs: Sequence[Any]) -> None:
    """Every sub-cluster must name an analysed layer of the model and hold valid, non-empty units."""
    if len(subs) == 0:
        raise ModularityError("no sub-clusters to test")
    widths = {s.name: s.width for s in layer_specs(model) if s.analysed}
    for sc in subs:
        where = f"sub-cluster (layer {sc.layer!r}, cluster {sc.cluster})"
        if sc.layer not in widths:
            raise ModularityError(f"{where}: not an analysed layer of {type(model).__name__} "
                                  f"({', '.join(widths)})")
        if sc.layer_width != widths[sc.layer]:
            raise ModularityError(f"{where}: layer_width {sc.layer_width} but the model's layer has "
                                  f"{widths[sc.layer]} units")
        units = np.asarray(sc.units)
        if units.size == 0:
            raise ModularityError(f"{where}: empty unit set")
        if units.min() < 0 or units.max() >= widths[sc.layer]:
            raise ModularityError(f"{where}: unit indices must lie in 0..{widths[sc.layer] - 1}, got "
                                  f"{units.min()}..{units.max()}")
        if np.unique(units).size != units.size:
            raise ModularityError(f"{where}: duplicate unit indices")


def importance(model: nn.Module, subclusters: Sequence[Any], data: Any, n_random: int | None = None,
               seed: int = 0, correction: str = "holm", before_batchnorm: bool = False, *,
               ties: str = "strict", alpha: float = 0.05, exclude_isolated: Any = True,
               complete: str = "skip", max_memory: int = DEFAULT_MAX_MEMORY,
               progress: bool = False, require_above_chance: bool = True, arithmetic: str = "exact",
               undefined_ranges: str = "as_ties", direction: str = "paper") -> ImportanceResult:
    """Lesion tests of every sub-cluster against random same-size sets of its layer.

    Args:
        model: the trained network (not modified).
        subclusters: :class:`modularity.subclusters.SubCluster` objects (or anything with ``layer``,
            ``cluster``, ``units``, ``layer_width`` and ``isolated``).
        data: ``(x_test, y_test)`` tensors or arrays, a :class:`modularity.data.Dataset` (its test split), a
            ``TensorDataset``, a map-style ``Dataset`` or a ``DataLoader`` (:mod:`modularity.inputs`).
        n_random: random draws per sub-cluster (default ``stats.DEFAULT_N_RANDOM`` = 1000).
        seed: seed of the random draws (``random_sets(..., seed)``) and of the bootstrap intervals.
        correction: a ``statsmodels`` ``multipletests`` method (``holm``, ``fdr_bh``, ...).
        before_batchnorm: zero the ReLU output in front of a BatchNorm as the reference did.
        ties: tie rule of the rank p-values (``stats.TIE_RULES``; "strict" = the reference).
        exclude_isolated: forwarded to ``random_sets``: True (the reference's lesion draws) draws only
            units that are not isolated in the graph.
        complete: handling of whole-layer sub-clusters: "skip", "error" or "include" (module doc).
        require_above_chance: refuse a network whose intact balanced accuracy is not above chance
            (``validate.above_chance``: its lesion tests would measure noise). False for random-weight
            networks in tests and for checking the machinery.
        arithmetic, undefined_ranges: forwarded to :func:`modularity.stats.lesion_summary` ("float" ties as
            the reference; how an undefined lesion range enters the range tests).
        direction: regression networks only (float targets (N, outputs), e.g. POLY): "paper" (a lesion
            matters when it raises the MSE more than random ones) or "reference" (the reference code's
            inverted test, docs/methods.md §9.11); the test then runs in
            :func:`modularity.lesion.regression.regression_importance`. Classification ignores it (both directions are
            the same left-sided test on accuracy there).

    Returns:
        An :class:`~modularity.results.ImportanceResult` (unpacks as ``table, summary``). ``table`` has
        one row per sub-cluster with the columns :data:`COLUMNS`
        (accuracies as fractions; ``acc_drop`` = unlesioned - lesioned overall accuracy; p-values raw
        and corrected; ``tested`` False for skipped whole-layer sub-clusters). ``summary`` holds the
        network-level statistics of :func:`modularity.stats.lesion_summary` (``chi2_p_means``,
        ``combined_p_means``, ``chi2_p_ranges``, ``combined_p_ranges``, ``effect_means``,
        ``effect_ranges``, ``log_effect_*`` with ``*_ci``, ...), the parameters, ``n_complete``,
        ``exact_decisions`` (near-tie predictions decided in float64) and ``counts`` (a dict of the raw
        integer arrays ``unlesioned``, ``true``, ``random``, ``class_sizes``).
    """
    from . import stats
    from .subclusters import lesion_draws

    n_random = _default_n_random() if n_random is None else n_random
    if not isinstance(n_random, (int, np.integer)) or isinstance(n_random, bool) or n_random < 1:
        raise ModularityError(f"n_random must be a positive integer, got {n_random!r}")
    validate.importance_options(correction, ties, seed, alpha)
    validate.choice(arithmetic, ("exact", "float"), "arithmetic")
    validate.choice(undefined_ranges, stats.UNDEFINED_RANGE_RULES, "undefined_ranges")
    validate.finite_model(model)
    if complete not in COMPLETE_MODES:
        raise ModularityError(f"complete must be one of {', '.join(COMPLETE_MODES)}; got {complete!r}")
    subs = list(subclusters)
    _check_subclusters(model, subs)
    x, y = _test_split(data)
    validate.choice(direction, ("paper", "reference"), "direction")
    if y.dtype.is_floating_point and y.ndim == 2:  # regression targets (POLY): the per-term MSE test
        from .inputs import check_images
        from .lesion.regression import regression_importance

        check_images(x, y)  # one-hot float labels are refused here, as before
        return regression_importance(model, subs, (x, y), n_random, seed, correction, direction=direction, ties=ties,
                                     alpha=alpha, exclude_isolated=exclude_isolated, complete=complete,
                                     require_above_chance=require_above_chance, progress=progress)
    x, y, n_classes = check_data(model, x, y)
    validate.n_random(n_random, subs, n_classes)
    t0 = time.perf_counter()

    whole, tested, draws = lesion_draws(subs, n_random, seed, exclude_isolated, complete)

    unl = unlesioned_counts(model, x, y)
    sizes = class_sizes(y.cpu().numpy(), n_classes)
    if require_above_chance:
        validate.above_chance(unl, sizes, f"the intact {type(model).__name__}")
    true = np.zeros((len(subs), n_classes), dtype=np.int64)
    rand = np.zeros((int(n_random), len(subs), n_classes), dtype=np.int64)
    exact = 0
    from .progress import bar

    lesions = bar(desc="lesions", total=sum(1 + (d is not None) * int(n_random) for d in draws), unit="lesion")
    for layer in dict.fromkeys(sc.layer for sc in subs):
        t_layer = time.perf_counter()
        idx = [i for i, sc in enumerate(subs) if sc.layer == layer]
        sets: list[np.ndarray] = [subs[i].units for i in idx]
        for i in idx:
            if draws[i] is not None:
                sets.extend(draws[i])
        info: dict[str, Any] = {}
        counts = lesion_counts(model, layer, sets, x, y, before_batchnorm=before_batchnorm,
                               max_memory=max_memory, stats=info)
        exact += info["exact_decisions"]
        true[idx] = counts[: len(idx)]
        pos = len(idx)
        for i in idx:
            if draws[i] is not None:
                rand[:, i] = counts[pos:pos + n_random]
                pos += n_random
        lesions.update(len(sets))
        if progress:
            lesions.write(f"  {layer}: {len(sets)} lesions in {time.perf_counter() - t_layer:.1f} s")
    lesions.close()

    # Classes without a test image (a subset of the model's outputs) have no accuracy: they are left out
    # of every class-balanced statistic, which then averages over the classes present.
    present = np.flatnonzero(sizes > 0)
    if present.size < n_classes:
        unl, true, rand, sizes = unl[present], true[:, present], rand[:, :, present], sizes[present]
    keep = np.flatnonzero(tested)
    summ = stats.lesion_summary(unl, true[keep], rand[:, keep], sizes, ties=ties, correction=correction,
                                alpha=alpha, seed=seed, arithmetic=arithmetic,  # type: ignore[arg-type]
                                undefined_ranges=undefined_ranges)  # type: ignore[arg-type]
    table = _table(subs, summ, keep, unl, true, sizes, whole, tested, exclude_isolated, int(n_random), seed,
                   correction, ties, before_batchnorm, alpha)
    summary = {k: v for k, v in summ.items() if np.ndim(v) == 0 or isinstance(v, tuple)}
    summary.update(
        n_subclusters=int(tested.sum()), n_complete=int(whole.sum()), complete=complete,
        tie_rule=ties, before_batchnorm=bool(before_batchnorm), exclude_isolated=bool(exclude_isolated is True),
        n_test=int(len(y)), n_classes=int(n_classes), exact_decisions=int(exact),
        n_important=int((table["category"] == "important").sum()), seconds=round(time.perf_counter() - t0, 2),
        counts={"unlesioned": unl, "true": true, "random": rand, "class_sizes": sizes},
    )
    if present.size < n_classes:  # recorded only then, so default summaries keep their fields
        summary.update(n_classes_present=int(present.size), classes_present=present.tolist())
    return ImportanceResult.from_summary(table, summary)


def _table(subs: list[Any], summ: dict[str, Any], keep: np.ndarray, unl: np.ndarray, true: np.ndarray,
           sizes: np.ndarray, whole: np.ndarray, tested: np.ndarray, exclude_isolated: Any, n_random: int,
           seed: int, correction: str, ties: str, before_batchnorm: bool, alpha: float) -> pd.DataFrame:
    from . import stats
    from .subclusters import eligible_units

    n = len(subs)
    total = sizes.sum()

    def spread(key: str) -> np.ndarray:
        out = np.full(n, np.nan)
        out[keep] = np.asarray(summ[key], dtype=float)
        return out

    unl_acc = unl.sum() / total
    lesioned_acc = true.sum(1) / total
    df = pd.DataFrame({
        "layer": [sc.layer for sc in subs], "cluster": [int(sc.cluster) for sc in subs],
        "size": [int(np.asarray(sc.units).size) for sc in subs], "layer_width": [int(sc.layer_width) for sc in subs],
        "n_eligible": [int(eligible_units(sc, exclude_isolated).size) for sc in subs],
        "unlesioned_acc": unl_acc, "unlesioned_balanced_acc": float(np.mean(unl / sizes)),
        "lesioned_acc": lesioned_acc, "lesioned_balanced_acc": (true / sizes).mean(1),
        "random_acc_mean": spread("random_overall_acc"), "random_balanced_acc_mean": spread("random_mean_acc"),
    })
    df["proportion"] = df["size"] / df["layer_width"]
    df["acc_drop"] = unl_acc - lesioned_acc
    df["random_acc_drop_mean"] = unl_acc - df["random_acc_mean"]
    for col, key in (("p_mean", "p_means"), ("p_range", "p_ranges"), ("p_overall", "p_overall"),
                     ("p_overall_upper", "p_overall_upper")):
        df[col] = spread(key)
        df[f"{col}_corrected"] = spread(f"{key}_corrected")
    df["n_ties_mean"] = spread("n_ties_means")
    df["lesioned_range"] = spread("true_range")
    df["random_range_median"] = spread("random_range_median")
    df["category"] = stats.categorize(df["p_overall_corrected"].to_numpy(), -df["acc_drop"].to_numpy(), whole,
                                      df["size"].to_numpy(), n_random,
                                      p_upper_corrected=df["p_overall_upper_corrected"].to_numpy(), alpha=alpha)
    df.loc[whole, "category"] = "complete"
    df["tested"] = tested
    df["n_random"], df["seed"], df["correction"] = n_random, seed, correction
    df["ties"], df["before_batchnorm"] = ties, bool(before_batchnorm)
    return df[list(COLUMNS)]


# --------------------------------------------------------------------------------------------------
# Plots


CATEGORY_COLOURS = {
    "important": "tab:red", "sig-but-not-diff": "tab:orange", "diff-but-not-sig": "tab:purple",
    "least_important": "tab:brown", "prunable": "tab:green", "small": "tab:gray", "complete": "black",
    "other": "tab:blue",
}


def plot_drop_vs_proportion(table: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """Accuracy drop (percentage points) against the sub-cluster's share of its layer, by category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for cat, group in table.groupby("category", sort=False):
        ax.scatter(group["proportion"], 100 * group["acc_drop"], label=f"{cat} ({len(group)})",
                   color=CATEGORY_COLOURS.get(str(cat), "tab:blue"), s=30, alpha=0.85)
    ax.scatter(table["proportion"], 100 * table["random_acc_drop_mean"], marker="x", color="0.6", s=18,
               label="mean of random sets")
    ax.axhline(1.0, color="0.7", lw=0.8, ls="--")
    ax.set_xlabel("proportion of the layer")
    ax.set_ylabel("accuracy drop (pp)")
    ax.set_title(title or "Lesion importance")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    _save(fig, path)


def plot_per_class(table: pd.DataFrame, counts: dict[str, np.ndarray], path: str | Path, title: str = "",
                   max_random_lines: int = 100, max_panels: int = 48) -> None:
    """Per-class accuracy of each sub-cluster's lesion (red), random lesions (black, alpha 0.1, at most
    ``max_random_lines`` per panel) and the unlesioned network (green); the last x tick is "all"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = counts["class_sizes"]
    n_cls = len(sizes)

    def with_all(c: np.ndarray) -> np.ndarray:
        return np.concatenate([c / sizes, c.sum(-1, keepdims=True) / sizes.sum()], axis=-1)

    n = min(len(table), max_panels)
    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.1 * rows), sharey=True, squeeze=False)
    xs = np.arange(n_cls + 1)
    unl = with_all(counts["unlesioned"])
    for i in range(rows * cols):
        ax = axes.flat[i]
        if i >= n:
            ax.axis("off")
            continue
        rnd = counts["random"][:max_random_lines, i]
        if bool(table["tested"].iloc[i]):
            for r in with_all(rnd):
                ax.plot(xs, r, color="black", alpha=0.1, lw=0.8)
        ax.plot(xs, unl, color="green", lw=1.2)
        ax.plot(xs, with_all(counts["true"][i]), color="red", lw=1.4)
        row = table.iloc[i]
        ax.set_title(f"{row['layer']} c{row['cluster']} n={row['size']} {row['category']}", fontsize=7)
        ax.set_xticks(xs, [*map(str, range(n_cls)), "all"], fontsize=6)
        ax.tick_params(axis="y", labelsize=6)
    fig.suptitle(title or "Per-class accuracy after lesions (red: sub-cluster, black: random, green: intact)",
                 fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Any, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# CLI: python -m modularity importance CHECKPOINT --k 12


def output_paths(checkpoint: Path, k: int, seed: int, out: Path | None = None) -> dict[str, Path]:
    """Where ``importance`` writes its files."""
    folder = out if out is not None else checkpoint.parent
    from .naming import cli_stem

    stem = cli_stem(checkpoint, k, seed)
    return {"csv": folder / f"{stem}-importance.csv", "json": folder / f"{stem}-importance.json",
            "npz": folder / f"{stem}-lesion-counts.npz", "plot": folder / f"{stem}-importance.png",
            "per_class": folder / f"{stem}-per-class.png"}


def _importance_command(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .graph import graph_of
    from .models import tag_spec
    from .partition import partition
    from .subclusters import subclusters
    from .user_model import load_npz, resolve_model
    from .utils import sha256_file

    validate.importance_command(args)
    model, meta, source = resolve_model(args)
    if meta.get("tag") is None:
        if args.data is None:
            raise ModularityError("--model needs --data FILE.npz (arrays x and y)")
        data: Any = load_npz(args.data)
        dataset = str(args.data)
    else:
        spec = tag_spec(meta["tag"])
        if spec.family == "imagenet":
            raise ModularityError("ImageNet models: use modularity.importance.importance() with a validation subset")
        data = load_dataset(spec.dataset, args.data_root)
        dataset = spec.dataset
    y_test = _test_split(data)[1]
    regression = y_test.dtype.is_floating_point and y_test.ndim == 2  # POLY: checked by the regression test itself
    if not args.allow_chance and not regression:
        validate.network_above_chance(model, *_test_split(data), where=f"{source}")
    graph = graph_of(model, conv_norm=args.conv_norm, fold_batchnorm=not args.no_fold_batchnorm)
    part = partition(graph, k=args.k, seed=args.seed)
    subs = subclusters(part)
    table, summary = importance(model, subs, data, n_random=args.n_random, seed=args.seed,
                                correction=args.correction, before_batchnorm=args.before_batchnorm,
                                ties=args.ties, complete=args.complete, progress=True, direction=args.direction,
                                require_above_chance=not args.allow_chance)
    paths = output_paths(source, args.k, args.seed, args.out)
    counts = summary.pop("counts")
    summary.update(checkpoint=str(source), checkpoint_sha256=sha256_file(source) if source.is_file() else None,
                   tag=meta["tag"], train_seed=meta.get("seed"), pruned=meta.get("pruned"), k=args.k,
                   ncut=part.ncut, dataset=dataset, **graph.params)
    if meta.get("model"):
        summary["model"] = meta["model"]
    with atomic_path(paths["csv"]) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    write_json_atomic(paths["json"], summary)
    with atomic_path(paths["npz"]) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **counts)
    if not args.no_plots and not regression:  # the plots show accuracies
        title = f"{meta['tag'] or meta.get('model')} {'pruned' if meta.get('pruned') else 'unpruned'} k={args.k}"
        plot_drop_vs_proportion(table, paths["plot"], title)
        plot_per_class(table, counts, paths["per_class"], title)
    n_imp = int((table["category"] == "important").sum())
    print(f"{meta['tag'] or meta.get('model')} k={args.k}: {summary['n_subclusters']} sub-clusters tested "
          f"({summary['n_complete']} whole-layer skipped), n_random={table['n_random'].iloc[0]}; "
          f"Fisher p (means) {summary['combined_p_means']:.3g}, chi2 p {summary['chi2_p_means']:.3g}, "
          f"effect {summary['effect_means']:.3f}; {n_imp} important after {args.correction} -> {paths['csv']}")
    return 0
