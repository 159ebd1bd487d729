"""Normalised spectral clustering of a weight graph, its n-cut, and the shuffle null of clusterability.

* :func:`partition` (docs/methods.md §3.1): scikit-learn ``SpectralClustering(affinity="precomputed",
  assign_labels="kmeans")`` with ARPACK by default, ``n_init`` 25 (100 above 2000 vertices), seeded, on
  the graph with isolated vertices (no edge at all) removed; these get label -1 (docs/methods.md §2.1).
* :func:`ncut` (docs/methods.md §3.3): sum over clusters of ``cut(c) / (vol(c) + 1e-8)``.
* :func:`clusterability` (docs/methods.md §3.4): shuffle every weight block of the graph (all entries, zeros
  included, after removing the originally isolated vertices), re-cluster, and compare the true n-cut
  with the null distribution: mean, population stdev, z-score and rank percentile ``(r+1)/(n+1)`` with
  ``r = #{null < true}``. The shuffles run in parallel with joblib and are seeded per shuffle.

The ``python -m modularity cluster CHECKPOINT`` command runs :func:`_cluster_command` (its parser: :mod:`modularity.commands`).
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import sparse
from torch import nn

from . import validate
from .choices import EIGEN_SOLVERS
from .errors import ModularityError
from .graph import Block, WeightGraph, adjacency_from_blocks, graph_of
from .utils import atomic_path, rng_for, write_json_atomic

EigenSolver = Literal["arpack", "amg", "lobpcg", "dense"]
DENSE_MAX_VERTICES = 6000  # eigen_solver="dense" holds an n x n float64 matrix and costs O(n^3)
NCUT_EPS = 1e-8  # added to every cluster volume, as the reference does
LARGE_GRAPH = 2000  # above this many vertices the reference uses 100 k-means restarts instead of 25


def default_n_init(n_vertices: int) -> int:
    """The reference's k-means restarts: 25, or 100 for graphs of more than 2000 vertices."""
    return 100 if n_vertices > LARGE_GRAPH else 25


def ncut(adjacency: sparse.spmatrix | np.ndarray, labels: np.ndarray) -> float:
    """Normalised cut ``sum_c cut(c) / (vol(c) + 1e-8)`` of a labelling; vertices labelled -1 are ignored.

    ``cut(c)`` is the weight of edges leaving cluster ``c`` and ``vol(c)`` the sum of its vertices'
    degrees, both within the graph restricted to labelled vertices. Range ``[0, k]``; lower = more
    clusterable.
    """
    adj = sparse.csr_matrix(adjacency, dtype=np.float64)
    labels = np.asarray(labels)
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise ModularityError(f"adjacency must be square, got shape {adj.shape}")
    if labels.shape != (adj.shape[0],):
        raise ModularityError(f"need one label per vertex: {labels.shape[0] if labels.ndim else 0} labels for "
                              f"{adj.shape[0]} vertices")
    keep = labels >= 0
    if not keep.any():
        return 0.0
    sub = adj[keep][:, keep]
    _, codes = np.unique(labels[keep], return_inverse=True)
    onehot = sparse.csr_matrix((np.ones(codes.size), (np.arange(codes.size), codes)))
    between = (onehot.T @ sub @ onehot).toarray()  # (k, k) weight between clusters
    vol = between.sum(axis=1)
    cut = vol - np.diag(between)
    return float(np.sum(cut / (vol + NCUT_EPS)))


def _random_state(seed: int, *keys: int | str) -> int:
    """An integer seed for scikit-learn, derived from the run seed and a stage key."""
    return int(rng_for(seed, *keys).integers(2**31 - 1))


def check_k(k: Any, n_kept: int) -> None:
    """``k`` must be an integer from 2 to (non-isolated vertices - 1), the most ARPACK can find."""
    if n_kept < 3:
        raise ModularityError(f"the graph has {n_kept} non-isolated vertices (are all its weights zero?); "
                              "partitioning needs at least 3")
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 2 or k >= max(n_kept, 2):
        raise ModularityError(f"k must be an integer from 2 to {n_kept - 1} (the number of non-isolated vertices "
                              f"minus one) for this graph, got {k!r}")


def spectral_labels(adjacency: sparse.spmatrix, k: int, random_state: int, n_init: int | None = None,
                    eigen_solver: EigenSolver = "arpack") -> np.ndarray:
    """Spectral clustering labels of every vertex; isolated vertices get -1 and are not clustered."""
    adj = sparse.csr_matrix(adjacency, dtype=np.float64)
    keep = np.asarray(adj.sum(axis=1)).ravel() > 0
    n_kept = int(keep.sum())
    check_k(k, n_kept)
    if eigen_solver not in EIGEN_SOLVERS:
        raise ModularityError(f"unknown eigen_solver {eigen_solver!r}; choose from {', '.join(EIGEN_SOLVERS)}")
    if adj.nnz and not np.isfinite(adj.data).all():
        raise ModularityError(f"adjacency has {int((~np.isfinite(adj.data)).sum())} non-finite weight(s) (NaN or inf)")
    if adj.nnz and adj.data.min() < 0:
        raise ModularityError("adjacency has negative weights; spectral clustering needs non-negative affinities")
    from sklearn.cluster import SpectralClustering

    sub = adj[keep][:, keep]
    if eigen_solver == "dense":
        labels = np.full(adj.shape[0], -1, dtype=np.int64)
        labels[keep] = _dense_spectral_labels(sub, int(k), random_state, n_init or default_n_init(n_kept))
        return labels
    model = SpectralClustering(n_clusters=int(k), affinity="precomputed", assign_labels="kmeans",
                               eigen_solver=eigen_solver, n_init=n_init or default_n_init(n_kept),
                               random_state=random_state)
    with warnings.catch_warnings():
        # Disconnected graphs (pruned nets) are expected; the embedding separates components for free.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        try:
            sub_labels = model.fit(sub).labels_
        except MemoryError:
            raise ModularityError(f"{eigen_solver} ran out of memory on this graph ({n_kept} vertices, {sub.nnz} "
                                  "stored edges; ARPACK's shift-invert LU factorisation fills in); "
                                  "try eigen_solver='lobpcg' or 'amg'") from None
    labels = np.full(adj.shape[0], -1, dtype=np.int64)
    labels[keep] = sub_labels
    return labels


def _dense_spectral_labels(adjacency: sparse.csr_matrix, k: int, random_state: int, n_init: int) -> np.ndarray:
    """scikit-learn's ARPACK spectral clustering with the eigenvectors from a dense LAPACK solve instead.

    Every step but the eigensolver is scikit-learn 1.9's ``SpectralClustering.fit`` for
    ``affinity="precomputed", eigen_solver="arpack"``: the normalised Laplacian with unit diagonal, the
    ``k`` eigenvectors of smallest eigenvalue scaled by ``D^-1/2``, the deterministic sign flip, and
    ``k_means`` with the same ``RandomState`` stream (the ARPACK start vector is drawn and discarded,
    so that k-means gets the same initialisations). ``scipy.linalg.eigh(subset_by_index=[0, k-1])``
    replaces ARPACK's shift-invert Lanczos (an LU factorisation and ~250 triangular solves): on the
    1818-vertex MLP graph it is about 2x faster. The eigenvectors agree with ARPACK's to rounding,
    except inside a repeated eigenvalue (a graph with several components), where any basis of the
    eigenspace is as valid; docs/partition.md gives the measured agreement of labels and n-cuts.
    """
    from scipy.linalg import eigh
    from scipy.sparse.csgraph import laplacian
    from sklearn.cluster import k_means

    n = adjacency.shape[0]
    if n > DENSE_MAX_VERTICES:
        raise ModularityError(f"eigen_solver='dense' is for graphs of at most {DENSE_MAX_VERTICES} non-isolated vertices "
                              f"(this one has {n}); use 'arpack', 'lobpcg' or 'amg'")
    rs = np.random.RandomState(random_state)
    lap, dd = laplacian(adjacency, normed=True, return_diag=True)
    dense = lap.toarray()
    np.fill_diagonal(dense, 1.0)
    rs.uniform(-1, 1, n)  # sklearn's _init_arpack_v0 draw: keeps k-means on the ARPACK path's stream
    _, vecs = eigh(dense, subset_by_index=[0, k - 1], check_finite=False)
    emb = vecs.T / dd
    rows = np.arange(emb.shape[0])
    emb *= np.sign(emb[rows, np.argmax(np.abs(emb), axis=1)])[:, None]  # sklearn's _deterministic_vector_sign_flip
    _, labels, _ = k_means(emb.T, k, random_state=rs, n_init=n_init)
    return np.asarray(labels)


@dataclass(eq=False)
class Partition:
    """A spectral partition of a :class:`WeightGraph`.

    Attributes:
        labels: cluster of every vertex (graph vertex order), -1 for removed isolated vertices.
        k: number of clusters asked for.
        ncut: the n-cut of ``labels`` on the graph.
        graph: the partitioned graph.
        seed: run seed (the scikit-learn ``random_state`` is derived from it).
        n_init: k-means restarts used.
        eigen_solver: ``arpack`` (the paper), ``amg``, ``lobpcg`` or ``dense`` (ARPACK's result, faster).
    """

    labels: np.ndarray
    k: int
    ncut: float
    graph: WeightGraph
    seed: int
    n_init: int
    eigen_solver: str

    def labels_of(self, layer: str) -> np.ndarray:
        """The labels of one layer's units (index order)."""
        return self.labels[self.graph.layer_slice(layer)]

    def table(self) -> pd.DataFrame:
        """Tidy labels: columns ``layer``, ``index``, ``label`` (one row per vertex)."""
        out = self.graph.units.copy()
        out["label"] = self.labels
        out.attrs = {"k": self.k, "seed": self.seed, "ncut": self.ncut, "n_init": self.n_init,
                     "eigen_solver": self.eigen_solver, **self.graph.params}
        return out

    def cluster_sizes(self) -> pd.Series:
        """Number of vertices per cluster label (-1 = isolated), sorted by label."""
        return pd.Series(self.labels).value_counts().sort_index().rename("size")

    @property
    def n_isolated(self) -> int:
        return int((self.labels < 0).sum())


def partition(graph: WeightGraph, k: int = 12, seed: int = 0, n_init: int | None = None,
              eigen_solver: EigenSolver = "arpack") -> Partition:
    """Normalised spectral clustering of ``graph`` into ``k`` clusters (docs/methods.md §3.1), seeded.

    ``n_init`` defaults to 25 k-means restarts, 100 above 2000 non-isolated vertices.
    """
    if not isinstance(graph, WeightGraph):
        raise ModularityError(f"partition() needs a WeightGraph (from graph_of), got {type(graph).__name__}")
    validate.seed(seed)
    validate.n_init(n_init)
    validate.finite_graph(graph)
    n_kept = int((~graph.isolated()).sum())
    check_k(k, n_kept)
    n_init = n_init or default_n_init(n_kept)
    labels = spectral_labels(graph.adjacency, k, _random_state(seed, "partition", int(k)), n_init, eigen_solver)
    return Partition(labels, int(k), ncut(graph.adjacency, labels), graph, int(seed), int(n_init), eigen_solver)


# --------------------------------------------------------------------------------------------------
# Clusterability: the layer-shuffle null


@dataclass
class Clusterability:
    """A network's n-cut against its shuffle null (docs/methods.md §3.4).

    ``percentile = (#{null < ncut} + 1) / (n_shuffles + 1)``: ``1/(n+1)`` = more clusterable than every
    shuffle, 1 = less clusterable than all. ``stdev`` is the population standard deviation (ddof=0).
    """

    ncut: float
    null_ncuts: np.ndarray
    mean: float
    stdev: float
    z_score: float
    percentile: float
    k: int
    n_shuffles: int
    seed: int
    n_init: int
    eigen_solver: str
    n_vertices: int
    n_isolated: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (null n-cuts as a list)."""
        d = asdict(self)
        d["null_ncuts"] = [float(x) for x in self.null_ncuts]
        return d

    def to_frame(self) -> pd.DataFrame:
        """One tidy row: the statistics and every parameter that made them (no null n-cuts)."""
        row = {k: v for k, v in asdict(self).items() if k not in ("null_ncuts", "params")}
        return pd.DataFrame([{**row, **self.params}])

    def __getitem__(self, key: str) -> Any:  # dict-style access, as the contract allows either
        return getattr(self, key)


def null_statistics(true_ncut: float, null_ncuts: np.ndarray) -> dict[str, float]:
    """Mean, population stdev, z-score and rank percentile ``(r+1)/(n+1)`` of a true n-cut vs its null."""
    null = np.asarray(null_ncuts, dtype=np.float64)
    if null.size == 0:
        return {"mean": float("nan"), "stdev": float("nan"), "z_score": float("nan"), "percentile": float("nan")}
    mean, sd = float(null.mean()), float(null.std(ddof=0))
    z = (true_ncut - mean) / sd if sd > 0 else float("nan")
    pct = (int((null < true_ncut).sum()) + 1) / (null.size + 1)
    return {"mean": mean, "stdev": sd, "z_score": float(z), "percentile": float(pct)}


def shuffled_blocks(graph: WeightGraph, rng: np.random.Generator) -> tuple[list[Block], np.ndarray]:
    """One layer shuffle: every block restricted to the non-isolated vertices, entries permuted.

    Returns the permuted blocks (over the kept vertices of each layer) and the kept-vertex mask.
    """
    keep = ~graph.isolated()
    kept_of = {s.name: np.flatnonzero(keep[graph.layer_slice(s.name)]) for s in graph.layers}
    out = []
    for b in graph.blocks:
        sub = b.weights[np.ix_(kept_of[b.src], kept_of[b.dst])]
        out.append(Block(b.src, b.dst, rng.permutation(sub.ravel()).reshape(sub.shape)))
    return out, keep


def _shuffled_ncut(graph: WeightGraph, k: int, seed: int, index: int, n_init: int | None,
                   eigen_solver: EigenSolver) -> float:
    blocks, keep = shuffled_blocks(graph, rng_for(seed, "shuffle", index))
    kept_layers = [_with_width(s, int(keep[graph.layer_slice(s.name)].sum())) for s in graph.layers]
    adj = adjacency_from_blocks(kept_layers, blocks)
    labels = spectral_labels(adj, k, _random_state(seed, "shuffle-cluster", index), n_init, eigen_solver)
    return ncut(adj, labels)


def _with_width(spec: Any, width: int) -> Any:
    from dataclasses import replace

    return replace(spec, width=width)


def clusterability(model_or_graph: nn.Module | WeightGraph, k: int = 12, n_shuffles: int = 50, seed: int = 0,
                   n_jobs: int = -1, n_init: int | None = None, eigen_solver: EigenSolver = "arpack",
                   **graph_kw: Any) -> Clusterability:
    """The n-cut of a network's partition against ``n_shuffles`` layer shuffles of its weights.

    ``model_or_graph`` is a model (graphed with :func:`graph_of` and ``graph_kw``) or a graph. Shuffles
    are independent of ``n_jobs`` (each is seeded by ``rng_for(seed, "shuffle", i)``).
    """
    validate.clusterability_options(k, n_shuffles, seed, n_jobs, n_init)
    graph = model_or_graph if isinstance(model_or_graph, WeightGraph) else graph_of(model_or_graph, **graph_kw)
    true = partition(graph, k=k, seed=seed, n_init=n_init, eigen_solver=eigen_solver)
    null = np.asarray(_run_shuffles(graph, k, seed, n_shuffles, n_jobs, n_init, eigen_solver), dtype=np.float64)
    stats = null_statistics(true.ncut, null)
    return Clusterability(ncut=true.ncut, null_ncuts=null, k=int(k), n_shuffles=n_shuffles, seed=int(seed),
                          n_init=true.n_init, eigen_solver=eigen_solver, n_vertices=graph.n_vertices,
                          n_isolated=true.n_isolated, params=dict(graph.params), **stats)


def _run_shuffles(graph: WeightGraph, k: int, seed: int, n: int, n_jobs: int, n_init: int | None,
                  eigen_solver: EigenSolver) -> list[float]:
    from .progress import bar

    if n == 0:
        return []
    if n_jobs == 1:
        return [_shuffled_ncut(graph, k, seed, i, n_init, eigen_solver)
                for i in bar(range(n), desc=f"shuffle null k={k}", unit="shuffle")]
    from joblib import Parallel, delayed

    jobs = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(_shuffled_ncut)(graph, k, seed, i, n_init, eigen_solver)
                                                          for i in range(n))
    return list(bar(jobs, desc=f"shuffle null k={k}", total=n, unit="shuffle"))


# --------------------------------------------------------------------------------------------------
# CLI: python -m modularity cluster CHECKPOINT --k 12


def output_paths(checkpoint: Path, k: int, seed: int, out: Path | None = None) -> tuple[Path, Path]:
    """Where ``cluster`` writes its labels CSV and JSON summary."""
    folder = out if out is not None else checkpoint.parent
    from .naming import cli_stem

    stem = cli_stem(checkpoint, k, seed)
    return folder / f"{stem}-labels.csv", folder / f"{stem}-summary.json"


def _cluster_command(args: argparse.Namespace) -> int:
    from .user_model import resolve_model
    from .utils import sha256_file

    validate.cluster_command(args)
    t0 = time.perf_counter()
    model, meta, source = resolve_model(args)  # a tag checkpoint, or --model (then `source` names the outputs)
    graph = graph_of(model, conv_norm=args.conv_norm, fold_batchnorm=not args.no_fold_batchnorm)
    part = partition(graph, k=args.k, seed=args.seed, n_init=args.n_init, eigen_solver=args.eigen_solver)
    summary: dict[str, Any] = {
        "checkpoint": str(source), "checkpoint_sha256": sha256_file(source) if source.is_file() else None,
        "tag": meta.get("tag"), "train_seed": meta.get("seed"), "pruned": meta.get("pruned"),
        "k": part.k, "seed": part.seed, "n_init": part.n_init, "eigen_solver": part.eigen_solver,
        "ncut": part.ncut, "n_vertices": graph.n_vertices, "n_isolated": part.n_isolated,
        "cluster_sizes": {str(k): int(v) for k, v in part.cluster_sizes().items()}, **graph.params,
    }
    line = (f"{meta.get('tag') or meta.get('model')} {source.stem}: {graph.n_vertices} vertices ({part.n_isolated} isolated), "
            f"k={part.k}, n-cut {part.ncut:.4f}")
    if args.shuffles:
        cl = clusterability(graph, k=args.k, n_shuffles=args.shuffles, seed=args.seed, n_jobs=args.jobs,
                            n_init=args.n_init, eigen_solver=args.eigen_solver)
        summary.update({"n_shuffles": cl.n_shuffles, "null_ncuts": cl.null_ncuts.tolist(), "null_mean": cl.mean,
                        "null_stdev": cl.stdev, "z_score": cl.z_score, "percentile": cl.percentile})
        line += (f"; null ({cl.n_shuffles} shuffles) mean {cl.mean:.4f} sd {cl.stdev:.4f}, z {cl.z_score:.2f}, "
                 f"percentile {cl.percentile:.4f}")
    summary["elapsed_s"] = round(time.perf_counter() - t0, 3)
    labels_path, summary_path = output_paths(source, args.k, args.seed, args.out)
    with atomic_path(labels_path) as tmp:
        part.table().to_csv(tmp, index=False)
    write_json_atomic(summary_path, summary)
    print(line)
    print(f"wrote {labels_path} and {summary_path}")
    return 0
