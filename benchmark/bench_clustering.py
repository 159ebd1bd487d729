"""Clustering benchmark: ARPACK vs AMG (pyamg) vs LOBPCG vs dense eigen-solvers on the paper's graph sizes.

``python -m benchmark.bench_clustering`` clusters (k=12) the weight graphs of four networks: the small
CNN (192 vertices), the MLP (1818), the CIFAR VGG (4224) and torchvision's ResNet-50 (26560), with each
of scikit-learn's three eigen-solvers and the project's ``dense`` path (scikit-learn's ARPACK pipeline
with a dense LAPACK eigensolve), once each, side by side, and records under the key ``clustering`` of
``paper/performance.json``: seconds (graph-to-labels, k-means included), n-cut, and the ratios
time/time(ARPACK) and n-cut/n-cut(ARPACK); for ``dense`` also whether its labels equal ARPACK's.

The shuffle null (``shuffle_null``): :func:`modularity.partition.clusterability` of the MLP with
``--shuffles`` shuffles on one process (``n_jobs=1``), ARPACK then dense, in the same run: seconds per
network (projected to the paper's 50 shuffles), seconds per clustering, and whether the true labels and
every null n-cut are identical. ``--agreement CHECKPOINT...`` adds, per trained checkpoint, ARPACK vs
dense on its true graph and its first ``--shuffles`` shuffles (same labels, ARI, n-cut difference).

Weights: the trained MNIST MLP (``data/checkpoints/MNIST/seed0/pruned.pt``) when it exists, else
Glorot-initialised; the conv nets are randomly initialised (``torch.manual_seed(0)``), so their n-cuts
measure the solvers, not modularity. k-means restarts follow the paper (25, or 100 above 2000
vertices) except on ResNet-50, where ``--n-init-large`` (default 10) keeps the run under 10 minutes on
a small machine; the JSON says which was used. An eigen-solver that fails (e.g. ARPACK's shift-invert
LU factorisation running out of memory on ResNet-50's 80M-edge graph) is recorded with its error.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.performance import PERFORMANCE_JSON, record
from modularity.errors import ModularityError
from modularity.graph import WeightGraph, graph_of
from modularity.partition import EIGEN_SOLVERS, clusterability, default_n_init, partition

MLP_CHECKPOINT = Path("data/checkpoints/MNIST/seed0/pruned.pt")


def benchmark_graphs(include_resnet50: bool = True, include_vgg: bool = True,
                     mlp_checkpoint: Path = MLP_CHECKPOINT) -> dict[str, tuple[WeightGraph, str]]:
    """The graphs to cluster, by name, with a note on their weights."""
    from modularity.models import build_model, load_checkpoint

    torch.manual_seed(0)
    graphs: dict[str, tuple[WeightGraph, str]] = {"small-cnn": (graph_of(build_model("CNN-MNIST")), "random init")}
    if mlp_checkpoint.is_file():
        mlp, _ = load_checkpoint(mlp_checkpoint)
        graphs["mlp"] = (graph_of(mlp), f"trained ({mlp_checkpoint})")
    else:
        graphs["mlp"] = (graph_of(build_model("MNIST")), "random init (no trained checkpoint found)")
    if include_vgg:
        graphs["cifar-vgg"] = (graph_of(build_model("CNN-VGG-CIFAR10").eval()), "random init")
    if include_resnet50:
        graphs["resnet50"] = (graph_of(build_model("resnet50").eval()), "random init (torchvision)")
    return graphs


def time_solver(graph: WeightGraph, solver: str, k: int, n_init: int, seed: int) -> dict[str, Any]:
    """One clustering run: seconds (wall and process CPU), n-cut and labels, or the error if the solver fails."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        warnings.filterwarnings("ignore", message="Exited", category=UserWarning)  # lobpcg tolerance chatter
        p = partition(graph, k=k, seed=seed, n_init=n_init, eigen_solver=solver)  # type: ignore[arg-type]
    except (ModularityError, MemoryError) as exc:
        return {"seconds": round(time.perf_counter() - t0, 3), "ncut": None, "error": str(exc)}
    return {"seconds": round(time.perf_counter() - t0, 3), "cpu_seconds": round(time.process_time() - c0, 3),
            "ncut": p.ncut, "_labels": p.labels}


def warm_up(k: int, seed: int, solvers: tuple[str, ...] = EIGEN_SOLVERS) -> None:
    """Import scikit-learn, pyamg and ARPACK once, so that the first timed run does not pay for it."""
    from modularity.models import build_model

    graph = graph_of(build_model("DIGITS"))
    for solver in solvers:
        partition(graph, k=k, seed=seed, n_init=1, eigen_solver=solver)  # type: ignore[arg-type]


def shuffle_null(graph: WeightGraph, k: int, seed: int, n_shuffles: int) -> dict[str, Any]:
    """The MLP's clusterability with ARPACK and with the dense solver, one process, side by side."""
    out: dict[str, Any] = {"n_shuffles": n_shuffles, "n_jobs": 1}
    runs = {}
    for solver in ("arpack", "dense"):
        t0, c0 = time.perf_counter(), time.process_time()
        runs[solver] = clusterability(graph, k=k, n_shuffles=n_shuffles, seed=seed, n_jobs=1, eigen_solver=solver)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out[solver] = {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                       "seconds_per_clustering": round(wall / (n_shuffles + 1), 3),
                       "cpu_seconds_per_clustering": round(cpu / (n_shuffles + 1), 3),
                       "seconds_per_network_50_shuffles": round(wall / (n_shuffles + 1) * 51, 1),
                       "cpu_seconds_per_network_50_shuffles": round(cpu / (n_shuffles + 1) * 51, 1)}
        print(f"shuffle null ({n_shuffles} shuffles) {solver}: {out[solver]}", flush=True)
    a, d = runs["arpack"], runs["dense"]
    out["speedup"] = round(out["arpack"]["seconds"] / out["dense"]["seconds"], 3)
    out["cpu_speedup"] = round(out["arpack"]["cpu_seconds"] / out["dense"]["cpu_seconds"], 3)
    out["true_ncut_identical"] = bool(a.ncut == d.ncut)
    out["null_ncuts_identical"] = bool(np.array_equal(a.null_ncuts, d.null_ncuts))
    out["max_abs_null_ncut_difference"] = float(np.max(np.abs(a.null_ncuts - d.null_ncuts))) if n_shuffles else 0.0
    out["percentile_identical"] = bool(a.percentile == d.percentile)
    return out


def agreement(checkpoints: list[Path], k: int, seed: int, n_shuffles: int) -> dict[str, Any]:
    """ARPACK vs dense on trained networks: true partition and the first shuffles."""
    from sklearn.metrics import adjusted_rand_score

    from modularity.graph import adjacency_from_blocks
    from modularity.models import load_checkpoint
    from modularity.partition import _random_state, _with_width, ncut, shuffled_blocks, spectral_labels
    from modularity.utils import rng_for

    out: dict[str, Any] = {}
    for path in checkpoints:
        graph = graph_of(load_checkpoint(path)[0])
        cases = [("true", graph.adjacency, _random_state(seed, "partition", k))]
        for i in range(n_shuffles):
            blocks, keep = shuffled_blocks(graph, rng_for(seed, "shuffle", i))
            layers = [_with_width(s, int(keep[graph.layer_slice(s.name)].sum())) for s in graph.layers]
            cases.append((f"shuffle{i}", adjacency_from_blocks(layers, blocks), _random_state(seed, "shuffle-cluster", i)))
        rows = []
        for name, adj, rs in cases:
            la, ld = spectral_labels(adj, k, rs, None, "arpack"), spectral_labels(adj, k, rs, None, "dense")
            rows.append({"graph": name, "same_labels": bool(np.array_equal(la, ld)),
                         "ari": round(float(adjusted_rand_score(la, ld)), 6),
                         "ncut_abs_difference": abs(ncut(adj, la) - ncut(adj, ld))})
        out[str(path)] = {"cases": len(rows), "same_labels": sum(r["same_labels"] for r in rows),
                          "min_ari": min(r["ari"] for r in rows),
                          "max_ncut_abs_difference": max(r["ncut_abs_difference"] for r in rows),
                          "differing": [r for r in rows if not r["same_labels"]]}
        print(f"agreement {path}: {out[str(path)]}", flush=True)
    return out


def run(k: int = 12, seed: int = 0, n_init_large: int = 10, include_resnet50: bool = True,
        include_vgg: bool = True, mlp_checkpoint: Path = MLP_CHECKPOINT,
        solvers: tuple[str, ...] = EIGEN_SOLVERS) -> dict[str, Any]:
    warm_up(k, seed, solvers)
    results: dict[str, Any] = {"k": k, "seed": seed, "solvers": list(solvers), "graphs": {}}
    for name, (graph, weights) in benchmark_graphs(include_resnet50, include_vgg, mlp_checkpoint).items():
        n_kept = int((~graph.isolated()).sum())
        n_init = n_init_large if name == "resnet50" else default_n_init(n_kept)
        row: dict[str, Any] = {"vertices": graph.n_vertices, "non_isolated": n_kept,
                               "edges": int(graph.adjacency.nnz // 2), "weights": weights, "n_init": n_init,
                               "n_init_note": "reduced from the paper's 100 to fit the time box"
                               if n_init != default_n_init(n_kept) else "paper's rule (25; 100 above 2000)"}
        for solver in solvers:
            row[solver] = time_solver(graph, solver, k, n_init, seed)
            shown = {key: v for key, v in row[solver].items() if key != "_labels"}
            print(f"{name:10s} {graph.n_vertices:6d} vertices  {solver:7s} {shown}", flush=True)
        base = row["arpack"]
        for solver in (s for s in solvers if s != "arpack"):
            r = row[solver]
            ok = base.get("ncut") is not None and r.get("ncut") is not None
            row[f"{solver}_time_ratio"] = round(r["seconds"] / base["seconds"], 3) if ok else None
            row[f"{solver}_ncut_ratio"] = round(r["ncut"] / base["ncut"], 4) if ok and base["ncut"] else None
        dense_ok = base.get("_labels") is not None and row.get("dense", {}).get("_labels") is not None
        row["dense_same_labels_as_arpack"] = bool(np.array_equal(base["_labels"], row["dense"]["_labels"])) if dense_ok else None
        for solver in solvers:
            row[solver].pop("_labels", None)
        results["graphs"][name] = row
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench_clustering", description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-init-large", type=int, default=10, help="k-means restarts on ResNet-50 (paper: 100)")
    parser.add_argument("--no-resnet50", action="store_true", help="skip the 26560-vertex ResNet-50 graph")
    parser.add_argument("--mlp-checkpoint", type=Path, default=MLP_CHECKPOINT,
                        help=f"the trained MLP to cluster (default {MLP_CHECKPOINT}; Glorot init if missing)")
    parser.add_argument("--no-vgg", action="store_true", help="skip the 4224-vertex CIFAR VGG graph")
    parser.add_argument("--shuffles", type=int, default=10,
                        help="shuffles of the MLP's null timed with ARPACK and dense (default 10; 0 skips)")
    parser.add_argument("--agreement", nargs="*", type=Path, default=[],
                        help="trained checkpoints to check ARPACK vs dense on (true graph + --shuffles shuffles)")
    parser.add_argument("--quick", action="store_true", help="small CNN and MLP only, ARPACK and dense only, 1 shuffle (for tests)")
    parser.add_argument("--out", type=Path, default=PERFORMANCE_JSON)
    parser.add_argument("--no-record", action="store_true", help=f"print only; do not write {PERFORMANCE_JSON}")
    args = parser.parse_args(argv)
    if args.quick:
        args.no_resnet50, args.no_vgg, args.shuffles = True, True, 1
    t0 = time.perf_counter()
    solvers = ("arpack", "dense") if args.quick else EIGEN_SOLVERS
    results = run(args.k, args.seed, args.n_init_large, not args.no_resnet50, not args.no_vgg, args.mlp_checkpoint, solvers)
    if args.shuffles:
        mlp_graph, weights = benchmark_graphs(False, False, args.mlp_checkpoint)["mlp"]
        results["shuffle_null"] = {"network": "mlp", "weights": weights,
                                   **shuffle_null(mlp_graph, args.k, args.seed, args.shuffles)}
    if args.agreement:
        results["agreement"] = agreement(args.agreement, args.k, args.seed, args.shuffles)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    results["quick"] = args.quick
    results["note"] = ("one run per solver (no repeats); seconds = graph-to-labels incl. k-means; ratios are "
                       "relative to ARPACK on the same graph, null where a solver failed; the machine is shared, "
                       "so cpu_seconds (this process) is the steadier measure")
    if not args.no_record:
        skipped = [name for name, flag in (("resnet50", args.no_resnet50), ("cifar-vgg", args.no_vgg)) if flag]
        record("clustering", results, path=args.out, carry=tuple(f"graphs.{g}" for g in skipped) if not args.quick else ())
        print(f"recorded under 'clustering' in {args.out}")
    print(f"total {results['total_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

