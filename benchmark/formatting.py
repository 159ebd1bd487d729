"""Readable effect sizes for the report's tables.

The reference's effect factors (``effect_*``: a mean over sub-clusters of ``mean(random) / true``)
are means of ratios; one sub-cluster with a tiny true value decides them, so they reach 1e12 for
lesion ranges and 1e54-1e95 for input-coherence entropies (docs/reading-results.md explains why).
Show them as powers of ten, and put the robust log effect (median over sub-clusters of
``log(random / true)``, with its bootstrap interval) beside them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

DASH = "–"


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_factor(x: float | None, digits: int = 3) -> str:
    """A reference effect factor: ``1.165`` as is, ``8.0e54`` as ``10^54.9``, inf as ``inf``."""
    if _missing(x):
        return DASH
    x = float(x)  # type: ignore[arg-type]
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x > 0 and (x >= 1e4 or x < 1e-4):
        return f"10^{math.log10(x):.1f}"
    return f"{x:.{digits}g}"


def _with_interval(text: str, one: Callable[[float | None], str], low: float | None, high: float | None) -> str:
    """``text`` followed by `` [low, high]`` (each formatted by ``one``) unless both bounds are missing."""
    if _missing(low) and _missing(high):
        return text
    return f"{text} [{one(low)}, {one(high)}]"


def fmt_log_effect(value: float | None, low: float | None = None, high: float | None = None, digits: int = 2) -> str:
    """A log effect with its interval: ``0.35 [0.12, 0.61]``; ``–`` where undefined."""
    if _missing(value):
        return DASH

    def one(v: float | None) -> str:
        if _missing(v):
            return DASH
        v = float(v)  # type: ignore[arg-type]
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.3g}"

    return _with_interval(one(value), one, low, high)


def fmt_log_effect_factor(value: float | None, low: float | None = None, high: float | None = None) -> str:
    """The same log effect as a typical factor ``exp(value)``: ``×1.42 [1.13, 1.84]`` (``×10^34.1`` when huge)."""
    if _missing(value):
        return DASH

    def one(v: float | None) -> str:
        if _missing(v):
            return DASH
        v = float(v)  # type: ignore[arg-type]
        if abs(v) > 9:  # beyond ~x8000: powers of ten
            return f"10^{v / math.log(10):.1f}"
        return f"{math.exp(v):.3g}"

    return _with_interval("×" + one(value), one, low, high)


def fmt_effect_pair(factor: float | None, log_effect: float | None, low: float | None = None,
                    high: float | None = None) -> str:
    """The reference's factor beside the robust log effect: ``10^54.9; log 3.41 [2.10, 4.02]``.

    A table cell for ``effect_*`` columns (``benchmark.report``); either part may be missing.
    """
    left, right = fmt_factor(factor), fmt_log_effect(log_effect, low, high)
    if right == DASH:
        return left
    return f"{left}; log {right}"
