"""The paper's numbers in the project's own tidy format (``benchmark/expected/paper/``).

The reference repository stores one CSV per experiment family, each with its own column names,
pruned flags spelt three ways and no replicate index. :func:`convert_reference` turns them into three
tidy tables, one row per (network, replicate), with the project's column names, so that the
comparison code reads the paper's values and ours the same way:

* ``clusterability.csv``: tag, family, pruned, k, replicate, n_shuffles, ncut, null_mean, null_stdev,
  z_score, percentile, train_acc, test_acc, train_loss, test_loss, source (the losses: cross-entropy for
  the classifiers, MSE plus the regulariser for the POLY regression nets, the Keras quantity).
* ``lesion.csv`` (importance and output coherence): tag, family, pruned, k, replicate, n_random,
  chi2_p_means, combined_p_means, effect_means, chi2_p_ranges, combined_p_ranges, effect_ranges, source.
* ``input_coherence.csv``: tag, reference_tag, family, pruned, k, replicate, n_random, chi2_p_loss,
  combined_p_loss, effect_loss, chi2_p_entropy, combined_p_entropy, effect_entropy, source.

``tag`` is the plain network a row is also compared with; for the Lucid rows the reference trained
separate ``+LUCID`` networks on column-scrambled 3-channel MNIST (docs/methods.md §9.9): ``reference_tag``
keeps that name, which the project's own ``MNIST+LUCID``, ... rows match (``compare.paper_rows``), and our
ordinary ``MNIST`` is shown beside them as not comparable.
The ImageNet clusterability values are not in a CSV here; they are transcribed from docs/methods.md §8.2
(first run, ``clustering_factors_imagenet.csv``).

Run ``python -m benchmark.paper_values [REFERENCE_DIR]`` to regenerate the files (they are committed;
a test checks that the committed files equal a fresh conversion when the reference folder exists).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from modularity.utils import write_text_atomic

EXPECTED_PAPER = Path(__file__).parent / "expected" / "paper"
DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"

CLUSTERABILITY_COLUMNS = ["tag", "family", "pruned", "k", "replicate", "n_shuffles", "ncut", "null_mean",
                          "null_stdev", "z_score", "percentile", "train_acc", "test_acc", "train_loss", "test_loss",
                          "source"]
LESION_COLUMNS = ["tag", "family", "pruned", "k", "replicate", "n_random", "chi2_p_means", "combined_p_means",
                  "effect_means", "chi2_p_ranges", "combined_p_ranges", "effect_ranges", "source"]
INPUT_COHERENCE_COLUMNS = ["tag", "reference_tag", "family", "pruned", "k", "replicate", "n_random",
                           "chi2_p_loss", "combined_p_loss", "effect_loss", "chi2_p_entropy", "combined_p_entropy",
                           "effect_entropy", "source"]

# docs/methods.md §8.2, ImageNet (one pretrained net each, k=12, 100 shuffles), first run.
IMAGENET_CLUSTERABILITY = [
    # tag, ncut, null mean, null stdev, z, percentile
    ("vgg16", 7.7998, 8.2127, 0.0187, -22.1362, 0.0099),
    ("vgg19", 7.3301, 7.6547, 0.0431, -7.5257, 0.0099),
    ("resnet18", 7.9046, 8.508, 0.2786, -2.1654, 0.0099),
    ("resnet34", 6.3181, 6.3751, 0.000677, -84.1966, 0.0099),
    ("resnet50", 4.1253, 4.1852, 0.0008, -74.8188, 0.0099),
    ("inceptionv3", 2.9056, 2.9375, 0.0069, -4.6182, 0.0198),
]
# The Lucid k for the ImageNet nets (docs/methods.md §3.2); 12 for everything else.
LUCID_IMAGENET_K = {"vgg16": 25, "vgg19": 25, "resnet50": 35}


def family_of(tag: str) -> str:
    """The network family of a reference tag: mlp, cnn, vgg or imagenet (a family of ``benchmark.plan.FAMILIES``).

    The small MLP of SMALL-MNIST[+CLUSTERABILITY-GRADIENT] (49-64-64-64-10) is an MLP: its spec rows run
    with the mlp family's profile settings.
    """
    if tag.startswith("CNN-VGG"):
        return "vgg"
    if tag.startswith("CNN-"):
        return "cnn"
    if tag in LUCID_IMAGENET_K or tag[:3] in ("vgg", "res", "inc"):
        return "imagenet"
    return "mlp"


def _with_replicates(df: pd.DataFrame) -> pd.DataFrame:
    """Number the replicates 0.. within each (tag, pruned) in file order."""
    df = df.copy()
    df["replicate"] = df.groupby(["tag", "pruned"], sort=False).cumcount()
    return df


def convert_clusterability(reference: Path) -> pd.DataFrame:
    frames = []
    for name in ("mlp", "cnn", "cnn_vgg", "clust_grad"):
        src = f"clustering_factors_{name}.csv"
        raw = pd.read_csv(reference / src, index_col=0)
        df = pd.DataFrame({
            "tag": raw["model"], "pruned": raw["Network"].str.endswith(", Pruning"), "k": 12,
            "n_shuffles": raw["n_samples"].astype(int), "ncut": raw["ncut"], "null_mean": raw["mean"],
            "null_stdev": raw["stdev"], "z_score": raw["z_score"], "percentile": raw["percentile"],
            "train_acc": raw["train_acc"], "test_acc": raw["test_acc"], "train_loss": raw["train_loss"],
            "test_loss": raw["test_loss"], "source": src})
        frames.append(df)
    imagenet = pd.DataFrame(IMAGENET_CLUSTERABILITY, columns=["tag", "ncut", "null_mean", "null_stdev", "z_score",
                                                              "percentile"])
    imagenet = imagenet.assign(pruned=False, k=12, n_shuffles=100, train_acc=np.nan, test_acc=np.nan,
                               train_loss=np.nan, test_loss=np.nan,
                               source="docs/methods.md §8.2 (clustering_factors_imagenet.csv)")
    frames.append(imagenet)
    df = pd.concat(frames, ignore_index=True)
    df["family"] = df["tag"].map(family_of)
    return _with_replicates(df)[CLUSTERABILITY_COLUMNS]


def convert_lesion(reference: Path) -> pd.DataFrame:
    frames = []
    for name in ("mlp", "cnn", "cnn_vgg", "imagenet"):
        src = f"lesion_results_{name}.csv"
        raw = pd.read_csv(reference / src, index_col=0)
        pruned = ~raw["is_unpruned"].astype(bool) if "is_unpruned" in raw else False
        df = raw.rename(columns={"model_tag": "tag"}).assign(
            pruned=pruned, k=12, n_random=24 if name == "imagenet" else 20, source=src)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["family"] = df["tag"].map(family_of)
    return _with_replicates(df)[LESION_COLUMNS]


def convert_input_coherence(reference: Path) -> pd.DataFrame:
    src = "lucid_results_all.csv"
    raw = pd.read_csv(reference / src, index_col=0)
    ref_tag = raw["model_tag"]
    df = pd.DataFrame({
        "tag": ref_tag.str.replace("+LUCID", "", regex=False), "reference_tag": ref_tag,
        "pruned": ~raw["is_unpruned"].astype(bool), "k": [LUCID_IMAGENET_K.get(t, 12) for t in ref_tag],
        "n_random": 9, "chi2_p_loss": raw["chi2_categorical_ps_loss"], "combined_p_loss": raw["combined_ps_loss"],
        "effect_loss": raw["effect_factor_loss"], "chi2_p_entropy": raw["chi2_categorical_ps_entropy"],
        "combined_p_entropy": raw["combined_ps_entropy"], "effect_entropy": raw["effect_factor_entropy"],
        "source": src})
    df["family"] = df["tag"].map(family_of)
    return _with_replicates(df)[INPUT_COHERENCE_COLUMNS]


def convert_reference(reference: Path = DEFAULT_REFERENCE) -> dict[str, pd.DataFrame]:
    """All three tidy tables, keyed by file stem."""
    return {"clusterability": convert_clusterability(reference), "lesion": convert_lesion(reference),
            "input_coherence": convert_input_coherence(reference)}


def to_csv_text(df: pd.DataFrame) -> str:
    """The committed CSV text: full float precision (repr), no index, stable line endings."""
    return df.to_csv(index=False, lineterminator="\n")


def load_paper_values(name: str, directory: Path = EXPECTED_PAPER) -> pd.DataFrame:
    """One of the committed tidy tables (``clusterability``, ``lesion``, ``input_coherence``)."""
    df = pd.read_csv(directory / f"{name}.csv")
    df["pruned"] = df["pruned"].astype(bool)
    return df


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="convert the reference CSVs to benchmark/expected/paper/")
    parser.add_argument("reference", nargs="?", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--out", type=Path, default=EXPECTED_PAPER)
    args = parser.parse_args(argv)
    if not args.reference.is_dir():
        print(f"error: reference folder not found: {args.reference}", file=sys.stderr)
        return 2
    for name, df in convert_reference(args.reference).items():
        write_text_atomic(args.out / f"{name}.csv", to_csv_text(df))
        print(f"{args.out / name}.csv: {len(df)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
