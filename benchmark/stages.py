"""The pipeline's stages: train, cluster, importance, coherence (one process each under DVC).

``python -m benchmark.stages KIND --profile P --tag T --seed S [--state pruned] [--k 12 8 18] [--root DIR]``

Every stage reads its settings from the profile (``params.yaml``), calls the library
(:mod:`modularity.train`, :mod:`modularity.partition`, :mod:`modularity.importance`,
:mod:`modularity.visualize`) and writes one output folder, built in a staging folder next to it and
renamed into place only when complete, so an interrupted stage leaves nothing half-written and a
re-run starts it afresh. Outputs (see :mod:`benchmark.plan` for the paths):

* train: ``checkpoints/<TAG>/seed<S>/{unpruned,pruned}.{pt,json}``;
* cluster: ``k<K>.json`` (n-cut, shuffle null, accuracies of the checkpoint) and ``k<K>_labels.csv``;
* importance: ``k<K>.json`` (network summary) and ``k<K>.csv`` (one row per sub-cluster);
* coherence: ``k<K>.json``, ``k<K>.csv`` and ``k<K>.png`` (the image grid).

Every ``k<K>.json`` holds the network-level values under ``"values"`` (flat numbers, the columns of
``results.csv``) next to the parameters that made them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from modularity.errors import ModularityError
from modularity.utils import clean_stale_staging

from .analyses import CLUSTER
from .plan import Profile, checkpoint_dir, load_profile, result_dir

# --------------------------------------------------------------------------------------------------
# Helpers


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``final`` (atomic rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    clean_stale_staging(final.parent)  # left by runs killed with SIGKILL (issue 15)
    staging.mkdir()
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def flat_values(summary: dict[str, Any]) -> dict[str, float | int | str | bool]:
    """The scalar entries of a summary (numbers, strings, booleans); 2-tuples become ``_low``/``_high``."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, (bool, np.bool_)):
            out[key] = bool(value)
        elif isinstance(value, (int, np.integer)):
            out[key] = int(value)
        elif isinstance(value, (float, np.floating)):
            out[key] = float(value)
        elif isinstance(value, str):
            out[key] = value
        elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
                isinstance(v, (int, float, np.number)) for v in value):
            out[f"{key}_low"], out[f"{key}_high"] = float(value[0]), float(value[1])
    return out


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_ready(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else str(f)  # JSON has no inf/nan
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_result(folder: Path, k: int, header: dict[str, Any], values: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> None:
    """``k<K>.json``: identifying header, flat ``values`` and anything else worth keeping."""
    doc = {**header, "k": int(k), "values": values, **(extra or {})}
    (folder / f"k{k}.json").write_text(json.dumps(_json_ready(doc), indent=2, sort_keys=True) + "\n")


def read_result(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    doc["values"] = {k: (float(v) if v in ("inf", "-inf", "nan") else v) for k, v in doc["values"].items()}
    return doc


def load_network(root: Path, tag: str, seed: int, pruned: bool) -> tuple[Any, dict[str, Any]]:
    """(model, checkpoint metadata); ImageNet nets are torchvision's pretrained weights."""
    from modularity.models import checkpoint_path, load_checkpoint, tag_spec

    if tag_spec(tag).family == "imagenet":
        from modularity.models import imagenet_model

        return imagenet_model(tag, pretrained=True).eval(), {"tag": tag, "pretrained": "torchvision DEFAULT"}
    return load_checkpoint(checkpoint_path(root / "checkpoints", tag, seed, pruned))


def test_data(tag: str, seed: int, subsample: int | None) -> tuple[Any, Any]:
    """The test split of the tag's dataset, optionally a seeded random subset (class balance not forced)."""
    import torch

    from modularity.models import tag_spec
    from modularity.utils import rng_for

    spec = tag_spec(tag)
    if spec.family == "imagenet":
        from modularity.data import load_imagenet_subset

        folder = os.environ.get("MODULARITY_IMAGENET")
        if not folder:
            raise ModularityError("ImageNet lesions need MODULARITY_IMAGENET=<folder of validation images>")
        x, y = load_imagenet_subset(folder)
    else:
        from modularity.data import load_dataset

        ds = load_dataset(spec.dataset)
        x, y = ds.x_test, ds.y_test
    if subsample is not None and subsample < len(x):
        idx = np.sort(rng_for(seed, "benchmark_test_subsample").permutation(len(x))[:subsample])
        x, y = x[torch.from_numpy(idx)], y[torch.from_numpy(idx)]
    return x, y


def _header(profile: Profile, kind: str, tag: str, seed: int, pruned: bool, settings: dict[str, Any]) -> dict:
    from modularity.models import tag_spec

    return {"analysis": kind, "profile": profile.name, "tag": tag, "family": tag_spec(tag).family, "seed": seed,
            "pruned": pruned, "settings": settings, "graph": profile.graph}


def _graph(model: Any, profile: Profile) -> Any:
    from modularity.graph import graph_of

    return graph_of(model, **profile.graph)


# --------------------------------------------------------------------------------------------------
# Stages


def train_stage(profile: Profile, tag: str, seed: int, root: Path, progress: bool = True) -> Path:
    """Train and prune one network with the profile's recipe for its family."""
    from modularity.models import tag_spec
    from modularity.train import train

    settings = profile.section("train", tag_spec(tag).family)
    final = checkpoint_dir(root, tag, seed)
    with staged_dir(final) as staging:
        tmp_root = staging / "_root"
        paths = train(tag, seed, out=tmp_root, epochs=settings.get("epochs"),
                      pruning_epochs=settings.get("pruning_epochs"),
                      train_subsample=settings.get("train_subsample"), progress=progress)
        for path in paths.values():
            for p in (path, path.with_suffix(".json")):
                os.replace(p, staging / p.name)
        shutil.rmtree(tmp_root)
    return final


def cluster_stage(profile: Profile, tag: str, seed: int, pruned: bool, ks: list[int], root: Path) -> Path:
    """n-cut against the layer-shuffle null at every k, and the partition labels."""
    from modularity.models import tag_spec
    from modularity.partition import clusterability, partition

    family = tag_spec(tag).family
    settings = profile.section("cluster", family)
    model, meta = load_network(root, tag, seed, pruned)
    graph = _graph(model, profile)
    final = result_dir(root, "cluster", tag, seed, pruned)
    header = _header(profile, "cluster", tag, seed, pruned, settings)
    with staged_dir(final) as out:
        for k in ks:
            res = clusterability(graph, k=k, n_shuffles=int(settings.get("n_shuffles", 50)), seed=seed,
                                 n_jobs=int(settings.get("n_jobs", 1)))
            d = res.to_dict() if hasattr(res, "to_dict") else dict(res)
            values = {"ncut": d["ncut"], "null_mean": d["mean"], "null_stdev": d["stdev"], "z_score": d["z_score"],
                      "percentile": d["percentile"], "n_shuffles": d["n_shuffles"],
                      "n_vertices": d.get("n_vertices"), "n_isolated": d.get("n_isolated"),
                      "train_acc": meta.get("train_acc", math.nan), "test_acc": meta.get("test_acc", math.nan)}
            values.update({m: meta[m] for m in CLUSTER.only_some if m in meta})  # the regression nets (POLY)
            write_result(out, k, header, values, {"null_ncuts": d.get("null_ncuts", [])})
            part = partition(graph, k=k, seed=seed)
            part.table().to_csv(out / f"k{k}_labels.csv", index=False, lineterminator="\n")
    return final


def _subclusters(model: Any, profile: Profile, k: int, seed: int, min_size: int = 1, max_prop: float = 1.0) -> list:
    from modularity.partition import partition
    from modularity.subclusters import subclusters

    return subclusters(partition(_graph(model, profile), k=k, seed=seed), min_size=min_size, max_prop=max_prop)


#: The importance section's keys passed to ``modularity.importance`` as they are (params.yaml).
IMPORTANCE_OPTIONS = ("correction", "before_batchnorm", "ties", "complete", "arithmetic", "undefined_ranges",
                      "require_above_chance", "direction")


def importance_stage(profile: Profile, tag: str, seed: int, pruned: bool, ks: list[int], root: Path) -> Path:
    """Lesion tests (importance and output coherence) at every k."""
    from modularity.importance import importance
    from modularity.models import tag_spec

    settings = profile.section("importance", tag_spec(tag).family)
    model, meta = load_network(root, tag, seed, pruned)
    x, y = test_data(tag, seed, settings.get("test_subsample"))
    final = result_dir(root, "importance", tag, seed, pruned)
    header = _header(profile, "importance", tag, seed, pruned, settings)
    kw = {k: settings[k] for k in IMPORTANCE_OPTIONS if k in settings}
    with staged_dir(final) as out:
        for k in ks:
            subs = _subclusters(model, profile, k, seed, max_prop=float(settings.get("max_prop", 1.0)))
            df, summary = importance(model, subs, (x, y), n_random=int(settings.get("n_random", 20)), seed=seed, **kw)
            values = flat_values(summary)
            values.setdefault("n_subclusters", len(df))
            values["n_test"] = len(y)
            df.to_csv(out / f"k{k}.csv", index=False, lineterminator="\n")
            write_result(out, k, header, values)
    return final


def visualise(model: Any, subs: list, settings: dict[str, Any], seed: int) -> Any:
    """Feature visualisation of ``subs`` as the coherence stage runs it, from its section's settings (steps,
    ReLU-override window, dtype, random sets, size filter): one place, so a figure redraws the stage's images."""
    from modularity.visualize import VisConfig, visualize_subclusters

    window = settings.get("relu_override_steps")  # None: the override on every update; 17: Lucid's window
    config = VisConfig(steps=int(settings.get("steps", 256)),
                       relu_override_steps=None if window is None else int(window),
                       dtype=str(settings.get("dtype", "float32")))
    return visualize_subclusters(model, subs, n_random=int(settings.get("n_random", 9)), seed=seed, config=config,
                                 min_size=int(settings.get("min_size", 3)),
                                 max_prop=float(settings.get("max_prop", 0.8)))


def coherence_stage(profile: Profile, tag: str, seed: int, pruned: bool, ks: list[int], root: Path) -> Path:
    """Feature visualisation of every sub-cluster and its random sets at every k, with the image grid."""
    from modularity.models import tag_spec
    from modularity.visualize import coherence_statistics, plot_grid

    settings = profile.section("coherence", tag_spec(tag).family)
    model, _ = load_network(root, tag, seed, pruned)
    final = result_dir(root, "coherence", tag, seed, pruned)
    header = _header(profile, "coherence", tag, seed, pruned, settings)
    with staged_dir(final) as out:
        for k in ks:
            vis = visualise(model, _subclusters(model, profile, k, seed), settings, seed)
            df, summary = coherence_statistics(vis, correction=settings.get("correction", "holm"))
            values = flat_values(summary)
            df.to_csv(out / f"k{k}.csv", index=False, lineterminator="\n")
            write_result(out, k, header, values)
            if k in settings.get("plot_k", [12]):
                plot_grid(vis, out / f"k{k}.png", table=df,
                          title=f"{tag} seed {seed} {'pruned' if pruned else 'unpruned'} k={k}")
    return final


def run_stage(kind: str, profile: Profile, tag: str, seed: int, pruned: bool = False, ks: list[int] | None = None,
              root: Path | None = None, progress: bool = True) -> Path:
    """Run one stage in this process; returns its output folder."""
    import torch
    from threadpoolctl import threadpool_limits

    root = Path(root) if root is not None else profile.root
    fn = {"cluster": cluster_stage, "importance": importance_stage, "coherence": coherence_stage}.get(kind)
    if kind != "train" and fn is None:
        raise ModularityError(f"unknown stage kind {kind!r} (train, cluster, importance, coherence)")
    if kind != "train" and not ks:
        raise ModularityError(f"the {kind} stage needs at least one k")
    # A fixed number of threads: results then do not depend on the machine's core count, and on a
    # busy 2-core machine one thread is several times faster than two fighting ones (measured).
    from .engine import joblib_backend

    previous = torch.get_num_threads()
    torch.set_num_threads(profile.threads)
    try:
        with threadpool_limits(limits=profile.threads), joblib_backend():
            if kind == "train":
                return train_stage(profile, tag, seed, root, progress)
            return fn(profile, tag, seed, pruned, list(ks), root)
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.stages", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["train", "cluster", "importance", "coherence"])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--pruned", action="store_true")
    parser.add_argument("--state", choices=["pruned", "unpruned"], default=None, help="the same as --pruned / not")
    parser.add_argument("--k", type=int, nargs="*", default=[])
    parser.add_argument("--root", type=Path, default=None, help="output root (default: data/benchmark/<profile>)")
    parser.add_argument("--params", type=Path, default=None, help="parameters file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    pruned = args.pruned or args.state == "pruned"
    try:
        t0 = time.perf_counter()
        profile = load_profile(args.profile) if args.params is None else load_profile(args.profile, path=args.params)
        out = run_stage(args.kind, profile, args.tag, args.seed, pruned, args.k, args.root, progress=not args.no_progress)
        print(f"{args.kind} {args.tag} seed {args.seed}: {time.perf_counter() - t0:.0f} s -> {out}")
    except ModularityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
