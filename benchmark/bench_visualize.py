"""Feature-visualisation benchmark: batched images against one objective at a time.

``python -m benchmark.bench_visualize`` partitions a network (k=12), keeps the sub-clusters that pass
the reference's Lucid size filter, gives each 9 random same-size sets, and optimises their images
(same steps, same image size, same code) two ways in one run:

* batched: all images of the network, each with its own objective, in chunks of ``batch_size="auto"``
  (the library default: all MLP images at once, 18 small-CNN images, :func:`auto_batch_size`);
* one at a time: the same images, one per optimisation (``batch_size=1``), as the reference ran Lucid.

It records images optimised per second for both and their ratio under the key
``feature_visualisation`` of ``paper/performance.json``, plus the largest difference between the two
ways' images and activations reached. They agree to float tolerance, except that an image can take a
slightly different path where its objective is flat: Adam divides each gradient by its running RMS, so
rounding-level differences in near-zero gradient components become full-size steps; the activations
reached still agree (``max_rel_activation_difference``). An image's cost depends on its layer (the
forward pass stops at the deepest layer it needs), so the one-at-a-time rate is measured on
``--single-images`` images spread evenly over all of them (all with ``0``) to keep the run short; the
JSON says how many.

Peer: torch-lucent 0.1.8 ``render_vis`` (``pip install -e .[bench]``; recorded as ``"not installed"``
when missing), on the same targets, steps, Adam learning rate (0.05) and image size, with its options
set to do no more work than ours: no transforms, no preprocessing, no upsampling to 224
(``fixed_image_size`` = the image side), a 1-channel FFT image (``param.image(..., channels=1)``): one
objective per call (``lucent_single``, on the first ``--lucent-single-images`` images) and one call per
chunk of our chunk size with a vectorised objective (``lucent_batched``: minus the per-image unit mask
dotted with the per-image activations, the best batching a Lucent user can write; the same chunks as
ours, since one call for all 300 small-CNN images is memory-bound for Lucent as it was for us).

The ceiling: ``network_floor_seconds`` times the work no implementation can skip, the network's
forward pass to the images' layers and its backward pass to the pixels, in the same chunks and steps
(pixels as parameters, no Fourier basis, no override, plain SGD). ``ceiling_vs_lucent_batched``
(Lucent batched's time over it) bounds the speed-up any renderer could have over Lucent batched. Lucent has no ReLU gradient
override, so it does slightly less work per step than ours. Each Lucent call gets a fresh copy of the
model, because ``render_vis`` leaves its forward hooks on the model it is given.

Networks: the MNIST MLP (the trained pruned checkpoint ``data/checkpoints/MNIST/seed0/pruned.pt``
when it exists, else Glorot-initialised) and the small MNIST CNN (``data/checkpoints/CNN-MNIST/seed0/
unpruned.pt`` when it exists, else random); ``--checkpoints`` names another root, and a network found in
neither is taken from the pipeline's roots (``bench_lesion.PIPELINE_CHECKPOINTS``) before a random one.
``batched_speedup`` at the top level is the MLP's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.performance import PERFORMANCE_JSON, record

CHECKPOINTS = {"mlp": ("MNIST", Path("data/checkpoints/MNIST/seed0/pruned.pt")),
               "small-cnn": ("CNN-MNIST", Path("data/checkpoints/CNN-MNIST/seed0/unpruned.pt"))}


def network(name: str, root: Path | None = None) -> tuple[torch.nn.Module, str]:
    """The benchmark network and a note on its weights (``root``: another checkpoint root)."""
    from benchmark.bench_lesion import PIPELINE_CHECKPOINTS
    from modularity.models import build_model, load_checkpoint

    tag, path = CHECKPOINTS[name]
    if root is not None:
        path = root / path.relative_to("data/checkpoints")
    # then those of `make reproduce` (the default's MLP, cnn-short's CNN), as bench_lesion takes them
    rel = path.relative_to(path.parents[2])
    path = next((q for q in (path, *(r / rel for r in PIPELINE_CHECKPOINTS)) if q.is_file()), path)
    if path.is_file():
        return load_checkpoint(path)[0], f"trained ({path})"
    torch.manual_seed(0)
    return build_model(tag).eval(), "random init (no trained checkpoint found)"


def images_to_optimise(model: torch.nn.Module, k: int, n_random: int, seed: int) -> tuple[list, list]:
    """(targets, keys) of every filtered sub-cluster and its random sets, as visualize_subclusters builds them."""
    from modularity.graph import graph_of
    from modularity.partition import partition
    from modularity.subclusters import random_sets, subclusters
    from modularity.visualize import size_filter

    subs = size_filter(subclusters(partition(graph_of(model), k=k, seed=seed)))
    targets, keys = [], []
    for sc in subs:
        rand = random_sets(sc, n_random, seed)
        for d in range(n_random + 1):
            targets.append((sc.layer, sc.units if d == 0 else rand[d - 1]))
            keys.append((sc.layer, sc.cluster, d))
    return targets, keys


def compare(model: torch.nn.Module, targets: list, keys: list, steps: int, n_single: int) -> dict[str, Any]:
    """Time batched against one-at-a-time optimisation of the same images."""
    from modularity.visualize import VisConfig, visualize_sets

    config = VisConfig(steps=steps)
    visualize_sets(model, targets[:2], keys[:2], 0, VisConfig(steps=2), device="cpu")  # warm-up
    t0 = time.perf_counter()
    batched = visualize_sets(model, targets, keys, 0, config, batch_size="auto", device="cpu")
    t_batched = time.perf_counter() - t0
    n_single = len(targets) if n_single <= 0 else min(n_single, len(targets))
    pick = spread(len(targets), n_single)
    n_single = len(pick)
    t0 = time.perf_counter()
    single = visualize_sets(model, [targets[i] for i in pick], [keys[i] for i in pick], 0, config, batch_size=1,
                            device="cpu")
    t_single = time.perf_counter() - t0
    a = batched.table.activation.to_numpy()[pick]
    b = single.table.activation.to_numpy()
    rate_batched, rate_single = len(targets) / t_batched, n_single / t_single
    return {
        "images": len(targets), "steps": steps, "image_shape": list(batched.images.shape[1:]),
        "chunk": chunk_size(model, batched.images.shape[1:]),
        "batched_seconds": round(t_batched, 3), "batched_images_per_second": round(rate_batched, 2),
        "single_images_timed": n_single, "single_seconds": round(t_single, 3),
        "single_images_per_second": round(rate_single, 3),
        "batched_speedup": round(rate_batched / rate_single, 2),
        "max_abs_image_difference": float(np.abs(batched.images[pick] - single.images).max()),
        "images_differing_over_1e-3": int((np.abs(batched.images[pick] - single.images)
                                           .reshape(n_single, -1).max(1) > 1e-3).sum()),
        "max_rel_activation_difference": float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))),
    }


def spread(n: int, m: int) -> list[int]:
    """``m`` indices spread evenly over ``range(n)``: a sample of every layer's images, not only the first
    layer's (an image's cost depends on its layer: the forward pass stops at the deepest one it needs)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, m).round()})


def chunk_size(model: torch.nn.Module, image_shape: Any) -> int:
    """Images per chunk under ``batch_size="auto"`` (float32, CPU)."""
    from modularity.featurevis.render import auto_batch_size

    return auto_batch_size(model, tuple(int(s) for s in image_shape), torch.device("cpu"))


def network_floor(model: torch.nn.Module, targets: list, steps: int, image_shape: list[int], chunk: int) -> float:
    """Seconds of the work every renderer does: forward to the targets' layers, backward to the pixels."""
    from modularity.featurevis.objectives import UnitSetObjective, _Activations, _working_copy
    from modularity.layers import layer_by_name

    specs = {layer: layer_by_name(model, layer) for layer, _ in targets}
    net, points = _working_copy(model, False, torch.device("cpu"), list(specs.values()))
    point_of = {name: p for name, p in zip(specs, points, strict=True)}
    t0 = time.perf_counter()
    for start in range(0, len(targets), chunk):
        part = [(layer, np.array(units, dtype=np.int64)) for layer, units in targets[start:start + chunk]]  # a writable copy
        objective = UnitSetObjective(part, {n: s.width for n, s in specs.items()}, torch.device("cpu"))
        capture = _Activations(net, [point_of[n] for n in objective.layers], None)
        pixels = torch.full((len(part), *image_shape), 0.5, requires_grad=True)
        opt = torch.optim.SGD([pixels], lr=0.01)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            acts, _ = capture(pixels, need_logits=False)
            (-objective(acts).sum()).backward()
            opt.step()
    return time.perf_counter() - t0


def _lucent_render(model: torch.nn.Module, targets: list, steps: int, image_shape: list[int]) -> None:
    """One ``render_vis`` call optimising one image per target, each with its own unit-mask objective."""
    from lucent.optvis import param, render

    from modularity.layers import layer_by_name

    c, h, w = image_shape
    masks: dict[str, torch.Tensor] = {}
    for b, (layer, units) in enumerate(targets):
        spec = layer_by_name(model, layer)
        name = spec.activation.replace(".", "_")
        masks.setdefault(name, torch.zeros(len(targets), spec.width))[b, torch.from_numpy(np.array(units, dtype=np.int64))] = 1

    def objective(hook: Any) -> torch.Tensor:
        total = torch.zeros(())
        for name, mask in masks.items():
            act = hook(name)
            act = act.mean((2, 3)) if act.dim() == 4 else act
            total = total - (act * mask).sum()
        return total

    render.render_vis(model, objective, param_f=lambda: param.image(w, h, batch=len(targets), channels=c),
                      transforms=[], thresholds=(steps,), preprocess=False, progress=False, show_image=False,
                      fixed_image_size=(h, w))


def compare_lucent(model: torch.nn.Module, targets: list, steps: int, n_single: int, image_shape: list[int],
                   ours_batched_rate: float, chunk: int) -> dict[str, Any]:
    """torch-lucent single and batched (in ``chunk``-image calls), on the same targets; images per second,
    our speed-up, and the ceiling (Lucent batched over the network floor)."""
    import copy
    import importlib.util

    if importlib.util.find_spec("lucent") is None:
        return {"lucent_single": "not installed", "lucent_batched": "not installed"}
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script deprecation in lucent's imports
    n_single = len(spread(len(targets), min(max(n_single, 1), len(targets))))
    starts = range(0, len(targets), chunk)
    copies = [copy.deepcopy(model).eval() for _ in range(n_single + len(starts))]
    _lucent_render(copy.deepcopy(model).eval(), targets[:2], 2, image_shape)  # warm-up
    t0 = time.perf_counter()
    for i, j in enumerate(spread(len(targets), n_single)):
        _lucent_render(copies[i], targets[j:j + 1], steps, image_shape)
    single_rate = n_single / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for j, start in enumerate(starts):
        _lucent_render(copies[n_single + j], targets[start:start + chunk], steps, image_shape)
    batched_seconds = time.perf_counter() - t0
    batched_rate = len(targets) / batched_seconds
    floor = network_floor(model, targets, steps, image_shape, chunk)
    return {"lucent_single_images_timed": n_single, "lucent_single_images_per_second": round(single_rate, 3),
            "lucent_batched_chunk": chunk, "lucent_batched_images_per_second": round(batched_rate, 3),
            "network_floor_seconds": round(floor, 3),
            "ceiling_vs_lucent_batched": round(batched_seconds / floor, 2),
            "speedup_vs_lucent_single": round(ours_batched_rate / single_rate, 2),
            "speedup_vs_lucent_batched": round(ours_batched_rate / batched_rate, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=64, help="Adam updates per image, both ways (default 64)")
    p.add_argument("--k", type=int, default=12)
    p.add_argument("--n-random", type=int, default=9)
    p.add_argument("--single-images", type=int, default=40,
                   help="images timed one at a time per network (0: all; default 40)")
    p.add_argument("--networks", nargs="+", default=list(CHECKPOINTS), choices=list(CHECKPOINTS))
    p.add_argument("--lucent-single-images", type=int, default=8,
                   help="images timed one per render_vis call per network (default 8)")
    p.add_argument("--checkpoints", type=Path, default=None,
                   help="checkpoint root to take the trained networks from (default data/checkpoints)")
    p.add_argument("--no-lucent", action="store_true", help="skip the torch-lucent peer")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for every method (default 1, as the other benchmarks: the cores are shared)")
    p.add_argument("--quick", action="store_true", help="MLP only, 4 steps, 2 single images (for tests)")
    p.add_argument("--out", type=Path, default=PERFORMANCE_JSON)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.networks, args.steps, args.single_images, args.lucent_single_images = ["mlp"], 4, 2, 2

    results: dict[str, Any] = {}
    for name in args.networks:
        model, weights = network(name, args.checkpoints)
        targets, keys = images_to_optimise(model, args.k, args.n_random, seed=0)
        res = compare(model, targets, keys, args.steps, args.single_images)
        if not args.no_lucent:
            res.update(compare_lucent(model, targets, args.steps, args.lucent_single_images, res["image_shape"],
                                      res["batched_images_per_second"], res["chunk"]))
        results[name] = {"weights": weights, "k": args.k, "n_random": args.n_random,
                         "subclusters": len(targets) // (args.n_random + 1), **res}
        print(f"{name}: {res['images']} images x {args.steps} steps: batched {res['batched_images_per_second']} "
              f"img/s, one at a time {res['single_images_per_second']} img/s -> {res['batched_speedup']}x "
              f"(max image difference {res['max_abs_image_difference']:.1e}, "
              f"activation {res['max_rel_activation_difference']:.1e} relative)")
        if "lucent_batched_images_per_second" in res:
            print(f"  vs torch-lucent: {res['speedup_vs_lucent_single']}x one objective per call, "
                  f"{res['speedup_vs_lucent_batched']}x batched with a vectorised objective "
                  f"(in chunks of {res['chunk']}; no renderer can beat Lucent batched by more than "
                  f"{res['ceiling_vs_lucent_batched']}x: the network's own passes take {res['network_floor_seconds']} s)")
    top = results.get("mlp") or next(iter(results.values()))
    ratios = {f"{name}_vs_{peer}": r.get(f"speedup_vs_{peer}", "not installed")
              for name, r in results.items() for peer in ("lucent_single", "lucent_batched")}
    ratios.update({f"{name}_ceiling_vs_lucent_batched": r["ceiling_vs_lucent_batched"]
                   for name, r in results.items() if "ceiling_vs_lucent_batched" in r})
    record("feature_visualisation", {"batched_speedup": top["batched_speedup"], "peer_ratios": ratios,
                                     "networks": results, "device": "cpu", "threads": args.threads,
                                     "quick": args.quick}, path=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
