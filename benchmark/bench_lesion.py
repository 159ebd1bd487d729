"""Lesion engine vs the naive lesion, side by side: ``python -m benchmark.bench_lesion``.

Naive lesion (what the reference does): deep-copy the model, zero the incoming weights and biases of
the lesioned units, run a full forward pass over the test set under ``torch.inference_mode``.
Engine: :func:`modularity.lesion.lesion_counts`, called once per layer with every lesion of that layer
(the true sub-clusters of a k=12 partition and their random same-size sets), as
:func:`modularity.importance.importance` calls it.

The naive cost per lesion does not depend on the lesion (a full forward pass), so it is timed on a
sample of the same lesions, whose counts are also checked against the engine's (they must be equal).
Both run in this process one after the other, with the same threads. Results go to
``paper/performance.json`` under ``"lesion"``: lesions per second of both, the speed-ups, the
effective FLOP rate (full-forward FLOPs x lesions per second) as a fraction of a plain 4096^2 float32
matrix product timed in the same run, and the projected time of 1000 random draws per sub-cluster.

Peers (MLP, same lesion sample as the naive method, counts checked equal to the engine's), each
recorded as ``"not installed"`` when its package is missing (``pip install -e .[bench]``):

* ``hook``: a plain forward hook on the layer's Linear that zeroes the lesioned outputs, full forward;
* ``captum_single``: Captum ``LayerFeatureAblation`` on that Linear, one lesion set per call (a layer
  mask with the set as group 0 and the rest of the layer as group 1: Captum ablates every group);
* ``captum_batched``: the same sample packed into layer masks of disjoint sets (first fit), each mask
  ablated with ``perturbations_per_eval`` = its number of groups (the most a Captum user can batch).

The forward function for Captum returns each image's correctness (argmax == label), so the
attribution of a unit is ``correct(intact) - correct(lesioned)`` per image, from which the per-class
counts follow exactly. The FLOP limit (``flop_limit``) is the least arithmetic a lesion needs given
the intact activations: the rank-|S| change of the next layer's pre-activations (``2 n |S| d_next``)
and the rest of the network over its non-zero weights (``2 n nnz``), at the matrix-product rate.
``--quick`` runs a few hundred images and a handful of lesions (for tests).

Generic path (:func:`compare_generic`, recorded under ``"lesion_generic"``; ``--only-generic`` runs just
this): where the fast engine does not apply (here torchvision ResNet-18, not a flat ``nn.Sequential``),
``lesion_counts`` runs the lesion definition's hook, many lesions per batched forward pass. It is timed
against a plain forward hook and Captum ``LayerFeatureAblation`` (single and batched) on the same lesion
sets, with the counts checked identical, and reported as lesions/s and generic/peer ratios.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.performance import PERFORMANCE_JSON, best_time, record
from benchmark.plan import BENCHMARK_ROOT
from modularity.layers import layer_by_name
from modularity.lesion import lesion_counts


def naive_counts(model: nn.Module, layer: str, units: np.ndarray, x: torch.Tensor, y: torch.Tensor,
                 n_classes: int, batch: int = 10000) -> np.ndarray:
    """The reference's lesion: a weight-zeroed copy of the model, full forward pass."""
    spec = layer_by_name(model, layer)
    m = copy.deepcopy(model).eval()
    conv = m.get_submodule(spec.weight)
    idx = torch.from_numpy(np.array(units, dtype=np.int64))
    with torch.inference_mode():
        conv.weight[idx] = 0
        conv.bias[idx] = 0
        correct = torch.zeros(n_classes, dtype=torch.int64)
        for i in range(0, len(x), batch):
            pred = m(x[i:i + batch]).argmax(1)
            yb = y[i:i + batch]
            correct += torch.bincount(yb[pred == yb], minlength=n_classes)
    return correct.numpy()


def hook_counts(model: nn.Module, layer: str, units: np.ndarray, x: torch.Tensor, y: torch.Tensor,
                n_classes: int, batch: int = 10000, module_name: str | None = None) -> np.ndarray:
    """A plain forward hook zeroing the lesioned units' pre-activations (the layer's Linear output).

    ``module_name``: hook this module's output instead (channels on dimension 1).
    """
    module = model.get_submodule(module_name or layer_by_name(model, layer).weight)
    idx = torch.from_numpy(np.array(units, dtype=np.int64))

    def zero(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        out[:, idx] = 0
        return out

    handle = module.register_forward_hook(zero)
    try:
        with torch.inference_mode():
            correct = torch.zeros(n_classes, dtype=torch.int64)
            for i in range(0, len(x), batch):
                pred = model(x[i:i + batch]).argmax(1)
                yb = y[i:i + batch]
                correct += torch.bincount(yb[pred == yb], minlength=n_classes)
    finally:
        handle.remove()
    return correct.numpy()


def _pack_disjoint(sets: list[np.ndarray]) -> list[list[int]]:
    """First-fit packing of lesion sets into groups of mutually disjoint sets (indices into ``sets``)."""
    packs: list[tuple[list[int], set[int]]] = []
    for i, units in enumerate(sets):
        u = {int(v) for v in units}
        for members, used in packs:
            if not used & u:
                members.append(i)
                used |= u
                break
        else:
            packs.append(([i], set(u)))
    return [members for members, _ in packs]


def captum_counts(model: nn.Module, layer: str, sets: list[np.ndarray], x: torch.Tensor, y: torch.Tensor,
                  n_classes: int, batched: bool, module_name: str | None = None) -> np.ndarray:
    """Per-class correct counts after each lesion, with Captum's ``LayerFeatureAblation``.

    ``module_name``: the module whose output (channels on dimension 1) is ablated; default the layer's
    Linear.
    """
    from captum.attr import LayerFeatureAblation

    spec = layer_by_name(model, layer)
    module = model.get_submodule(module_name or spec.weight)
    width = spec.width

    def correct(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (model(inputs).argmax(1) == labels).float()

    ablator = LayerFeatureAblation(correct, module)
    packs = _pack_disjoint(sets) if batched else [[i] for i in range(len(sets))]
    out = np.zeros((len(sets), n_classes), dtype=np.int64)
    intact = correct(x, y)
    for members in packs:
        mask = torch.full((1, width), len(members), dtype=torch.int64)  # the rest of the layer: last group
        for g, i in enumerate(members):
            mask[0, torch.from_numpy(np.array(sets[i], dtype=np.int64))] = g
        if x.ndim == 4 and module_name is not None:  # conv output (N, C, H, W): one group per channel
            mask = mask[:, :, None, None]
        with torch.no_grad():
            attr = ablator.attribute(x, additional_forward_args=(y,), layer_mask=mask,
                                     perturbations_per_eval=len(members) + 1 if batched else 1)
        for i in members:
            unit = int(np.asarray(sets[i])[0])
            a = attr[:, unit].flatten(1)[:, 0] if attr.ndim > 2 else attr[:, unit]
            lesioned = (intact - a).round().bool()
            out[i] = torch.bincount(y[lesioned], minlength=n_classes).numpy()
    return out


def lesion_flops(model: nn.Module, layer: str, size: int, n_images: int) -> int:
    """Least FLOPs of one lesion given intact activations: rank-|S| update of the next layer + sparse suffix."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    i = linears.index(model.get_submodule(layer_by_name(model, layer).weight))
    nxt = linears[i + 1]
    suffix = sum(int((m.weight != 0).sum()) for m in linears[i + 2:])
    return 2 * n_images * (size * nxt.out_features + suffix)


def bench_peers(model: nn.Module, by_layer: dict[str, list[np.ndarray]], engine_counts: dict[str, np.ndarray],
                engine_rate: float, naive_rate: float, x: torch.Tensor, y: torch.Tensor, n_sample: int,
                matmul_rate: float) -> dict[str, Any]:
    """Hook, Captum (single and batched) and the FLOP limit on an evenly spread sample of the lesions."""
    import importlib.util

    n_classes = int(y.max()) + 1
    flat = [(layer, i) for layer, sets in by_layer.items() for i in range(len(sets))]
    pick = [flat[j] for j in np.linspace(0, len(flat) - 1, min(n_sample, len(flat))).round().astype(int)]
    res: dict[str, Any] = {"sample_lesions": len(pick)}

    def timed(name: str, fn: Any) -> None:
        t0 = time.perf_counter()
        mismatches = 0
        for layer in dict.fromkeys(lay for lay, _ in pick):
            idx = [i for lay, i in pick if lay == layer]
            counts = fn(layer, [by_layer[layer][i] for i in idx])
            mismatches += int(sum(not np.array_equal(c, engine_counts[layer][i]) for c, i in zip(counts, idx, strict=True)))
        rate = len(pick) / (time.perf_counter() - t0)
        res[name] = {"lesions_per_s": round(rate, 3), "engine_speedup": round(engine_rate / rate, 2),
                     "count_mismatches": mismatches}
        print(f"  {name}: {rate:.3f} lesions/s, engine {engine_rate / rate:.1f}x faster, mismatches {mismatches}", flush=True)

    timed("hook", lambda layer, sets: [hook_counts(model, layer, u, x, y, n_classes) for u in sets])
    if importlib.util.find_spec("captum") is None:
        res["captum_single"] = res["captum_batched"] = "not installed"
    else:
        import captum

        res["captum_version"] = captum.__version__
        timed("captum_single", lambda layer, sets: captum_counts(model, layer, sets, x, y, n_classes, batched=False))
        timed("captum_batched", lambda layer, sets: captum_counts(model, layer, sets, x, y, n_classes, batched=True))
    flops = np.mean([lesion_flops(model, layer, len(by_layer[layer][i]), len(x)) for layer, i in flat])
    limit_rate = matmul_rate / flops
    res["flop_limit"] = {"gflop_per_lesion": round(float(flops) / 1e9, 4), "lesions_per_s": round(limit_rate, 1),
                         "engine_fraction_of_limit": round(engine_rate / limit_rate, 4),
                         "engine_below_limit": round(limit_rate / engine_rate, 2)}
    res["naive_engine_speedup"] = round(engine_rate / naive_rate, 2)
    print(f"  FLOP limit {limit_rate:.0f} lesions/s ({flops / 1e9:.3f} GFLOP each): engine at "
          f"{engine_rate / limit_rate:.1%} of it", flush=True)
    return res


def forward_flops(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-add FLOPs (2 per MAC) of one image's forward pass through Linear and Conv2d layers."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Linear):
            total += 2 * m.in_features * m.out_features
        elif isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total += 2 * k * out[0].numel()

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.inference_mode():
        model(example)
    for h in hs:
        h.remove()
    return total


def matmul_flops_per_s(n: int = 4096) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = best_time(lambda: a @ b, repeat=3)
    return 2 * n**3 / t


#: Where `make reproduce` leaves its networks: the default's MLPs, cnn-short's small CNNs, the paper profile's.
PIPELINE_CHECKPOINTS = tuple(BENCHMARK_ROOT / profile / "checkpoints" for profile in ("default", "cnn-short", "paper"))


def load_network(tag: str, pruned: bool, root: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A trained checkpoint if present; else a seeded random network (magnitude-pruned if asked)."""
    from modularity.models import build_model, checkpoint_path, load_checkpoint

    # The trained networks of `python -m modularity train` (root), else those of `make reproduce`.
    candidates = [checkpoint_path(r, tag, 0, pruned) for r in (root, *PIPELINE_CHECKPOINTS)]
    path = next((p for p in candidates if p.is_file()), candidates[0])
    if path.is_file():
        model, _ = load_checkpoint(path)
        return model, {"checkpoint": str(path), "random_weights": False}
    torch.manual_seed(0)
    model = build_model(tag).eval()
    if pruned:
        from modularity.train import magnitude_mask, prunable_weights
        with torch.no_grad():
            for w in prunable_weights(model).values():
                w.mul_(magnitude_mask(w, 0.9))
    return model, {"checkpoint": None, "random_weights": True, "pruned_90": pruned}


def load_test(dataset: str, n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from modularity.data import load_dataset

        ds = load_dataset(dataset)
        return ds.x_test[:n], ds.y_test[:n], dataset
    except Exception as exc:  # noqa: BLE001 - any data problem: fall back to random images
        print(f"  {dataset} unavailable ({exc}); using random images")
        g = torch.Generator().manual_seed(0)
        return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), "random"


def lesions_of(model: nn.Module, k: int, n_draws: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Per layer: each sub-cluster's true units followed by ``n_draws`` random same-size sets."""
    from modularity.graph import graph_of
    from modularity.partition import partition
    from modularity.subclusters import random_sets, subclusters

    part = partition(graph_of(model), k=k, seed=seed)
    out: dict[str, list[np.ndarray]] = {}
    for sc in subclusters(part):
        draws = random_sets(sc, n_draws, seed, exclude_isolated=True) if n_draws else []
        out.setdefault(sc.layer, []).extend([sc.units, *draws])
    return out


def bench_network(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, n_draws: int,
                  n_naive: int, matmul_rate: float, n_peer: int = 0) -> dict[str, Any]:
    print(f"{name}: partition k={k} ...", flush=True)
    by_layer = lesions_of(model, k, n_draws)
    n_subclusters = sum(len(v) for v in by_layer.values()) // (1 + n_draws)
    n_classes = int(y.max()) + 1
    engine_s, setup_s, n_lesions, engine_counts, exact = 0.0, 0.0, 0, {}, 0
    for layer, sets in by_layer.items():
        stats: dict[str, Any] = {}
        t0 = time.perf_counter()
        engine_counts[layer] = lesion_counts(model, layer, sets, x, y, stats=stats)
        dt = time.perf_counter() - t0
        # The per-call setup (checks, cached prefix, intact predictions): a call with one empty lesion.
        t0 = time.perf_counter()
        lesion_counts(model, layer, [[]], x, y)
        setup = time.perf_counter() - t0
        engine_s += dt
        setup_s += min(setup, dt)
        n_lesions += len(sets)
        exact += stats["exact_decisions"]
        print(f"  engine {layer}: {len(sets)} lesions in {dt:.1f} s (setup {setup:.1f} s)", flush=True)
    # Naive: an evenly spread sample of the same lesions (cost per lesion is constant).
    flat = [(layer, i) for layer, sets in by_layer.items() for i in range(len(sets))]
    pick = np.linspace(0, len(flat) - 1, min(n_naive, len(flat))).round().astype(int)
    naive_s, mismatches = 0.0, 0
    for j in pick:
        layer, i = flat[j]
        t0 = time.perf_counter()
        counts = naive_counts(model, layer, by_layer[layer][i], x, y, n_classes)
        naive_s += time.perf_counter() - t0
        mismatches += int(not np.array_equal(counts, engine_counts[layer][i]))
    engine_rate, naive_rate = n_lesions / engine_s, len(pick) / naive_s
    steady_rate = n_lesions / max(engine_s - setup_s, 1e-9)  # per-lesion cost once the setup is amortised
    flops = forward_flops(model, x[:1])
    res = {
        "n_images": len(x), "k": k, "n_subclusters": n_subclusters, "random_draws_per_subcluster": n_draws,
        "engine_lesions": n_lesions, "engine_seconds": round(engine_s, 2),
        "engine_lesions_per_s": round(engine_rate, 2), "naive_lesions": len(pick),
        "naive_seconds": round(naive_s, 2), "naive_lesions_per_s": round(naive_rate, 3),
        "speedup": round(engine_rate / naive_rate, 2), "engine_setup_seconds": round(setup_s, 2),
        "steady_state_speedup": round(steady_rate / naive_rate, 2),
        "naive_engine_count_mismatches": mismatches,
        "exact_float64_decisions": exact, "forward_gflop_per_lesion": round(flops * len(x) / 1e9, 3),
        "naive_flop_fraction_of_matmul": round(flops * len(x) * naive_rate / matmul_rate, 3),
        "engine_effective_flop_fraction_of_matmul": round(flops * len(x) * engine_rate / matmul_rate, 3),
        "minutes_for_1000_draws_per_subcluster": round((setup_s + n_subclusters * 1001 / steady_rate) / 60, 1),
    }
    print(f"  {name}: engine {engine_rate:.2f}/s, naive {naive_rate:.3f}/s, speedup {res['speedup']}x "
          f"(steady state {res['steady_state_speedup']}x), mismatches {mismatches}", flush=True)
    if n_peer:
        res["peers"] = bench_peers(model, by_layer, engine_counts, engine_rate, naive_rate, x, y, n_peer, matmul_rate)
    return res


GENERIC_LAYER, GENERIC_MODULE = "conv1", "relu"
"""ResNet-18's first layer and the module computing its post-activation value (called once per forward)."""


def compare_generic(n_images: int, n_lesions: int, batched_captum: bool = True, seed: int = 0) -> dict[str, Any]:
    """The generic exact lesion path (hooks, many lesions per batch) vs a plain forward hook and Captum.

    Network: torchvision ``resnet18(weights=None, num_classes=10)`` (seeded random weights; not a flat
    ``nn.Sequential``, so :func:`modularity.lesion.lesion_counts` must take its generic path, which its
    ``stats["method"] == "hooks"`` confirms) on ``n_images`` random 3x32x32 images labelled by the intact
    network's own predictions (so every image is correct before a lesion). Lesions: ``n_lesions`` random
    sets of 4..32 of the 64 channels of ``conv1`` (its ReLU output). The generic path runs every lesion in
    one call; the hook and Captum run one lesion set per call (Captum also batched: disjoint sets packed
    into one layer mask); the counts of all must be identical.
    """
    import importlib.util

    from torchvision.models import resnet18

    torch.manual_seed(seed)
    model = resnet18(weights=None, num_classes=10).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_images, 3, 32, 32, generator=g)
    with torch.inference_mode():
        y = model(x).argmax(1)
    n_classes = 10
    rng = np.random.default_rng(seed)
    width = layer_by_name(model, GENERIC_LAYER).width
    sets = [np.sort(rng.choice(width, size=int(rng.integers(4, 33)), replace=False)) for _ in range(n_lesions)]
    stats: dict[str, Any] = {}
    lesion_counts(model, GENERIC_LAYER, sets[:1], x, y)  # warm-up: tracing the copy, caches
    t0 = time.perf_counter()
    generic = lesion_counts(model, GENERIC_LAYER, sets, x, y, stats=stats)
    generic_rate = len(sets) / (time.perf_counter() - t0)
    res: dict[str, Any] = {"network": "torchvision resnet18(weights=None, num_classes=10), seeded random weights",
                           "layer": GENERIC_LAYER, "hooked_module": GENERIC_MODULE, "n_images": n_images,
                           "image_shape": [3, 32, 32], "lesions": len(sets), "engine_method": stats["method"],
                           "generic_lesions_per_s": round(generic_rate, 3), "exact_float64_decisions": stats["exact_decisions"],
                           "intact_correct": n_images, "mean_lesioned_correct": round(float(generic.sum(1).mean()), 2)}
    print(f"generic path ({stats['method']}) on resnet18 {GENERIC_LAYER}, {n_images} images: "
          f"{generic_rate:.2f} lesions/s", flush=True)

    def timed(name: str, fn: Any) -> None:
        t0 = time.perf_counter()
        counts = fn()
        rate = len(sets) / (time.perf_counter() - t0)
        mismatches = int(sum(not np.array_equal(c, e) for c, e in zip(counts, generic, strict=True)))
        res[name] = {"lesions_per_s": round(rate, 3), "generic_over_peer": round(generic_rate / rate, 2),
                     "count_mismatches": mismatches}
        print(f"  {name}: {rate:.3f} lesions/s, generic/{name} {generic_rate / rate:.2f}, mismatches {mismatches}",
              flush=True)

    timed("hook", lambda: [hook_counts(model, GENERIC_LAYER, u, x, y, n_classes, module_name=GENERIC_MODULE)
                           for u in sets])
    if importlib.util.find_spec("captum") is None:
        res["captum_single"] = res["captum_batched"] = "not installed"
    else:
        import captum

        res["captum_version"] = captum.__version__
        timed("captum_single", lambda: captum_counts(model, GENERIC_LAYER, sets, x, y, n_classes, batched=False,
                                                     module_name=GENERIC_MODULE))
        if batched_captum:
            timed("captum_batched", lambda: captum_counts(model, GENERIC_LAYER, sets, x, y, n_classes, batched=True,
                                                          module_name=GENERIC_MODULE))
    res["ratios"] = {f"generic_over_{k}": v["generic_over_peer"] if isinstance(v, dict) else v
                     for k in ("hook", "captum_single", "captum_batched") if (v := res.get(k)) is not None}
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", default="data/checkpoints")
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--k", type=int, default=12)
    p.add_argument("--mlp-draws", type=int, default=20, help="random draws per sub-cluster (engine), MLP")
    p.add_argument("--cnn-draws", type=int, default=2, help="random draws per sub-cluster (engine), CNN")
    p.add_argument("--cnn-images", type=int, default=2000,
                   help="test images for the CNN (default 2000: a CNN lesion costs about 100x an MLP one, and the "
                        "engine-over-naive ratio is per lesion; 10000 took over 10 minutes here)")
    p.add_argument("--naive", type=int, default=12, help="lesions timed with the naive method per network")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both methods (default 1: with the 2 cores shared by other jobs, "
                        "2 threads make fine-grained ops wait for a descheduled thread)")
    p.add_argument("--skip-cnn", action="store_true")
    p.add_argument("--peers", type=int, default=24,
                   help="MLP lesions timed with the hook and Captum (single, batched); 0 skips the peers")
    p.add_argument("--generic-images", type=int, default=64, help="images for the generic-path comparison (ResNet-18)")
    p.add_argument("--generic-lesions", type=int, default=24, help="lesions for the generic-path comparison; 0 skips it")
    p.add_argument("--only-generic", action="store_true",
                   help="run only the generic-path comparison (recorded under 'lesion_generic')")
    p.add_argument("--quick", action="store_true",
                   help="300 images, 1 draw, 2 naive and 3 peer lesions, no CNN; generic: 8 images, 3 lesions (for tests)")
    p.add_argument("--out", type=Path, default=PERFORMANCE_JSON)
    p.add_argument("--no-record", action="store_true", help="print only; do not write paper/performance.json")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.mlp_draws, args.naive, args.peers, args.skip_cnn = 300, 1, 2, 3, True
        args.generic_images, args.generic_lesions = 8, 3
    root = Path(args.checkpoints)
    torch.set_num_threads(args.threads)
    if args.generic_lesions:
        generic = {**compare_generic(args.generic_images, args.generic_lesions), "threads": args.threads,
                   "quick": args.quick}
        if not args.no_record:
            record("lesion_generic", generic, path=args.out)
            print(f"recorded under 'lesion_generic' in {args.out}")
    if args.only_generic:
        return 0
    matmul_rate = matmul_flops_per_s(1024 if args.quick else 4096)
    print(f"plain 4096^2 matmul: {matmul_rate / 1e9:.1f} GFLOP/s, torch threads {torch.get_num_threads()}")
    results: dict[str, Any] = {"matmul_gflop_per_s": round(matmul_rate / 1e9, 2), "threads": args.threads}
    mlp, mlp_src = load_network("MNIST", True, root)
    x, y, ds = load_test("mnist", args.images)
    results["mlp"] = {**bench_network("MLP (MNIST, pruned)", mlp, x, y, args.k, args.mlp_draws, args.naive,
                                      matmul_rate, args.peers), **mlp_src, "dataset": ds}
    if "peers" in results["mlp"]:
        peers = results["mlp"]["peers"]
        results["peer_ratios"] = {  # engine lesions/s over each peer's (the headline numbers)
            "vs_naive": peers["naive_engine_speedup"],
            "vs_hook": peers["hook"]["engine_speedup"],
            **{f"vs_{c}": peers[c]["engine_speedup"] if isinstance(peers[c], dict) else peers[c]
               for c in ("captum_single", "captum_batched")},
            "fraction_of_flop_limit": peers["flop_limit"]["engine_fraction_of_limit"]}
    results["quick"] = args.quick
    results["mlp_speedup"] = results["mlp"]["speedup"]
    results["mlp_steady_state_speedup"] = results["mlp"]["steady_state_speedup"]
    results["mlp_minutes_for_1000_draws"] = results["mlp"]["minutes_for_1000_draws_per_subcluster"]
    if not args.skip_cnn:
        cnn, cnn_src = load_network("CNN-MNIST", False, root)
        n_cnn = min(args.cnn_images, len(x))
        results["cnn"] = {**bench_network("small CNN (CNN-MNIST, unpruned)", cnn, x[:n_cnn], y[:n_cnn], args.k,
                                          args.cnn_draws, max(3, args.naive // 3), matmul_rate), **cnn_src,
                          "dataset": ds}
        results["cnn_speedup"] = results["cnn"]["speedup"]
        results["cnn_steady_state_speedup"] = results["cnn"]["steady_state_speedup"]
    if not args.no_record:
        carry = ("cnn", "cnn_speedup", "cnn_steady_state_speedup") if args.skip_cnn and not args.quick else ()
        record("lesion", results, path=args.out, carry=carry)
        print(f"recorded under 'lesion' in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
