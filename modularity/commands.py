"""The command line's argument surface: every sub-command's parser, torch-free.

Why here and not in the step modules (``data``, ``train``, ``partition``, ``importance``, ``visualize``):
those import torch, which takes about two seconds, and an option the parser refuses (``--k twelve``,
``--ties bogus``) or ``--help`` should answer at once. Each parser names the function that runs it as
``"module:function"`` (:class:`Runner`); :func:`modularity.cli.main` imports that module only after the
arguments have parsed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

from .choices import (
    COMPLETE_MODES,
    CONV_NORMS,
    CORRECTION_METHODS,
    DATASETS,
    DEFAULT_CHECKPOINT_ROOT,
    EIGEN_SOLVERS,
    TIE_RULES,
)

Subparsers = argparse._SubParsersAction


class Runner:
    """A command's ``func``: ``"module:function"``, imported when called with the parsed arguments."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __call__(self, args: argparse.Namespace) -> int:
        module, name = self.target.split(":")
        return getattr(import_module(module), name)(args)

    def __repr__(self) -> str:
        return f"Runner({self.target!r})"


def _int_or_auto(text: str) -> int | str:
    """``--batch-size``: ``auto`` or an integer (range checked by :mod:`modularity.validate`)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer or auto, got {text!r}") from None


def add_model_options(p: argparse.ArgumentParser, data: bool = True) -> None:
    """Make the checkpoint optional and add ``--model``, ``--weights`` (and ``--data``): your own network."""
    p.add_argument("--model", default=None, metavar="MODULE:FACTORY",
                   help="your own network instead of a checkpoint: an nn.Module class or factory function")
    p.add_argument("--weights", type=Path, default=None, help="state_dict .pt for --model (torch.save(model.state_dict()))")
    if data:
        p.add_argument("--data", type=Path, default=None, help="test data for --model: .npz with x and y (or x_test, y_test)")


def add_data(sub: Subparsers) -> None:
    p = sub.add_parser("data", help=COMMANDS["data"])
    p.add_argument("action", choices=["prepare", "status"])
    p.add_argument("names", nargs="*", default=None, help=f"datasets (default: mnist fashion digits); known: {' '.join(DATASETS)}")
    p.add_argument("--root", default=None, help="data folder (default: $MODULARITY_DATA or ./data)")
    p.add_argument("--force", action="store_true", help="prepare again even if present")
    p.set_defaults(func=Runner("modularity.data:_cli"))


def add_train(sub: Subparsers) -> None:
    p = sub.add_parser("train", help=COMMANDS["train"])
    p.add_argument("--tag", required=True, help="model tag, e.g. MNIST, FASHION+DROPOUT, CNN-MNIST")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="unpruned epochs (default: the tag's)")
    p.add_argument("--pruning-epochs", type=int, default=None, help="pruning epochs (default: the tag's)")
    p.add_argument("--train-subsample", type=int, default=None, help="train on N random training images")
    p.add_argument("--out", default=str(DEFAULT_CHECKPOINT_ROOT), help="checkpoint root (default: data/checkpoints)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=Runner("modularity.train:_cli"))


def add_cluster(sub: Subparsers) -> None:
    """``cluster CHECKPOINT --k 12 [--seed 0] [--shuffles N] [--out DIR]`` (or ``--model``)."""
    p = sub.add_parser("cluster", help=COMMANDS["cluster"],
                       description="Spectral clustering of a checkpoint's weight graph. Writes "
                       "<stem>-k<K>-seed<S>-labels.csv (layer,index,label) and -summary.json.")
    p.add_argument("checkpoint", type=Path, nargs="?", help="checkpoint .pt written by `train` (with its .json)")
    add_model_options(p, data=False)  # or your own network: --model MODULE:FACTORY [--weights W.pt]
    p.add_argument("--k", type=int, default=12, help="number of clusters (default 12)")
    p.add_argument("--seed", type=int, default=0, help="clustering seed (default 0)")
    p.add_argument("--shuffles", type=int, default=0, help="layer shuffles for the clusterability null (default 0)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the checkpoint's folder)")
    p.add_argument("--n-init", type=int, default=None, help="k-means restarts (default 25, 100 above 2000 vertices)")
    p.add_argument("--eigen-solver", choices=EIGEN_SOLVERS, default="arpack")
    p.add_argument("--conv-norm", choices=CONV_NORMS, default="entrywise",
                   help="kernel-slice norm for conv edges (matrix1 = the reference code)")
    p.add_argument("--no-fold-batchnorm", action="store_true", help="ignore batch norm (the reference's VGG graphs)")
    p.add_argument("--jobs", type=int, default=-1, help="parallel shuffles (joblib n_jobs, default all cores)")
    p.set_defaults(func=Runner("modularity.partition:_cluster_command"))


def add_importance(sub: Subparsers) -> None:
    """``importance CHECKPOINT --k 12 [--n-random N] [--seed S] [--out DIR] ...`` (or ``--model``)."""
    p = sub.add_parser(
        "importance", help=COMMANDS["importance"],
        description="Partition a checkpoint (spectral clustering, k clusters), lesion every sub-cluster and "
        "random same-size sets of its layer on the test split, and test. Writes "
        "<stem>-k<K>-seed<S>-importance.csv, -importance.json, -lesion-counts.npz, -importance.png and "
        "-per-class.png.")
    p.add_argument("checkpoint", type=Path, nargs="?", help="checkpoint .pt written by `train` (with its .json)")
    add_model_options(p)
    p.add_argument("--k", type=int, default=12, help="number of clusters (default 12)")
    p.add_argument("--n-random", type=int, default=None, help="random draws per sub-cluster (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clustering and the random draws (default 0)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the checkpoint's folder)")
    p.add_argument("--correction", default="holm", choices=CORRECTION_METHODS,
                   help="statsmodels multipletests method (default holm)")
    p.add_argument("--ties", default="strict", choices=TIE_RULES,
                   help="rank tie rule: strict (reference), mid, conservative")
    p.add_argument("--before-batchnorm", action="store_true",
                   help="zero the ReLU output in front of a BatchNorm (the reference's VGG lesions)")
    p.add_argument("--complete", choices=COMPLETE_MODES, default="skip",
                   help="whole-layer sub-clusters: skip (default), error, include")
    p.add_argument("--conv-norm", choices=CONV_NORMS, default="entrywise",
                   help="kernel-slice norm for conv edges of the graph (matrix1 = the reference code)")
    p.add_argument("--no-fold-batchnorm", action="store_true", help="graph ignores batch norm (the reference's VGG)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $MODULARITY_DATA or ./data)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--direction", choices=("paper", "reference"), default="paper",
                   help="regression networks (POLY) only: paper = a lesion matters when it raises the MSE (default); "
                        "reference = the reference code's inverted test")
    p.add_argument("--allow-chance", action="store_true",
                   help="run even if the intact network is no better than chance (its lesion tests then measure noise)")
    p.set_defaults(func=Runner("modularity.importance:_importance_command"))


def add_coherence(sub: Subparsers) -> None:
    """``coherence CHECKPOINT --k 12 [--n-random 9] [--steps 256] ...`` (or ``--model``)."""
    p = sub.add_parser("coherence", help=COMMANDS["coherence"],
                       description="Partition a checkpoint's network, optimise an image for every sub-cluster and "
                                   "its random sets, and write the per-sub-cluster CSV, the per-image CSV, a JSON "
                                   "summary and a PNG grid.")
    p.add_argument("checkpoint", type=Path, nargs="?", help="checkpoint .pt written by `modularity train`")
    add_model_options(p, data=False)
    p.add_argument("--image-shape", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                   help="input image shape for --model (default: told from the model)")
    p.add_argument("--k", type=int, default=12, help="number of spectral clusters (default 12)")
    p.add_argument("--seed", type=int, default=0, help="seed of the partition, the random sets and the images")
    p.add_argument("--n-random", type=int, default=9, help="random sets per sub-cluster (default 9)")
    p.add_argument("--steps", type=int, default=256, help="Adam updates per image (default 256)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--min-size", type=int, default=4, help="keep sub-clusters with size >= MIN_SIZE (default 4)")
    p.add_argument("--max-prop", type=float, default=0.8, help="... and size < MAX_PROP * layer width (default 0.8)")
    p.add_argument("--no-relu-override", action="store_true", help="plain ReLU gradients (no Lucid override)")
    p.add_argument("--relu-override-steps", type=int, default=None, metavar="N",
                   help="use the override for the first N updates only (default: every update; Lucid's window is 17)")
    p.add_argument("--pixels", action="store_true", help="pixel parameterisation instead of Fourier")
    p.add_argument("--transforms", action="store_true", help="random jitter/scale/rotation each step")
    p.add_argument("--correction", default="holm", choices=CORRECTION_METHODS,
                   help="statsmodels multipletests method (default holm)")
    p.add_argument("--ties", default="strict", choices=TIE_RULES,
                   help="how a random image with exactly the true value counts (modularity.stats; default strict)")
    p.add_argument("--batch-size", type=_int_or_auto, default="auto",
                   help="images optimised at once: an integer, or auto (sized to the network; speed, not results)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: <checkpoint folder>/<pruned|unpruned>-k<K>-seed<S>-coherence)")
    p.set_defaults(func=Runner("modularity.visualize:_cli"))


#: Sub-command -> its one-line help, in the order ``--help`` lists them.
COMMANDS: dict[str, str] = {
    "data": "prepare and check datasets",
    "train": "train a tag's network and prune it (two checkpoints)",
    "cluster": "partition a checkpoint's weight graph; optional shuffle null",
    "importance": "lesion tests of a checkpoint's sub-clusters (importance, output coherence)",
    "coherence": "input coherence of a checkpoint's sub-clusters (feature visualisation)",
}

#: Sub-command -> the function that adds its parser.
REGISTRARS: dict[str, Callable[[Subparsers], None]] = {
    "data": add_data, "train": add_train, "cluster": add_cluster, "importance": add_importance,
    "coherence": add_coherence,
}


def add_commands(sub: Subparsers) -> None:
    """Add every sub-command's parser to ``sub``."""
    for name in COMMANDS:
        REGISTRARS[name](sub)
