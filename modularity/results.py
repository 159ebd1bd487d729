"""Typed results of the paper's two lesion / visualisation measures.

:class:`ImportanceResult` (from :func:`modularity.importance`) and :class:`InputCoherenceResult` (from
:func:`modularity.input_coherence`) hold the per-sub-cluster ``table``, the network-level statistics as
declared fields, the full ``summary`` record, ``to_json()`` and plot methods. For code written against
the former ``(table, summary)`` tuples, both still unpack: ``table, summary = importance(...)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .utils import _json_default, write_json_atomic


def _nan() -> float:
    return float("nan")


@dataclass
class _Result:
    table: pd.DataFrame
    summary: dict[str, Any]

    def _record(self) -> dict[str, Any]:
        return dict(self.summary)

    def __iter__(self) -> Iterator[Any]:
        """``table, summary = result`` (the former tuple return)."""
        yield self.table
        yield self._record()

    def __getitem__(self, i: int) -> Any:
        return (self.table, self._record())[i]

    def __len__(self) -> int:
        return 2

    def to_json(self, path: str | Path | None = None) -> str:
        """The summary as JSON (written atomically to ``path`` if given); raw counts are left out."""
        text = json.dumps(self.summary, default=_json_default, indent=2, sort_keys=True)
        if path is not None:
            write_json_atomic(path, self.summary)
        return text


@dataclass
class ImportanceResult(_Result):
    """Lesion importance and output coherence of one network's sub-clusters.

    Attributes:
        table: one row per sub-cluster (columns :data:`modularity.importance.COLUMNS`).
        summary: every network-level statistic and parameter (JSON-serialisable, no raw counts).
        counts: raw integer counts ``unlesioned`` (C,), ``true`` (S, C), ``random`` (n, S, C), ``class_sizes``.
        combined_p_means / chi2_p_means / effect_means: importance (Fisher, chi-square, effect factor).
        combined_p_ranges / chi2_p_ranges / effect_ranges: output coherence, likewise.
        n_subclusters, n_important, n_test, n_classes: counts of what was tested.
    """

    counts: dict[str, np.ndarray] = field(default_factory=dict)
    combined_p_means: float = field(default_factory=_nan)
    chi2_p_means: float = field(default_factory=_nan)
    effect_means: float = field(default_factory=_nan)
    combined_p_ranges: float = field(default_factory=_nan)
    chi2_p_ranges: float = field(default_factory=_nan)
    effect_ranges: float = field(default_factory=_nan)
    n_subclusters: int = 0
    n_important: int = 0
    n_test: int = 0
    n_classes: int = 0

    @classmethod
    def from_summary(cls, table: pd.DataFrame, summary: dict[str, Any]) -> ImportanceResult:
        summary = dict(summary)
        counts = summary.pop("counts", {})
        declared = {k: summary[k] for k in ("combined_p_means", "chi2_p_means", "effect_means", "combined_p_ranges",
                                            "chi2_p_ranges", "effect_ranges", "n_subclusters", "n_important", "n_test",
                                            "n_classes") if k in summary}
        return cls(table, summary, counts, **declared)

    def _record(self) -> dict[str, Any]:
        return {**self.summary, "counts": self.counts}

    def plot(self, path: str | Path, title: str = "") -> Path:
        """Accuracy drop against the sub-cluster's share of its layer (PNG)."""
        from .importance import plot_drop_vs_proportion

        plot_drop_vs_proportion(self.table, path, title)
        return Path(path)

    def plot_per_class(self, path: str | Path, title: str = "") -> Path:
        """Per-class accuracy after each lesion, random lesions and the intact network (PNG)."""
        from .importance import plot_per_class

        plot_per_class(self.table, self.counts, path, title)
        return Path(path)


@dataclass
class InputCoherenceResult(_Result):
    """Input coherence (feature visualisation) of one network's sub-clusters.

    Attributes:
        table: one row per sub-cluster (:data:`modularity.visualize.SUBCLUSTER_COLUMNS` and more).
        summary: network-level statistics and parameters (JSON-serialisable).
        visualisation: the images and per-image table (:class:`modularity.visualize.SubclusterVisualisation`).
        combined_p_loss / chi2_p_loss / effect_loss: activation reached (right-sided).
        combined_p_entropy / chi2_p_entropy / effect_entropy: softmax entropy (left-sided).
    """

    visualisation: Any = None
    combined_p_loss: float = field(default_factory=_nan)
    chi2_p_loss: float = field(default_factory=_nan)
    effect_loss: float = field(default_factory=_nan)
    combined_p_entropy: float = field(default_factory=_nan)
    chi2_p_entropy: float = field(default_factory=_nan)
    effect_entropy: float = field(default_factory=_nan)
    n_subclusters: int = 0

    @classmethod
    def from_summary(cls, table: pd.DataFrame, summary: dict[str, Any], vis: Any = None) -> InputCoherenceResult:
        declared = {k: summary[k] for k in ("combined_p_loss", "chi2_p_loss", "effect_loss", "combined_p_entropy",
                                            "chi2_p_entropy", "effect_entropy", "n_subclusters") if k in summary}
        return cls(table, dict(summary), vis, **declared)

    def plot(self, path: str | Path, title: str = "") -> Path:
        """The image grid: each sub-cluster's image and its random sets' images (PNG)."""
        from .visualize import plot_grid

        if self.visualisation is None:
            raise ValueError("no images kept in this result")
        return plot_grid(self.visualisation, path, title=title, table=self.table)
