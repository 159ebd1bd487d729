"""Time the paper profile's small-CNN rows (full recipe) on a GPU, inside a fixed time box.

``benchmark/gpu_cnn_rows.sh`` calls this on a CUDA machine. It takes the stages the ``paper`` profile
plans for the ``cnn`` family (training with the reference's recipe, 10 + 10 epochs on all 60 000
images; clusterability with 50 shuffles; lesions with 20 draws on the whole test set; feature
visualisation with 256 steps), orders them seed by seed (seed 0 of every tag through every stage
first, so that every kind of stage is measured early), and runs them one after another with
``python -m benchmark.stages`` until ``--budget`` seconds are used; a stage that would overrun is
stopped and recorded as such. It writes ``<root>/gpu_cnn_rows.json``: every stage's seconds and exit
status, the mean seconds per stage kind, and the projected time of all the CNN stages (each kind's
mean times its number of stages), which is the evidence for "the paper profile's CNN rows in under
an hour on one GPU". Nothing here claims a result it has not measured: stages not run are counted as
projected, and the JSON says how many ran.

``--dry-run`` prints the ordered stages and exits (works without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmark.plan import Stage, load_profile, load_tables, plan
from modularity.utils import write_json_atomic

DEFAULT_ROOT = Path("data/benchmark/gpu-cnn")


def cnn_stages(profile: str = "paper") -> list[Stage]:
    """The profile's CNN stages, seed-major: training before the analyses of the same network."""
    stages = [s for s in plan(load_profile(profile), load_tables()).stages if s.family == "cnn"]
    kinds = ("train", "cluster", "importance", "coherence")
    return sorted(stages, key=lambda s: (s.seed, s.tag, kinds.index(s.kind), s.pruned))


def command(stage: Stage, root: Path) -> list[str]:
    cmd = [sys.executable, "-m", "benchmark.stages", stage.kind, "--profile", stage.profile, "--tag", stage.tag,
           "--seed", str(stage.seed), "--root", str(root), "--no-progress"]
    if stage.pruned:
        cmd.append("--pruned")
    if stage.ks:
        cmd += ["--k", *map(str, stage.ks)]
    return cmd


def run(stages: list[Stage], root: Path, budget: float) -> dict[str, Any]:
    t_start = time.perf_counter()
    done: list[dict[str, Any]] = []
    for stage in stages:
        left = budget - (time.perf_counter() - t_start)
        if left < 5:
            break
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(command(stage, root), timeout=left, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = "stopped at the time box"
        done.append({"stage": stage.name, "kind": stage.kind, "tag": stage.tag, "seed": stage.seed,
                     "pruned": stage.pruned, "seconds": round(time.perf_counter() - t0, 2), "rc": rc})
        print(f"{stage.name}: {done[-1]['seconds']} s (rc {rc})", flush=True)
    ok = [d for d in done if d["rc"] == 0]
    mean = {kind: sum(d["seconds"] for d in ok if d["kind"] == kind) / n
            for kind in {d["kind"] for d in ok} if (n := sum(d["kind"] == kind for d in ok))}
    count = {kind: sum(s.kind == kind for s in stages) for kind in {s.kind for s in stages}}
    projected = sum(mean[k] * count[k] for k in count if k in mean)
    return {"stages_planned": len(stages), "stages_run": len(done), "stages_ok": len(ok), "budget_seconds": budget,
            "seconds_used": round(time.perf_counter() - t_start, 1), "stages": done,
            "mean_seconds_per_stage": {k: round(v, 2) for k, v in mean.items()}, "stages_per_kind": count,
            "projected_seconds_all_cnn_stages": round(projected, 1) if set(count) <= set(mean) else None,
            "unmeasured_kinds": sorted(set(count) - set(mean))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.gpu_cnn_rows", description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=540, help="seconds for all stages (default 540: 9 minutes)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--profile", default="paper")
    p.add_argument("--dry-run", action="store_true", help="print the ordered stages and exit")
    args = p.parse_args(argv)
    stages = cnn_stages(args.profile)
    if args.dry_run:
        for s in stages:
            print(" ".join(command(s, args.root)[1:]))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA device; this benchmark is for a GPU machine (use --dry-run to see the plan)", file=sys.stderr)
        return 2
    os.environ.setdefault("MODULARITY_DEVICE", "cuda")
    res = run(stages, args.root, args.budget)
    res["device"] = torch.cuda.get_device_name(0)
    res["profile"] = args.profile
    out = args.root / "gpu_cnn_rows.json"
    write_json_atomic(out, res)
    print(json.dumps({k: v for k, v in res.items() if k != "stages"}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
