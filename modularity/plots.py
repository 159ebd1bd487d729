"""The paper's figure types, drawn from tables and arrays (matplotlib; no torch needed).

* :func:`drop_vs_proportion`: accuracy drop after lesioning each sub-cluster against its share of the
  layer, coloured by importance category, with the mean drop of its random same-size sets (paper
  figure 2).
* :func:`per_class`: per-class accuracy after lesioning one sub-cluster (red), after each of its random
  same-size lesions (thin black lines) and of the intact network (green); the last tick is the overall
  accuracy (paper figure 3).
* :func:`feature_row`: the image optimised for a sub-cluster (red frame) beside its random sets'
  images (paper figure 4).

Each function draws on axes the caller provides; :func:`save` writes a figure atomically and without
the matplotlib version in the PNG metadata, so the same data give the same bytes. The command-line
plots of :mod:`modularity.importance` and :mod:`modularity.visualize` draw the same kinds of picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Colour of each importance category (``modularity.stats.categorize``).
CATEGORY_COLOURS = {
    "important": "tab:red", "sig-but-not-diff": "tab:orange", "diff-but-not-sig": "tab:purple",
    "least_important": "tab:brown", "prunable": "tab:green", "small": "tab:gray", "complete": "black",
    "other": "tab:blue",
}


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (safe without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically (no software version in the metadata) and close it."""
    from .utils import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    pyplot().close(fig)
    return path


def drop_vs_proportion(ax: Any, table: Any, title: str = "", legend: bool = True) -> None:
    """Accuracy drop (percentage points) against proportion of the layer, one point per sub-cluster.

    ``table``: the per-sub-cluster table of :func:`modularity.importance.importance` (columns
    ``proportion``, ``acc_drop``, ``random_acc_drop_mean``, ``category``). Grey crosses: the mean drop
    of the sub-cluster's random sets, so a point far above its cross hurts more than its size explains.
    """
    ax.scatter(table["proportion"], 100 * table["random_acc_drop_mean"], marker="x", color="0.6", s=14,
               linewidths=0.8, label="random sets (mean)", zorder=1)
    order = [c for c in CATEGORY_COLOURS if c in set(table["category"])]
    order += sorted(set(table["category"]) - set(order))
    for cat in order:
        group = table[table["category"] == cat]
        ax.scatter(group["proportion"], 100 * group["acc_drop"], label=f"{cat} ({len(group)})",
                   color=CATEGORY_COLOURS.get(str(cat), "tab:blue"), s=22, alpha=0.9, zorder=2,
                   edgecolors="white", linewidths=0.4)
    ax.axhline(0.0, color="0.8", lw=0.6)
    widest = float(np.nanmax(table["proportion"])) if len(table) else 1.0
    ax.set_xlim(0, min(1.0, widest * 1.1 + 0.01) * 1.02)
    ax.set_xlabel("proportion of the layer", fontsize=8)
    ax.set_ylabel("accuracy drop (pp)", fontsize=8)
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    if legend:
        ax.legend(fontsize=6, frameon=False, loc="best")


def per_class(ax: Any, true: np.ndarray, random: np.ndarray, unlesioned: np.ndarray, class_sizes: np.ndarray,
              title: str = "", class_names: Sequence[str] | None = None, max_random_lines: int = 100) -> None:
    """Per-class accuracy after one lesion (red), its random lesions (black) and intact (green).

    Shapes: ``true`` and ``unlesioned`` (n_classes,), ``random`` (n_random, n_classes), all correct-
    prediction counts; ``class_sizes`` (n_classes,). The last x position is the overall accuracy.
    """
    sizes = np.asarray(class_sizes, dtype=float)

    def frac(c: np.ndarray) -> np.ndarray:
        c = np.asarray(c, dtype=float)
        return np.concatenate([c / sizes, c.sum(-1, keepdims=True) / sizes.sum()], axis=-1)

    xs = np.arange(sizes.size + 1)
    for r in frac(np.asarray(random)[:max_random_lines]):
        ax.plot(xs, r, color="black", alpha=0.12, lw=0.7)
    ax.plot(xs, frac(unlesioned), color="tab:green", lw=1.3, label="intact")
    ax.plot(xs, frac(true), color="tab:red", lw=1.5, label="sub-cluster lesioned")
    names = list(class_names) if class_names is not None else [str(i) for i in range(sizes.size)]
    ax.set_xticks(xs, [*names, "all"], fontsize=6)
    ax.set_ylim(-0.02, 1.02)
    ax.tick_params(axis="y", labelsize=6)
    if title:
        ax.set_title(title, fontsize=7)


def feature_row(axes: Sequence[Any], images: np.ndarray, labels: Sequence[str] | None = None) -> None:
    """One sub-cluster's image (first, red frame) and its random sets' images, one per axis.

    ``images``: (1 + n_random, C, H, W) in [0, 1]; ``labels``: a short caption per image.
    """
    for d, ax in enumerate(axes):
        if d >= len(images):
            ax.axis("off")
            continue
        show_image(ax, images[d])
        color, width = ("tab:red", 2.0) if d == 0 else ("0.7", 0.6)
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(width)
        if labels is not None:
            ax.set_title(labels[d], fontsize=6, pad=2)


def show_image(ax: Any, image: Any) -> None:
    """Draw one (C, H, W) image in [0, 1] without ticks: grey for one channel, RGB for three."""
    img = np.asarray(image)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.clip(np.moveaxis(img, 0, -1), 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
