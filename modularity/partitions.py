"""Partitions from anywhere, through the same tests as the paper's spectral partition.

* :func:`from_labels`: a partition given as labels per unit (per layer, or one array in vertex order).
* :func:`random_like`: the same cluster sizes in every layer, units assigned at random (a null).
* :func:`activation_partition`: spectral clustering of the squared activation correlations between
  units (the reference's alternative, docs/methods.md §7.1).
* :func:`compare_partitions`: several partitions of one network on importance, one row each.

All return / take :class:`modularity.partition.Partition` objects over the model's weight graph, so
:func:`modularity.subclusters.subclusters`, :func:`modularity.importance` and
:func:`modularity.input_coherence` work unchanged. Label -1 marks units outside every cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from torch import nn

from .errors import ModularityError
from .graph import WeightGraph, graph_of
from .partition import Partition, ncut, spectral_labels
from .utils import rng_for


def from_labels(graph: WeightGraph, labels: Mapping[str, Sequence[int] | np.ndarray] | np.ndarray | Sequence[int],
                k: int | None = None, seed: int = 0) -> Partition:
    """A :class:`Partition` from given labels: a dict ``layer -> labels`` (missing layers get -1) or one
    array over all vertices in graph order. ``ncut`` is the n-cut of these labels on the weight graph."""
    if not isinstance(graph, WeightGraph):
        raise ModularityError(f"from_labels needs a WeightGraph (from graph_of), got {type(graph).__name__}")
    full = np.full(graph.n_vertices, -1, dtype=np.int64)
    if isinstance(labels, Mapping):
        known = {s.name for s in graph.layers}
        for layer, lab in labels.items():
            if layer not in known:
                raise ModularityError(f"no layer {layer!r} in the graph; layers: {', '.join(known)}")
            arr = np.asarray(lab)
            sl = graph.layer_slice(layer)
            if arr.shape != (sl.stop - sl.start,):
                raise ModularityError(f"labels of layer {layer!r} have shape {arr.shape}, expected ({sl.stop - sl.start},)")
            full[sl] = arr
    else:
        arr = np.asarray(labels)
        if arr.shape != (graph.n_vertices,):
            raise ModularityError(f"labels have shape {arr.shape}, expected ({graph.n_vertices},) (one per vertex)")
        full[:] = arr
    if not np.issubdtype(full.dtype, np.integer):
        raise ModularityError("labels must be integers")
    n_clusters = int(np.unique(full[full >= 0]).size)
    return Partition(full, int(k if k is not None else n_clusters), float(ncut(graph.adjacency, full)), graph, int(seed),
                     0, "given")


def random_like(part: Partition, seed: int = 0) -> Partition:
    """The same cluster sizes in every layer, the labels of each layer's clustered units permuted at
    random (stream ``rng_for(seed, "random_like", layer)``); -1 units stay -1."""
    labels = part.labels.copy()
    for spec in part.graph.layers:
        sl = part.graph.layer_slice(spec.name)
        lab = labels[sl]
        idx = np.flatnonzero(lab >= 0)
        lab[idx] = lab[idx][rng_for(seed, "random_like", spec.name).permutation(idx.size)]
        labels[sl] = lab
    return from_labels(part.graph, labels, k=part.k, seed=seed)


def unit_activations(model: nn.Module, x: torch.Tensor, conv_summary: str = "fro",
                     batch_size: int = 512) -> dict[str, np.ndarray]:
    """Post-activation value of every analysed unit per image, ``layer -> (N, width)`` float64.

    Conv channels are summarised per image by the Frobenius norm of their H x W map (``"fro"``), the
    spectral norm the reference computed (``"spectral"``, docs/methods.md §7.1 / 9.1) or the mean (``"mean"``).
    """
    from .arch import analysed_layers, hook_point
    from .lesion.engine import _eval_mode

    if conv_summary not in ("fro", "spectral", "mean"):
        raise ModularityError(f"conv_summary must be fro, spectral or mean, got {conv_summary!r}")
    specs = analysed_layers(model)
    out: dict[str, list[np.ndarray]] = {s.name: [] for s in specs}
    hooks = []
    runner: nn.Module = model
    for s in specs:
        r, module = hook_point(model, s, before_batchnorm=True)
        if r is not model:
            runner = r

        def hook(_m: nn.Module, _i: Any, value: torch.Tensor, name: str = s.name) -> None:
            v = value.detach().double()
            if v.ndim == 4:
                v = {"fro": lambda t: t.flatten(2).norm(dim=2), "mean": lambda t: t.mean(dim=(2, 3)),
                     "spectral": lambda t: torch.linalg.matrix_norm(t, ord=2)}[conv_summary](v)
            out[name].append(v.cpu().numpy())

        hooks.append(module.register_forward_hook(hook))
    p = next(model.parameters())
    try:
        with _eval_mode(model), torch.inference_mode():
            for i in range(0, len(x), batch_size):
                runner(x[i:i + batch_size].to(p.device, p.dtype))
    finally:
        for h in hooks:
            h.remove()
    return {k: np.concatenate(v) for k, v in out.items()}


def activation_partition(model: nn.Module, data: Any, k: int = 12, seed: int = 0, method: str = "spearman",
                         conv_summary: str = "fro", n_init: int | None = None) -> Partition:
    """Spectral clustering of ``A_ij = corr(a_i, a_j)^2`` over the analysed units (docs/methods.md §7.1).

    ``method``: ``spearman`` (the reference's default) or ``pearson``. Units with zero variance over the
    images get -1, as do non-analysed vertices (an MLP's inputs and outputs). The partition lives on the
    weight graph (``ncut`` = the weight graph's n-cut under these labels, the reference's transfer n-cut).
    """
    from scipy.stats import rankdata

    from .inputs import as_xy, check_images
    from .partition import _random_state

    if method not in ("spearman", "pearson"):
        raise ModularityError(f"method must be spearman or pearson, got {method!r}")
    x, y = check_images(*as_xy(data))
    acts = unit_activations(model, x, conv_summary)
    names = list(acts)
    a = np.concatenate([acts[n] for n in names], axis=1)
    alive = a.std(axis=0) > 0
    z = a[:, alive]
    if method == "spearman":
        z = rankdata(z, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(z, rowvar=False)
    aff = np.clip(np.nan_to_num(r * r), 0, 1)
    np.fill_diagonal(aff, 0)
    lab = spectral_labels(sparse.csr_matrix(aff), k, _random_state(seed, "activation_partition", int(k)), n_init)
    flat = np.full(a.shape[1], -1, dtype=np.int64)
    flat[alive] = lab
    graph = graph_of(model)
    per_layer, pos = {}, 0
    for n in names:
        w = acts[n].shape[1]
        per_layer[n] = flat[pos:pos + w]
        pos += w
    return from_labels(graph, per_layer, k=k, seed=seed)


def compare_partitions(model: nn.Module, partitions: Mapping[str, Partition], data: Any, *, n_random: int | None = None,
                       seed: int = 0, min_size: int = 1, max_prop: float = 1.0, coherence: Mapping[str, Any] | None = None,
                       **importance_kw: Any) -> pd.DataFrame:
    """Importance (and, with ``coherence``, input coherence) of several partitions of one network, one row
    per partition (same data, same seed).

    Columns: ``partition``, ``k``, ``ncut``, ``n_subclusters``, ``n_important`` and the network summary
    statistics (``combined_p_means``, ``chi2_p_means``, ``effect_means``, ``combined_p_ranges``,
    ``chi2_p_ranges``, ``effect_ranges``) of :func:`modularity.importance.importance`. ``coherence``: keyword
    arguments of :func:`modularity.input_coherence` (e.g. ``{"n_random": 9, "steps": 256}``); adds
    ``combined_p_loss``, ``effect_loss``, ``combined_p_entropy``, ``effect_entropy``.
    """
    from .importance import importance
    from .subclusters import subclusters
    from .visualize import input_coherence

    if not partitions:
        raise ModularityError("no partitions to compare")
    rows = []
    for name, part in partitions.items():
        if not isinstance(part, Partition):
            raise ModularityError(f"partition {name!r} is a {type(part).__name__}, not a Partition")
        subs = subclusters(part, min_size=min_size, max_prop=max_prop)
        _, summary = importance(model, subs, data, n_random=n_random, seed=seed, **importance_kw)
        row = {"partition": name, "k": part.k, "ncut": part.ncut, "n_subclusters": summary["n_subclusters"],
               "n_important": summary["n_important"],
               **{key: summary.get(key) for key in ("combined_p_means", "chi2_p_means", "effect_means",
                                                    "combined_p_ranges", "chi2_p_ranges", "effect_ranges")}}
        if coherence is not None:
            coh = input_coherence(model, subs, seed=seed, **dict(coherence))
            row.update({key: coh.summary.get(key) for key in ("combined_p_loss", "effect_loss", "combined_p_entropy",
                                                                  "effect_entropy")})
        rows.append(row)
    return pd.DataFrame(rows)
