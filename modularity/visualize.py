"""Input coherence: batched feature visualisation of sub-clusters (the paper's Lucid experiment).

For every sub-cluster (units of one layer that share a spectral cluster) an input image is optimised to
maximise the sub-cluster's activation, and so is an image for each of ``n_random`` random same-size unit
sets of the same layer. A sub-cluster is *coherent with respect to input features* when its image
reaches a higher activation than the random sets' images (right-sided rank test on the "loss", the
reference's name for the objective reached) and when the network classifies its image more confidently
(left-sided rank test on the entropy of the softmax). docs/methods.md §6.1 and 6.2 describe the reference.

What is computed, per image (Lucid's ``render_vis`` rebuilt in PyTorch, docs/methods.md §6.1):

* Objective = sum over the set's units of the mean post-ReLU activation (the mean over space for conv
  channels), read at the output of the layer's activation module (``LayerSpec.activation``).
* Image = sigmoid(decorrelate(irfft2(scale * spectrum) / 4)): Lucid's Fourier parameterisation with
  1/f scaling, its colour decorrelation for 3-channel images (a no-op for 1-channel images, which have
  no colour to decorrelate) and a sigmoid onto the datasets' [0, 1] pixel range. Init N(0, 0.01) per
  image, from a per-image seed. ``fft=False`` gives Lucid's pixel parameterisation.
* Adam(lr 0.05), 256 updates by default. The reference ran 257 updates but recorded the objective of
  the image after 256 (evaluated in the same session run as the 257th update); our default reports the
  objective of the image after 256 updates, i.e. the value the reference recorded.
* Lucid's ReLU gradient override (on by default, as in the reference): in the backward pass of every
  ReLU, where an image's ordinary ReLU gradient is zero for the whole layer, the gradient is passed
  through wherever it would push the pre-activation up.
* Transforms (jitter, scale, rotation) are off by default, as in the reference; :class:`Transforms`
  offers a fixed-size variant (MLPs need a fixed input size).

Batching: the images of a network (every sub-cluster and its random sets) are optimised together,
each with its own objective (a per-image unit mask dotted with the per-image unit activations). The
loss is the *sum* of the per-image objectives and Adam is per-parameter, so a batch of images is
exactly separable: batched equals one-at-a-time up to floating-point summation order.

Layout: the feature-visualisation machinery lives in :mod:`modularity.featurevis` (``param``,
``transform``, ``objectives``, ``render``, as Lucid's ``optvis``); this module is the paper's measure
built on it (sub-clusters and their random sets, statistics, the image grid, the CLI).

We do not use ``torch-lucent``: its objectives and parameterisations assume one shared random stream
and 3-channel images, its ``render_vis`` upsamples and transforms by default, and a per-image seeded,
per-image objective batch (the point of this module) would need as much code around it as the ~60
lines of parameterisation below. See docs/coherence.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import validate
from .errors import ModularityError

# The feature-visualisation machinery (re-exported: this module was its home before the split).
from .featurevis.objectives import (  # noqa: F401
    RedirectedReLU,
    UnitSetObjective,
    _Activations,
    _override_functional_relus,
    _RedirectedReLUFunction,
    _replace_relus,
    _working_copy,
)
from .featurevis.param import _COLOR_CORRELATION, ImageBatch, inverse_rfft2_matrices, rfft2d_freqs  # noqa: F401
from .featurevis.render import (  # noqa: F401
    FeatureVisualisation,
    ImageKey,
    VisConfig,
    _check_image_shape,
    _check_unit_set,
    _visualisable_layer,
    entropy_of_logits,
    image_shape_of,
    visualize_sets,
)
from .featurevis.transform import Transforms, _transform, _transform_params  # noqa: F401

if TYPE_CHECKING:
    from .results import InputCoherenceResult


# --------------------------------------------------------------------------------------------------
# Sub-clusters and their random sets


@dataclass
class SubclusterVisualisation:
    """Images of every sub-cluster (draw 0) and its random sets (draws 1..n_random).

    Attributes:
        images: float32 array (S, 1 + n_random, C, H, W).
        table: one row per image, the :class:`FeatureVisualisation` columns plus ``cluster``,
            ``layer_width``, ``subcluster`` (position in ``subclusters``), ``role`` (``true`` or
            ``random``) and ``draw``.
        subclusters: the sub-clusters visualised (after the size filter).
        random_units: for each sub-cluster, its random sets (n_random, size).
        params: the parameters that made it (seed, n_random, size filter, VisConfig fields).
    """

    images: np.ndarray
    table: pd.DataFrame
    subclusters: list[Any]
    random_units: list[np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)


def size_filter(subclusters: Sequence[Any], min_size: int = 4, max_prop: float = 0.8) -> list[Any]:
    """Keep sub-clusters with ``min_size <= size < max_prop * layer_width`` (the reference's Lucid filter).

    The reference kept ``3 < size < 0.8 * width``: its function default was 5 but its stored images
    include size 4 (docs/methods.md §4). ``min_size`` is inclusive as in :func:`modularity.subclusters.subclusters`.
    Empty sub-clusters raise instead of being filtered.
    """
    kept = []
    for sc in subclusters:
        size = len(sc.units)
        if size == 0:
            raise ModularityError(f"sub-cluster {sc.layer}/{sc.cluster} is empty")
        if min_size <= size < max_prop * sc.layer_width:
            kept.append(sc)
    return kept


def _draw_random_sets(sc: Any, n_random: int, seed: int, include_isolated: bool) -> np.ndarray:
    """Random same-size sets of the sub-cluster's layer from :func:`modularity.subclusters.random_sets`."""
    from .subclusters import random_sets

    return np.asarray(random_sets(sc, n_random, seed, exclude_isolated=not include_isolated))


def visualize_subclusters(model: nn.Module, subclusters: Sequence[Any], n_random: int = 9, seed: int = 0,
                          config: VisConfig | None = None, *, min_size: int = 4, max_prop: float = 0.8,
                          random_units: Sequence[np.ndarray] | None = None, include_isolated: bool = True,
                          image_shape: Sequence[int] | None = None, batch_size: int | None | Literal["auto"] = "auto",
                          device: str | torch.device | None = None,
                          input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                          ) -> SubclusterVisualisation:
    """Images for every sub-cluster passing the size filter and for its ``n_random`` random sets, batched.

    Sub-clusters are objects with ``layer``, ``cluster``, ``units`` and ``layer_width``
    (:class:`modularity.subclusters.SubCluster`). Random sets come from ``random_units`` (one
    (n_random, size) array per sub-cluster *before* filtering) or are drawn with
    :func:`modularity.subclusters.random_sets` (``include_isolated=True``: from all units of the layer,
    as the reference's Lucid draws). Image (sub-cluster s, draw d) is seeded by
    ``(seed, layer, cluster, d)``.
    """
    config = config or VisConfig()
    validate.coherence_options(n_random, config.steps, seed, config.lr, min_size, max_prop)
    validate.finite_model(model)
    subclusters = list(subclusters)
    for sc in subclusters:
        spec = _visualisable_layer(model, sc.layer)
        _check_unit_set(spec, sc.units)
        if sc.layer_width != spec.width:
            raise ModularityError(f"sub-cluster {sc.layer}/{sc.cluster} says layer width {sc.layer_width}, "
                                  f"the model's layer has {spec.width}")
    if random_units is not None and len(random_units) != len(subclusters):
        raise ModularityError(f"{len(random_units)} random-set arrays for {len(subclusters)} sub-clusters")
    kept = size_filter(subclusters, min_size, max_prop)
    if not kept:
        raise ModularityError(f"no sub-cluster passes the size filter {min_size} <= size < {max_prop} * width "
                              f"(sizes: {sorted(len(sc.units) for sc in subclusters)})")
    positions = [i for i, sc in enumerate(subclusters) if any(sc is k for k in kept)]
    randoms = []
    for i in positions:
        sc = subclusters[i]
        r = (np.asarray(random_units[i]) if random_units is not None
             else _draw_random_sets(sc, n_random, seed, include_isolated))
        if r.shape != (n_random, len(sc.units)):
            raise ModularityError(f"random sets of {sc.layer}/{sc.cluster} have shape {r.shape}, "
                                  f"expected {(n_random, len(sc.units))}")
        randoms.append(r)

    targets, keys, meta = [], [], []
    for s, (sc, r) in enumerate(zip(kept, randoms, strict=True)):
        for d in range(n_random + 1):
            targets.append((sc.layer, np.asarray(sc.units) if d == 0 else r[d - 1]))
            keys.append((sc.layer, int(sc.cluster), d))
            meta.append((s, int(sc.cluster), sc.layer_width, "true" if d == 0 else "random", d))
    vis = visualize_sets(model, targets, keys, seed, config, image_shape=image_shape, batch_size=batch_size,
                         device=device, input_transform=input_transform)
    table = vis.table
    for col, values in zip(("subcluster", "cluster", "layer_width", "role", "draw"), zip(*meta, strict=True),
                           strict=True):
        table[col] = list(values)
    table = table[["subcluster", "layer", "cluster", "layer_width", "size", "role", "draw", "activation",
                   "entropy", "predicted_class", "confidence"]]
    images = vis.images.reshape(len(kept), n_random + 1, *vis.images.shape[1:])
    params = {"seed": seed, "n_random": n_random, "min_size": min_size, "max_prop": max_prop,
              "include_isolated": include_isolated, "image_shape": list(images.shape[2:]), **config.as_dict()}
    return SubclusterVisualisation(images, table, kept, randoms, params)


# --------------------------------------------------------------------------------------------------
# Statistics


SUBCLUSTER_COLUMNS = ("layer", "cluster", "size", "layer_width", "loss_true", "loss_random_mean",
                      "loss_random_median", "p_loss", "entropy_true", "entropy_random_mean",
                      "entropy_random_median", "p_entropy", "predicted_class")


def coherence_statistics(vis: SubclusterVisualisation, correction: str = "holm", alpha: float = 0.05,
                         ties: str = "strict") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-sub-cluster rank percentiles and the network summary, via :mod:`modularity.stats`.

    ``loss`` (activation reached, higher = more coherent) is tested right-sided, ``entropy`` (lower =
    more confident) left-sided, each against the sub-cluster's own random sets. The per-sub-cluster
    table has :data:`SUBCLUSTER_COLUMNS` plus ``p_loss_<correction>`` / ``p_entropy_<correction>``
    (corrected across the network's sub-clusters) and the parameters. The summary holds
    ``chi2_p_<stat>``, ``combined_p_<stat>`` (Fisher), ``effect_<stat>`` (the reference's factor,
    docs/methods.md §6.2) and the robust effect sizes of :func:`modularity.stats.coherence_summary` for
    ``stat`` in ``loss`` and ``entropy``.
    """
    from . import stats

    t = vis.table
    n_sub, n_random = len(vis.subclusters), vis.params["n_random"]
    df = pd.DataFrame({
        "layer": [sc.layer for sc in vis.subclusters],
        "cluster": [int(sc.cluster) for sc in vis.subclusters],
        "size": [len(sc.units) for sc in vis.subclusters],
        "layer_width": [int(sc.layer_width) for sc in vis.subclusters],
    })
    summary: dict[str, Any] = {"n_subclusters": n_sub, "n_random": n_random, "correction": correction}
    for stat, column, side in (("loss", "activation", "right"), ("entropy", "entropy", "left")):
        values = t.pivot(index="subcluster", columns="draw", values=column).sort_index().to_numpy()
        true, random = values[:, 0], values[:, 1:].T  # random: (n_random, S), draws first
        res = stats.coherence_summary(true, random, side, ties=ties, correction=correction, alpha=alpha,
                                      seed=vis.params["seed"])
        df[f"{stat}_true"] = true
        df[f"{stat}_random_mean"] = random.mean(axis=0)
        df[f"{stat}_random_median"] = np.median(random, axis=0)
        df[f"p_{stat}"] = res["percentiles"]
        df[f"p_{stat}_{correction}"] = res["percentiles_corrected"]
        summary[f"n_significant_{stat}_{correction}"] = int(np.sum(res["percentiles_corrected"] < alpha))
        for key in ("chi2_p", "combined_p", "log_effect", "log_effect_ci", "side"):
            summary[f"{key}_{stat}"] = res[key]
        summary[f"effect_{stat}"] = res["effect_factor"]
    summary.update(ties=ties, alpha=alpha)
    df["predicted_class"] = t[t.draw == 0].sort_values("subcluster")["predicted_class"].to_numpy()
    for key, value in vis.params.items():
        df[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
    summary["params"] = dict(vis.params)
    return df, summary


def input_coherence(model: nn.Module, subclusters: Sequence[Any], n_random: int = 9, steps: int = 256,
                    seed: int = 0, *, lr: float = 0.05, relu_gradient_override: bool = True, fft: bool = True,
                    decorrelate: bool = True, transforms: Transforms | None = None, min_size: int = 4,
                    max_prop: float = 0.8, random_units: Sequence[np.ndarray] | None = None,
                    include_isolated: bool = True, correction: str = "holm", ties: str = "strict",
                    image_shape: Sequence[int] | None = None, batch_size: int | None | Literal["auto"] = "auto",
                    device: str | torch.device | None = None,
                    input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    ) -> InputCoherenceResult:
    """Input coherence of a network's sub-clusters (an :class:`~modularity.results.InputCoherenceResult`,
    which unpacks as ``(per-sub-cluster table, network summary)``).

    Optimises an image for each sub-cluster passing ``min_size <= size < max_prop * width`` and for
    ``n_random`` random same-size sets of its layer (all in batches), then tests the activation reached
    (right-sided) and the softmax entropy (left-sided) against the random sets. See
    :func:`visualize_subclusters` and :func:`coherence_statistics`; the images are available from
    :func:`visualize_subclusters` directly.
    """
    validate.coherence_options(n_random, steps, seed, lr, min_size, max_prop, correction, ties)  # before any image
    config = VisConfig(steps=steps, lr=lr, fft=fft, decorrelate=decorrelate,
                       relu_gradient_override=relu_gradient_override, transforms=transforms)
    vis = visualize_subclusters(model, subclusters, n_random, seed, config, min_size=min_size, max_prop=max_prop,
                                random_units=random_units, include_isolated=include_isolated,
                                image_shape=image_shape, batch_size=batch_size, device=device,
                                input_transform=input_transform)
    from .results import InputCoherenceResult

    return InputCoherenceResult.from_summary(*coherence_statistics(vis, correction=correction, ties=ties), vis)


# --------------------------------------------------------------------------------------------------
# Pictures


def plot_grid(vis: SubclusterVisualisation, path: str | Path, title: str = "",
              class_names: Sequence[str] | None = None, table: pd.DataFrame | None = None) -> Path:
    """A PNG grid: one row per sub-cluster, its image (red frame) then its random sets' images.

    Each image is labelled with the activation reached and the predicted class (with its probability);
    each row with layer, cluster, size / layer width and, if ``table`` (from
    :func:`coherence_statistics`) is given, the two percentiles. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import show_image
    from .utils import atomic_path

    n_sub, n_img = vis.images.shape[:2]
    cell = 1.15
    height = 0.8 + n_sub * (cell + 0.3)
    fig, axes = plt.subplots(n_sub, n_img, figsize=(1.9 + n_img * cell, height), squeeze=False)
    t = vis.table.set_index(["subcluster", "draw"])
    for s in range(n_sub):
        sc = vis.subclusters[s]
        for d in range(n_img):
            ax = axes[s, d]
            show_image(ax, vis.images[s, d])
            row = t.loc[(s, d)]
            cls = int(row["predicted_class"])
            name = class_names[cls] if class_names is not None else str(cls)
            ax.set_title(f"act {row['activation']:.3g}\nclass {name} ({row['confidence']:.0%})", fontsize=6.5, pad=2)
            color, width = ("red", 2.0) if d == 0 else ("0.7", 0.6)
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(width)
        label = f"{sc.layer} c{sc.cluster}\nsize {len(sc.units)}/{sc.layer_width}"
        if table is not None:
            r = table.iloc[s]
            label += f"\np_act {r['p_loss']:.2f}\np_ent {r['p_entropy']:.2f}"
        axes[s, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7.5, labelpad=6)
    for d in range(n_img):
        axes[0, d].annotate("true set" if d == 0 else f"random {d}", (0.5, 1.0), xycoords="axes fraction",
                            xytext=(0, 22), textcoords="offset points", ha="center", fontsize=7.5,
                            fontweight="bold" if d == 0 else "normal")
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.12 / height)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.35 if title else 0.1) / height))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# CLI


def _cli(args: argparse.Namespace) -> int:
    from .graph import graph_of
    from .naming import cli_output
    from .partition import partition
    from .subclusters import subclusters
    from .user_model import resolve_model
    from .utils import atomic_path, write_json_atomic, write_text_atomic

    validate.coherence_command(args)
    model, meta, source = resolve_model(args)
    out = args.out or cli_output(source, "coherence", args.k, args.seed)
    part = partition(graph_of(model), k=args.k, seed=args.seed)
    config = VisConfig(steps=args.steps, lr=args.lr, fft=not args.pixels,
                       relu_gradient_override=not args.no_relu_override, relu_override_steps=args.relu_override_steps,
                       transforms=Transforms() if args.transforms else None)
    vis = visualize_subclusters(model, subclusters(part), args.n_random, args.seed, config, min_size=args.min_size,
                                max_prop=args.max_prop, batch_size=args.batch_size,
                                image_shape=getattr(args, "image_shape", None))
    table, summary = coherence_statistics(vis, correction=args.correction, ties=args.ties)
    context = {"tag": meta.get("tag"), "seed": meta.get("seed"), "pruned": meta.get("pruned"), "k": args.k,
               "checkpoint": str(source), "ncut": float(part.ncut)}
    ids = {"tag": context["tag"], "network_seed": context["seed"], "pruned": context["pruned"], "k": args.k}
    table = pd.concat([pd.DataFrame(ids, index=table.index), table], axis=1)
    images_table = pd.concat([pd.DataFrame(ids, index=vis.table.index), vis.table], axis=1)
    write_text_atomic(out / "subclusters.csv", table.to_csv(index=False))
    write_text_atomic(out / "images.csv", images_table.to_csv(index=False))
    write_json_atomic(out / "summary.json", {**context, **summary})
    with atomic_path(out / "images.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, vis.images)  # through a file object: np.save would append ".npy" to the temporary name
    title = (f"{meta.get('tag')} seed {meta.get('seed')} {'pruned' if meta.get('pruned') else 'unpruned'}, "
             f"k={args.k}: Fisher p (activation) {summary.get('combined_p_loss', float('nan')):.3g}, "
             f"Fisher p (entropy) {summary.get('combined_p_entropy', float('nan')):.3g}")
    plot_grid(vis, out / "grid.png", title=title, table=table)
    print(f"{len(table)} sub-clusters, {args.n_random} random sets each -> {out}")
    print(f"  activation: chi2 p {summary.get('chi2_p_loss', float('nan')):.3g}, "
          f"Fisher p {summary.get('combined_p_loss', float('nan')):.3g}, effect {summary.get('effect_loss')}")
    print(f"  entropy:    chi2 p {summary.get('chi2_p_entropy', float('nan')):.3g}, "
          f"Fisher p {summary.get('combined_p_entropy', float('nan')):.3g}, effect {summary.get('effect_entropy')}")
    return 0


__all__ = [
    "FeatureVisualisation", "ImageBatch", "RedirectedReLU", "SubclusterVisualisation", "Transforms", "VisConfig",
    "coherence_statistics", "entropy_of_logits", "image_shape_of", "input_coherence", "plot_grid", "rfft2d_freqs",
    "size_filter", "visualize_sets", "visualize_subclusters",
]
