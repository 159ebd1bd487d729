"""The paper's figures from a pipeline run, and readable reproduced-against-paper scatters.

``python -m benchmark.figures --profile default [--root DIR] [--out paper/figures] [--k 12]``

From the results folder of a run (``<root>/results/<TAG>/seed<S>/<state>/{importance,coherence}/``,
see :mod:`benchmark.plan`) this draws, for the profile's networks at ``k``:

* ``drop_vs_proportion_<family>_k<K>.png``: accuracy drop against proportion of the layer, one point per
  sub-cluster coloured by category, one panel per network (unpruned / pruned), first seed;
* ``per_class_<TAG>_<state>_k<K>.png``: per-class accuracy after the lesion of chosen sub-clusters
  (red), after their random lesions (black) and of the intact network (green);
* ``features_<TAG>_<state>_k<K>.png``: the image optimised for chosen sub-clusters beside their random
  sets' images.

The lesion and visualisation stages store tables, not raw counts or images, so the last two figures
recompute the chosen sub-clusters only. Random sets and images are seeded per sub-cluster
(``rng_for(seed, "random_sets", layer, cluster)``, ``rng_for(seed, "feature-vis", layer, cluster, draw)``),
so the recomputation reproduces the stage's numbers; each figure checks this against the stored table
and refuses to draw when they disagree.

:func:`comparison_figure` is the reproduced-against-paper scatter for :mod:`benchmark.report`: marker
by family, colour by weights, the column's agreement band drawn, log axes for p-values and effect
factors, few tick labels.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modularity.errors import ModularityError
from modularity.plots import drop_vs_proportion, feature_row, per_class, pyplot, save

from .plan import Profile, load_profile, result_dir, state

FAMILY_MARKERS = {"mlp": "o", "cnn": "^", "vgg": "s", "imagenet": "D"}
WEIGHT_COLOURS = {False: "tab:blue", True: "tab:orange"}


# --------------------------------------------------------------------------------------------------
# Which networks a run has


@dataclass(frozen=True)
class Network:
    """One trained network of a run: tag, family, training seed and weights."""

    tag: str
    family: str
    seed: int
    pruned: bool

    @property
    def label(self) -> str:
        return f"{self.tag} {state(self.pruned)} seed {self.seed}"

    @property
    def slug(self) -> str:
        return f"{self.tag.replace('+', '_')}_{state(self.pruned)}"


def networks(root: Path, analysis: str, k: int) -> list[Network]:
    """Networks whose ``analysis`` stage wrote ``k<K>.csv`` under ``root``, sorted by tag, weights, seed."""
    from modularity.models import tag_spec

    found = []
    for csv in sorted((Path(root) / "results").glob(f"*/seed*/*/{analysis}/k{k}.csv")):
        weights, seed_dir, tag = csv.parents[1].name, csv.parents[2].name, csv.parents[3].name
        found.append(Network(tag, tag_spec(tag).family, int(seed_dir.removeprefix("seed")), weights == "pruned"))
    return sorted(found, key=lambda n: (n.tag, n.pruned, n.seed))


def _table(root: Path, net: Network, analysis: str, k: int) -> pd.DataFrame:
    return pd.read_csv(result_dir(root, analysis, net.tag, net.seed, net.pruned) / f"k{k}.csv")


# --------------------------------------------------------------------------------------------------
# Drop against proportion


def drop_figures(root: Path, out: Path, k: int = 12) -> list[Path]:
    """One PNG per family: a panel per network (rows: tags, columns: unpruned / pruned where run), first seed."""
    nets = networks(root, "importance", k)
    written = []
    for family in dict.fromkeys(n.family for n in nets):
        first: dict[tuple[str, bool], Network] = {}
        for n in nets:
            if n.family == family:
                first.setdefault((n.tag, n.pruned), n)
        tags = list(dict.fromkeys(t for t, _ in first))
        states = [p for p in (False, True) if any(pr == p for _, pr in first)]  # no empty column
        plt = pyplot()
        fig, axes = plt.subplots(len(tags), len(states), figsize=(3.6 * len(states) + 0.4, 2.6 * len(tags)),
                                 squeeze=False, sharex=True)
        for i, tag in enumerate(tags):
            for j, pruned in enumerate(states):
                ax = axes[i, j]
                net = first.get((tag, pruned))
                if net is None:
                    ax.axis("off")
                    continue
                drop_vs_proportion(ax, _table(root, net, "importance", k), title=net.label)
        fig.suptitle(f"Accuracy drop after lesioning each sub-cluster ({family.upper()}, k = {k})", fontsize=9)
        fig.tight_layout()
        written.append(save(fig, out / f"drop_vs_proportion_{family}_k{k}.png"))
    return written


# --------------------------------------------------------------------------------------------------
# Per-class lesion plots (recomputed for chosen sub-clusters)


def choose_lesions(table: pd.DataFrame, n: int = 4) -> pd.DataFrame:
    """The ``n - 1`` tested sub-clusters that hurt most beyond their random sets, and the one that hurts least."""
    t = table[table["tested"].astype(bool)].copy()
    t["excess"] = t["acc_drop"] - t["random_acc_drop_mean"]
    t = t.sort_values(["excess", "layer", "cluster"], ascending=[False, True, True], kind="stable")
    if len(t) <= n:
        return t
    return pd.concat([t.head(n - 1), t.tail(1)])


def _pick(subs: list[Any], rows: pd.DataFrame) -> list[Any]:
    by_key = {(s.layer, int(s.cluster)): s for s in subs}
    missing = [(r.layer, int(r.cluster)) for r in rows.itertuples() if (r.layer, int(r.cluster)) not in by_key]
    if missing:
        raise ModularityError(f"sub-clusters {missing} of the stored table are not in the recomputed partition")
    return [by_key[(r.layer, int(r.cluster))] for r in rows.itertuples()]


def per_class_figure(profile: Profile, root: Path, net: Network, out: Path, k: int = 12, n: int = 4) -> Path:
    """Per-class accuracies of ``n`` chosen sub-clusters' lesions, their random lesions and the intact net."""
    from modularity.importance import importance

    from .stages import IMPORTANCE_OPTIONS, _subclusters, load_network, test_data

    settings = profile.section("importance", net.family)
    stored = _table(root, net, "importance", k)
    chosen = choose_lesions(stored, n)
    model, _ = load_network(root, net.tag, net.seed, net.pruned)
    x, y = test_data(net.tag, net.seed, settings.get("test_subsample"))
    subs = _pick(_subclusters(model, profile, k, net.seed, max_prop=float(settings.get("max_prop", 1.0))), chosen)
    kw = {key: settings[key] for key in IMPORTANCE_OPTIONS if key in settings}  # as the stage ran it
    _, summary = importance(model, subs, (x, y), n_random=int(settings.get("n_random", 20)), seed=net.seed, **kw)
    counts = summary["counts"]
    recomputed = counts["true"].sum(1) / counts["class_sizes"].sum()
    if not np.allclose(recomputed, chosen["lesioned_acc"].to_numpy(), rtol=0, atol=1e-9):
        raise ModularityError(f"{net.label}: recomputed lesion accuracies {recomputed} differ from the stored "
                              f"{chosen['lesioned_acc'].to_numpy()}; the results folder is stale")
    plt = pyplot()
    cols = min(len(subs), 4)
    rows = math.ceil(len(subs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.5 * cols, 2.2 * rows + 0.5), squeeze=False, sharey=True)
    for i, ax in enumerate(axes.flat):
        if i >= len(subs):
            ax.axis("off")
            continue
        r = chosen.iloc[i]
        per_class(ax, counts["true"][i], counts["random"][:, i], counts["unlesioned"], counts["class_sizes"],
                  title=f"{r['layer']} c{int(r['cluster'])}: {int(r['size'])}/{int(r['layer_width'])} units\n"
                        f"{r['category']}, drop {100 * r['acc_drop']:.1f} pp")
    axes[0, 0].set_ylabel("accuracy", fontsize=7)
    fig.suptitle(f"{net.label}, k = {k}: per-class accuracy after lesions "
                 f"(red: sub-cluster, black: {counts['random'].shape[0]} random sets, green: intact)", fontsize=8)
    fig.tight_layout()
    return save(fig, out / f"per_class_{net.slug}_k{k}.png")


# --------------------------------------------------------------------------------------------------
# Feature-visualisation grids (recomputed for chosen sub-clusters)


def choose_features(table: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """The ``n - 1`` sub-clusters with the smallest activation percentile, and the one with the largest."""
    t = table.sort_values(["p_loss", "layer", "cluster"], kind="stable")
    if len(t) <= n:
        return t
    return pd.concat([t.head(n - 1), t.tail(1)])


def feature_figure(profile: Profile, root: Path, net: Network, out: Path, k: int = 12, n: int = 3,
                   n_shown: int = 5) -> Path:
    """The image of ``n`` chosen sub-clusters (red frame) beside ``n_shown`` of their random sets' images."""
    from .stages import _subclusters, load_network, visualise

    stored = _table(root, net, "coherence", k)
    chosen = choose_features(stored, n)
    model, _ = load_network(root, net.tag, net.seed, net.pruned)
    subs = _pick(_subclusters(model, profile, k, net.seed), chosen)
    vis = visualise(model, subs, profile.section("coherence", net.family), net.seed)  # the stage's own settings
    acts = vis.table.pivot(index="subcluster", columns="draw", values="activation").sort_index().to_numpy()
    if not np.allclose(acts[:, 0], chosen["loss_true"].to_numpy(), rtol=1e-4, atol=1e-6):
        raise ModularityError(f"{net.label}: recomputed activations {acts[:, 0]} differ from the stored "
                              f"{chosen['loss_true'].to_numpy()}; the results folder is stale")
    shown = min(n_shown, vis.images.shape[1] - 1) + 1
    plt = pyplot()
    fig, axes = plt.subplots(len(subs), shown, figsize=(1.0 + 1.05 * shown, 1.25 * len(subs) + 0.6), squeeze=False)
    t = vis.table.set_index(["subcluster", "draw"])
    for s, sc in enumerate(subs):
        labels = [f"{'true' if d == 0 else f'random {d}'}\nact {t.loc[(s, d), 'activation']:.3g}"
                  for d in range(shown)]
        feature_row(axes[s], vis.images[s, :shown], labels)
        r = chosen.iloc[s]
        axes[s, 0].set_ylabel(f"{sc.layer} c{sc.cluster}\n{len(sc.units)}/{sc.layer_width}\np {r['p_loss']:.2f}",
                              rotation=0, ha="right", va="center", fontsize=6.5, labelpad=4)
    fig.suptitle(f"{net.label}, k = {k}: feature visualisation (true set, then random sets)", fontsize=8)
    fig.tight_layout()
    return save(fig, out / f"features_{net.slug}_k{k}.png")


# --------------------------------------------------------------------------------------------------
# All of them


def example_networks(root: Path, analysis: str, k: int) -> list[Network]:
    """The networks the paper shows per family: the first tag, pruned if available, first seed."""
    picked: dict[str, Network] = {}
    for n in sorted(networks(root, analysis, k), key=lambda n: (n.family, not n.pruned, n.seed)):
        picked.setdefault(n.family, n)
    return list(picked.values())


def paper_figures(profile: Profile, root: Path | None = None, out: Path = Path("paper/figures"), k: int = 12,
                  examples: list[Network] | None = None) -> list[Path]:
    """Every figure above for the run under ``root`` (default: the profile's); returns the paths written."""
    root = Path(root) if root is not None else profile.root
    written = drop_figures(root, out, k)
    for net in examples if examples is not None else example_networks(root, "importance", k):
        written.append(per_class_figure(profile, root, net, out, k))
    for net in examples if examples is not None else example_networks(root, "coherence", k):
        if (result_dir(root, "coherence", net.tag, net.seed, net.pruned) / f"k{k}.csv").exists():
            written.append(feature_figure(profile, root, net, out, k))
    return written


# --------------------------------------------------------------------------------------------------
# Reproduced against paper (for benchmark.report)


def _is_p(key: str) -> bool:
    return "p_" in key or key == "percentile"


def _is_factor(key: str) -> bool:
    return key.startswith("effect")


def _decade_limits(lo: float, hi: float) -> tuple[float, float]:
    return 10.0 ** math.floor(math.log10(lo)), 10.0 ** math.ceil(math.log10(hi))


def comparison_panel(ax: Any, d: pd.DataFrame, column: Any) -> None:
    """One column: reproduced (y) against paper (x), marker by family, colour by weights, band shaded."""
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter

    d = d[np.isfinite(d["ours"].astype(float)) & np.isfinite(d["paper"].astype(float))]
    key = column.key
    vals = np.concatenate([d["ours"].to_numpy(float), d["paper"].to_numpy(float)])
    positive = bool(vals.size) and bool((vals > 0).all())
    # p-values always on log axes; effect factors when they span more than 1.5 decades (1 to 1e72 happens)
    log = positive and (_is_p(key) or (_is_factor(key) and vals.max() / vals.min() > 30))
    if log:
        lo, hi = _decade_limits(float(vals.min()), float(vals.max()))
        pad = (hi / lo) ** 0.04  # points on a decade line stay inside the frame
        lo, hi = lo / pad, hi * pad
    elif vals.size:
        span = float(vals.max() - vals.min()) or max(abs(float(vals.max())), 1.0) * 0.1
        lo, hi = float(vals.min()) - 0.08 * span, float(vals.max()) + 0.08 * span
    else:
        lo, hi = 0.0, 1.0
    if column.criterion.get("kind") == "band" and not log and positive:  # show the band's edges
        f = float(column.criterion["factor"])
        lo, hi = min(lo, float(vals.min()) / f), max(hi, float(vals.max()) * f)
    grid = np.geomspace(lo, hi, 200) if log else np.linspace(lo, hi, 200)
    crit = column.criterion
    band = None
    if crit.get("kind") == "tolerance":
        band = (grid - float(crit["abs"]), grid + float(crit["abs"]))
    elif crit.get("kind") == "band":
        band = (grid / float(crit["factor"]), grid * float(crit["factor"]))
    if band is not None:
        ax.fill_between(grid, *band, color="0.9", lw=0)
        for edge in band:
            ax.plot(grid, edge, color="0.6", lw=0.6, ls=":")
    ax.plot(grid, grid, color="0.5", lw=0.7, ls="--")
    for (family, pruned), g in d.groupby(["family", "pruned"], sort=True):
        ax.scatter(g["paper"], g["ours"], marker=FAMILY_MARKERS.get(family, "o"), color=WEIGHT_COLOURS[bool(pruned)],
                   s=26, alpha=0.85, edgecolors="white", linewidths=0.4, zorder=3)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(base=10, numticks=5))
            axis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(4))
    ax.set_aspect("equal", adjustable="box")
    ax.set_title(column.label, fontsize=8)
    ax.set_xlabel("paper", fontsize=7)
    ax.set_ylabel("reproduced", fontsize=7)
    ax.tick_params(labelsize=6)


def comparison_figure(cmp: Any, path: Path, k: int = 12, per_row: int = 4) -> Path | None:
    """Reproduced against paper at ``k``, one panel per median column with paper values; None if none.

    ``cmp``: a :class:`benchmark.compare.TableComparison`. Drop-in for ``benchmark.report.figure``.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    long = cmp.long[cmp.long["k"] == k]
    cols = [c for c in cmp.table.columns if c.stat == "median"
            and long[long["column"] == c.name][["ours", "paper"]].notna().all(axis=1).any()]
    if not cols:
        return None
    n_cols = min(per_row, len(cols))
    n_rows = math.ceil(len(cols) / n_cols)
    plt = pyplot()
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 2.7 * n_rows + 0.6), squeeze=False)
    for ax, col in zip(axes.flat, cols, strict=False):
        comparison_panel(ax, long[long["column"] == col.name].dropna(subset=["ours", "paper"]), col)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    families = sorted(set(long["family"]))
    handles = [Line2D([], [], marker=FAMILY_MARKERS.get(f, "o"), ls="", color="0.3", label=f.upper()) for f in families]
    handles += [Line2D([], [], marker="o", ls="", color=c, label=state(p)) for p, c in WEIGHT_COLOURS.items()]
    if any(c.criterion.get("kind") in ("tolerance", "band") for c in cols):
        handles.append(Patch(facecolor="0.9", edgecolor="0.6", ls=":", label="agreement band"))
    handles.append(Line2D([], [], color="0.5", ls="--", label="y = x"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(f"{cmp.table.title} (k = {k})", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save(fig, path, dpi=110)


def redraw_comparisons(report_dir: Path, k: int = 12) -> list[Path]:
    """Redraw ``<report_dir>/figures/<table>_k<K>.png`` from the report's ``tables/<table>.csv`` (no rerun)."""
    from .compare import TableComparison
    from .plan import load_tables

    written = []
    for table in load_tables():
        csv = Path(report_dir) / "tables" / f"{table.name}.csv"
        if not csv.exists():
            continue
        long = pd.read_csv(csv)
        long = long[long["column"].notna()]
        fig = comparison_figure(TableComparison(table, long, pd.DataFrame()), Path(report_dir) / "figures" /
                                f"{table.name}_k{k}.png", k)
        if fig is not None:
            written.append(fig)
    return written


# --------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.figures", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True, help="profile of params.yaml whose run to draw")
    parser.add_argument("--root", type=Path, default=None, help="run folder (default: data/benchmark/<profile>)")
    parser.add_argument("--out", type=Path, default=Path("paper/figures"), help="figure folder (default paper/figures)")
    parser.add_argument("--k", type=int, default=12, help="number of clusters (default 12)")
    parser.add_argument("--comparisons-only", action="store_true",
                        help="only redraw the reproduced-against-paper scatters from the report's tables/*.csv")
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.profile)
        paths = (redraw_comparisons(profile.report_dir, args.k) if args.comparisons_only
                 else paper_figures(profile, args.root, args.out, args.k))
        for path in paths:
            print(path)
    except ModularityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
