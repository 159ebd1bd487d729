"""The named choices of the public API, torch-free.

The library validates its arguments against these tuples and the command line offers them as argparse
``choices``: one list for both, importable without torch so that ``python -m modularity ... --help`` and
a refused option answer in a fraction of a second (the commands' parsers live in
:mod:`modularity.commands`).
"""

from __future__ import annotations

from pathlib import Path

#: Datasets ``modularity.data`` prepares and loads.
DATASETS: tuple[str, ...] = ("mnist", "fashion", "digits", "cifar10")

#: Rank tie rules of ``modularity.stats`` (a random value equal to the true one).
TIE_RULES: tuple[str, ...] = ("strict", "mid", "conservative")

#: ``statsmodels.stats.multitest.multipletests`` methods (tests check the list against statsmodels).
CORRECTION_METHODS: tuple[str, ...] = (
    "bonferroni", "sidak", "holm-sidak", "holm", "simes-hochberg", "hommel", "fdr_bh", "fdr_by",
    "fdr_tsbh", "fdr_tsbky",
)

#: Eigen-solvers of ``modularity.partition`` (scikit-learn's three and the dense LAPACK path).
EIGEN_SOLVERS: tuple[str, ...] = ("arpack", "amg", "lobpcg", "dense")

#: What ``modularity.importance`` does with a sub-cluster that is a whole layer.
COMPLETE_MODES: tuple[str, ...] = ("skip", "error", "include")

#: Kernel-slice norms of the convolutional weight graph (``matrix1`` = the reference code's).
CONV_NORMS: tuple[str, ...] = ("entrywise", "matrix1")

#: Where ``python -m modularity train`` writes checkpoints.
DEFAULT_CHECKPOINT_ROOT = Path("data/checkpoints")
