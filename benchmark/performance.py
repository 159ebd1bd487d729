"""Shared helpers for the performance benchmarks (``make bench``).

Each benchmark measures its contenders side by side in one run and records ratios under its own key
in ``paper/performance.json`` (merged, written atomically), so the file holds every benchmark's
latest results.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modularity.utils import write_json_atomic

PERFORMANCE_JSON = Path("paper/performance.json")


def record(key: str, results: dict[str, Any], path: Path = PERFORMANCE_JSON, carry: tuple[str, ...] = ()) -> None:
    """Merge ``results`` under ``key`` into the performance JSON, with machine facts.

    ``carry`` names entries (dotted paths inside ``results``, e.g. ``graphs.resnet50``) that this run
    skipped: their values from the file's previous run are kept and listed under ``carried_over``, so a
    partial run does not erase them, and a reader can tell which numbers come from another run.
    """
    import os

    import torch

    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results = dict(results)
    carried = []
    for dotted in carry:
        *parents, leaf = dotted.split(".")
        old, new = data.get(key, {}), results
        for part in parents:
            old = old.get(part, {}) if isinstance(old, dict) else {}
            new = new.setdefault(part, {})
        if isinstance(old, dict) and leaf in old and leaf not in new:
            new[leaf] = old[leaf]
            carried.append(dotted)
    if carried:
        results["carried_over"] = carried
    data[key] = {**results, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                        "torch_threads": torch.get_num_threads(), "torch": torch.__version__}}
    write_json_atomic(path, data)


def best_time(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best wall-clock seconds of ``repeat`` calls (the least disturbed by a noisy machine)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
