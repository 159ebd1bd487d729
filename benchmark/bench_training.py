"""Training benchmark: N MLPs trained together (:func:`modularity.train_batched.train_many`) vs one at a time.

``python -m benchmark.bench_training`` trains the same (tag, seed) jobs both ways in one process, on
the same threads, alternating the order over ``--repeat`` rounds (the machine is shared, so the best
round of each counts), after a warm-up of both. Each way trains every job for ``--epochs`` +
``--pruning-epochs`` epochs on a ``--train-subsample`` of the tags' dataset and writes the usual checkpoints to
a temporary folder; the weights of both ways are compared bitwise (they must be equal).

Recorded under ``training`` in ``paper/performance.json``: networks per minute of both, counted over
the training phases only (the checkpoints' ``phase_seconds``; the accuracy evaluations at saving,
the same work both ways, are excluded) and over the whole call (``wall_*``), their ratios, the
process CPU seconds of both, and whether every network's weights were identical.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmark.performance import PERFORMANCE_JSON, record

DEFAULT_JOBS = ("MNIST:0", "MNIST:1", "MNIST:2", "MNIST+DROPOUT:0", "MNIST+L1REG:0", "MNIST+L2REG:0")


def _phase_seconds(paths: list[dict[str, Path]], batched: bool) -> float:
    """Training-phase seconds from the checkpoints' metadata (a batch records its phase once)."""
    metas = [[json.loads(p.with_suffix(".json").read_text()) for p in job.values()] for job in paths]
    if batched:
        return sum(m["phase_seconds"] for m in metas[0])
    return sum(m["phase_seconds"] for job in metas for m in job)


def _weights_equal(a: list[dict[str, Path]], b: list[dict[str, Path]]) -> bool:
    for ja, jb in zip(a, b, strict=True):
        for phase in ja:
            sa, sb = torch.load(ja[phase], weights_only=True), torch.load(jb[phase], weights_only=True)
            if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
                return False
    return True


def run(jobs: list[tuple[str, int]], train_subsample: int, epochs: int, pruning_epochs: int,
        repeat: int) -> dict[str, Any]:
    """Both ways, ``repeat`` alternating rounds; the best round of each."""
    from modularity.data import load_dataset
    from modularity.models import tag_spec
    from modularity.train import train
    from modularity.train_batched import train_many

    data = load_dataset(tag_spec(jobs[0][0]).dataset)
    kw = dict(epochs=epochs, pruning_epochs=pruning_epochs, train_subsample=train_subsample, progress=False, data=data)
    with tempfile.TemporaryDirectory() as tmp:  # warm-up (first-call costs), then the timed rounds
        train_many(jobs[:2], Path(tmp) / "w", epochs=0, pruning_epochs=1, train_subsample=256, progress=False, data=data)
        train(jobs[0][0], jobs[0][1], Path(tmp) / "w", epochs=0, pruning_epochs=1, train_subsample=256,
              progress=False, data=data)
    best: dict[str, dict[str, float]] = {}
    identical = True
    for r in range(repeat):
        order = ("batched", "single") if r % 2 == 0 else ("single", "batched")
        with tempfile.TemporaryDirectory() as tmp:
            paths: dict[str, list[dict[str, Path]]] = {}
            for way in order:
                root = Path(tmp) / way
                t0, c0 = time.perf_counter(), time.process_time()
                if way == "batched":
                    paths[way] = train_many(jobs, root, **kw)
                else:
                    paths[way] = [train(tag, seed, root, **kw) for tag, seed in jobs]
                m = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                     "phases": _phase_seconds(paths[way], way == "batched")}
                print(f"  round {r + 1} {way:7s}: {m['phases']:.1f} s training phases, {m['wall']:.1f} s wall, "
                      f"{m['cpu']:.1f} s CPU", flush=True)
                best[way] = {k: min(v, best.get(way, {}).get(k, float("inf"))) for k, v in m.items()}
            identical &= _weights_equal(paths["batched"], paths["single"])
    n = len(jobs)
    res: dict[str, Any] = {
        "jobs": [f"{t}:{s}" for t, s in jobs], "networks": n, "train_subsample": train_subsample,
        "epochs": epochs, "pruning_epochs": pruning_epochs, "repeat": repeat, "threads": torch.get_num_threads(),
        "weights_identical": identical,
    }
    for way in ("batched", "single"):
        res[f"{way}_phase_seconds"] = round(best[way]["phases"], 2)
        res[f"{way}_wall_seconds"] = round(best[way]["wall"], 2)
        res[f"{way}_cpu_seconds"] = round(best[way]["cpu"], 2)
        res[f"{way}_networks_per_minute"] = round(60 * n / max(best[way]["phases"], 1e-9), 2)
    res["speedup"] = round(best["single"]["phases"] / max(best["batched"]["phases"], 1e-9), 3)
    res["wall_speedup"] = round(best["single"]["wall"] / best["batched"]["wall"], 3)
    res["cpu_speedup"] = round(best["single"]["cpu"] / best["batched"]["cpu"], 3)
    return res


def parse_jobs(items: list[str]) -> list[tuple[str, int]]:
    out = []
    for item in items:
        tag, _, seed = item.rpartition(":")
        out.append((tag, int(seed)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.bench_training", description=__doc__.splitlines()[0])
    p.add_argument("--jobs", nargs="+", default=list(DEFAULT_JOBS), help="TAG:SEED jobs (MLP tags of one dataset)")
    p.add_argument("--train-subsample", type=int, default=12800)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--pruning-epochs", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2, help="alternating rounds of both ways (best counts)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both ways (default 1)")
    p.add_argument("--quick", action="store_true", help="2 DIGITS networks, 256 images, 1 round (for tests)")
    p.add_argument("--out", type=Path, default=PERFORMANCE_JSON)
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    jobs = parse_jobs(args.jobs)
    if args.quick:
        jobs, args.train_subsample, args.repeat, args.epochs = [("DIGITS", 0), ("DIGITS", 1)], 256, 1, 0
    t0 = time.perf_counter()
    res = run(jobs, args.train_subsample, args.epochs, args.pruning_epochs, args.repeat)
    res["total_seconds"] = round(time.perf_counter() - t0, 1)
    res["quick"] = args.quick
    print(f"{res['networks']} MLPs: batched {res['batched_networks_per_minute']} networks/min, one at a time "
          f"{res['single_networks_per_minute']} -> {res['speedup']}x (wall {res['wall_speedup']}x, CPU "
          f"{res['cpu_speedup']}x); weights identical: {res['weights_identical']}")
    if not args.no_record:
        record("training", res, path=args.out)
        print(f"recorded under 'training' in {args.out}")
    return 0 if res["weights_identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
