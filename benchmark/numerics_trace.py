"""Which torch operation gives other bits on another CPU: a per-operation trace of the smoke training.

``python -m benchmark.numerics_trace [--steps 8] [--out trace.json] [--compare other.json]``

Why: the pinned numerics (``modularity/numerics.py``) give identical bits under every CPU that can be
*emulated* on one machine, yet the smoke training gave other networks on a second real CPU
(2026-12-02, 78 stored values). Finding the kernel needs the two machines' bits side by side. This
runs the first ``--steps`` steps of each smoke network's training (the smoke profile's data, seed,
model, optimiser and pruning schedule, through :func:`modularity.train._run_phase`'s own code) under a
``TorchDispatchMode`` that records every ATen operation's name, shapes and a SHA-256 of its output.
Run it on two machines and ``--compare`` the files: the first differing operation is the kernel.

Traces are kept under ``benchmark/expected/numerics/`` named after the CPU they ran on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import modularity  # noqa: F401  (pins the numerics before torch runs)

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / "benchmark" / "expected" / "numerics"


def _digest(value: Any) -> str | None:
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.layout != torch.strided:
            return None
        return hashlib.sha256(t.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]
    if isinstance(value, (tuple, list)):
        parts = [_digest(v) for v in value]
        return ",".join(p for p in parts if p) or None
    return None


def trace(steps: int = 8) -> dict[str, Any]:
    """Run the smoke trainings' first ``steps`` steps (unpruned phase, then pruning) and record every op."""
    import importlib

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from benchmark import plan
    from modularity import numerics

    train = importlib.import_module("modularity.train")  # the module; ``modularity.train`` is also a function
    from modularity.data import load_dataset
    from modularity.models import build_model, tag_spec
    from modularity.utils import seed_everything

    records: list[list[Any]] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            shapes = [list(a.shape) for a in args if isinstance(a, torch.Tensor)]
            records.append([str(func), shapes, _digest(out)])
            return out

    profile = plan.load_profile("smoke")
    torch.set_num_threads(profile.threads)
    result: dict[str, Any] = {"cpu": numerics.cpu_identity(), "numerics": numerics.state(), "torch": torch.__version__,
                              "steps": steps, "networks": {}}
    for tag in profile.tags or ():
        spec = tag_spec(tag)
        n = profile.section("train", spec.family).get("train_subsample")
        data = train.subsample(load_dataset(spec.dataset), n, 0)
        records.clear()
        gen = seed_everything(0)
        model = build_model(spec)
        first = {"data": _digest(data.x_train), "init": _digest([p for p in model.parameters()])}
        cut = train.Dataset(data.name, data.x_train[: steps * spec.batch_size], data.y_train[: steps * spec.batch_size],
                            data.x_test[:500], data.y_test[:500], data.n_classes)
        torch.use_deterministic_algorithms(True, warn_only=True)
        with Recorder():
            train._run_phase(model, spec, cut, 1, gen, torch.device("cpu"), tag, False, prune=False)
            train._run_phase(model, spec, cut, 1, gen, torch.device("cpu"), tag, False, prune=True)
        result["networks"][tag] = {**first, "final": _digest([p for p in model.parameters()]),
                                   "ops": list(records)}
    return result


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Lines naming, per network, the first operation whose output bits differ between two traces."""
    lines = [f"A: {a['cpu'].get('model name')} (model {a['cpu'].get('model')}); "
             f"B: {b['cpu'].get('model name')} (model {b['cpu'].get('model')})"]
    for tag in a["networks"]:
        ra, rb = a["networks"][tag], b["networks"].get(tag)
        if rb is None:
            lines.append(f"{tag}: not in B")
            continue
        for key in ("data", "init", "final"):
            lines.append(f"{tag}: {key} {'same' if ra[key] == rb[key] else 'DIFFERS'}")
        for i, (oa, ob) in enumerate(zip(ra["ops"], rb["ops"], strict=False)):
            if oa != ob:
                lines.append(f"{tag}: first differing op #{i}: A {oa} / B {ob}")
                break
        else:
            lines.append(f"{tag}: all {min(len(ra['ops']), len(rb['ops']))} ops identical")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="where to write the trace (default: "
                        "benchmark/expected/numerics/<cpu model>.json)")
    parser.add_argument("--compare", type=Path, nargs="*", default=None,
                        help="trace files to compare this machine's trace with (default: every stored one)")
    args = parser.parse_args(argv)
    result = trace(args.steps)
    out = args.out or TRACES / f"cpu-family{result['cpu'].get('cpu family')}-model{result['cpu'].get('model')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=0))
    tmp.replace(out)
    print(f"wrote {out} ({sum(len(n['ops']) for n in result['networks'].values())} ops)")
    others = args.compare if args.compare is not None else [p for p in sorted(TRACES.glob("*.json")) if p != out]
    for other in others:
        print("\n".join(compare(result, json.loads(Path(other).read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
