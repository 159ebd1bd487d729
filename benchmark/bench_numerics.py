"""What pinned numerics cost (modularity/numerics.py): the same work, pinned and native, side by side.

``python -m benchmark.bench_numerics [--rounds 3] [--quick] [--no-record]``

Each round runs, in fresh subprocesses and alternating, one MLP training workload (the paper's
784-256-256-256-256-10 MLP, Adam, batches of 128) and one small-CNN workload (the paper's SmallCNN,
forward + backward), once with ``MODULARITY_NUMERICS=reproducible`` and once with ``native``, one torch
thread each. The best time of each mode is kept (the machine is shared; the minimum is the least
disturbed) and the ratio pinned / native is written to ``paper/performance.json`` under
``numerics``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

WORKLOAD = r"""
import json, sys, time
import modularity, torch
from torch import nn
from modularity.models import MLP, SmallCNN
from modularity.numerics import state
torch.set_num_threads(1)
torch.manual_seed(0)
steps = int(sys.argv[1])
out = {"state": state()}
for name, net, shape in (("mlp", MLP(), (128, 1, 28, 28)), ("cnn", SmallCNN(), (64, 1, 28, 28))):
    x, y = torch.randn(*shape), torch.randint(0, 10, (shape[0],))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    out[name] = time.perf_counter() - t0
out["state"] = state()
print(json.dumps(out))
"""


def _run(mode: str, steps: int) -> dict[str, Any]:
    env = dict(os.environ, MODULARITY_NUMERICS=mode)
    for var in ("ATEN_CPU_CAPABILITY", "MKL_CBWR"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-c", WORKLOAD, str(steps)], cwd=REPO, env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(rounds: int, steps: int) -> dict[str, Any]:
    """Best seconds per workload and mode over ``rounds`` alternating rounds, and the ratios."""
    best: dict[str, dict[str, float]] = {"reproducible": {}, "native": {}}
    states: dict[str, Any] = {}
    for _ in range(rounds):
        for mode in ("reproducible", "native"):
            res = _run(mode, steps)
            states[mode] = res["state"]
            for work in ("mlp", "cnn"):
                best[mode][work] = min(best[mode].get(work, float("inf")), res[work])
    ratios = {work: round(best["reproducible"][work] / best["native"][work], 3) for work in ("mlp", "cnn")}
    return {"steps": steps, "rounds": rounds, "seconds": best, "pinned_over_native": ratios, "kernels": states}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="1 round of 3 steps (for the tests)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave paper/performance.json")
    args = parser.parse_args(argv)
    rounds, steps = (1, 3) if args.quick else (args.rounds, args.steps)
    res = measure(rounds, steps)
    for work in ("mlp", "cnn"):
        print(f"{work}: pinned {res['seconds']['reproducible'][work]:.2f} s, native {res['seconds']['native'][work]:.2f} s "
              f"for {steps} training steps: pinned/native = {res['pinned_over_native'][work]:.2f}")
    if not args.no_record and not args.quick:
        from .performance import record

        record("numerics", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
