"""The analysis registry: one object per analysis the benchmark runs, with everything the harness needs.

An :class:`Analysis` says which stage kind computes it, which network-level result fields that stage
writes (the keys of ``values`` in ``results/.../<analysis>/k<K>.json``), which of the paper's tidy tables
(``benchmark/expected/paper/<paper>.csv``) holds the reference's numbers, and which protocol parameters
must match the paper's for a statistic to be compared like for like (e.g. the number of shuffles behind
a percentile). Spec loading (:func:`validate_column`), the comparison and the report ask this registry
instead of matching analysis names as strings; the planner and the DVC pipeline are meant to iterate it
too (:data:`ANALYSES`, in stage order).

A table spec that names a result field no analysis produces is rejected when it is loaded, with a
one-line :class:`modularity.errors.ModularityError` (a misspelt column would otherwise become "n/a" and
the row would still read "agree").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modularity.errors import ModularityError


@dataclass(frozen=True)
class ProtocolParameter:
    """A setting that must equal the paper's for some statistics to be comparable.

    ``setting`` is the key in the profile's section for the analysis (``params.yaml``), ``paper_column``
    the column of the paper's tidy table holding the reference's value, ``result_field`` the result
    field recording the value actually used, and ``affects`` the result fields whose distribution
    depends on it (a percentile from 20 shuffles is not a percentile from 50).
    """

    setting: str
    paper_column: str
    result_field: str
    affects: tuple[str, ...]
    default: int | None = None


@dataclass(frozen=True)
class ReferenceSetting:
    """A named option whose reference value the stored numbers need (like for like, docs/methods.md).

    ``section`` is the profile section holding it (``graph`` or the analysis's own section), ``key`` the
    option, ``reference`` the value the reference used, ``default`` the library's default when the profile
    leaves it out, ``result_field`` the result field recording the value actually used (it wins over the
    profile), ``families`` the network families it concerns (None: all) and ``why`` the reason shown
    when a row runs with another value (``{value}`` is replaced by ours).
    """

    section: str
    key: str
    reference: Any
    default: Any
    why: str
    result_field: str | None = None
    families: tuple[str, ...] | None = None
    option: bool = True  # False: the stage has no such option yet, so rows always carry the reason

    def applies(self, family: str) -> bool:
        return self.families is None or family in self.families


#: Graph options shared by every analysis that partitions a network (docs/methods.md §2.2, §9.1, §9.2).
GRAPH_SETTINGS = (
    ReferenceSetting("graph", "conv_norm", "matrix1", "entrywise",
                     "graph: {value} norm of conv kernels (the stored numbers used the induced matrix 1-norm, "
                     "methods §9.1)", families=("cnn", "vgg")),
    ReferenceSetting("graph", "fold_batchnorm", False, True,
                     "graph: batch norm folded into the VGG weights (the reference's VGG graphs did not, methods §9.2)",
                     families=("vgg",)),
)


@dataclass(frozen=True)
class Analysis:
    """One analysis: its stage kind, result fields, paper table and like-for-like parameters."""

    name: str
    stage: str
    paper: str
    fields: tuple[str, ...]
    protocol: tuple[ProtocolParameter, ...] = ()
    reference: tuple[ReferenceSetting, ...] = GRAPH_SETTINGS
    description: str = ""
    #: fields only some networks write (the regression nets' MSEs and losses); a subset of ``fields``
    only_some: tuple[str, ...] = ()

    def check_field(self, field: str, where: str) -> None:
        """Raise a one-line error if ``field`` is not a result field of this analysis."""
        if field not in self.fields:
            near = sorted(f for f in self.fields if _similar(f, field))
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ModularityError(f"{where}: {field!r} is not a result field of analysis {self.name!r}{hint}")


CLUSTER = Analysis(
    name="cluster", stage="cluster", paper="clusterability",
    fields=("ncut", "null_mean", "null_stdev", "z_score", "percentile", "n_shuffles", "n_vertices", "n_isolated",
            "train_acc", "test_acc", "train_mse", "test_mse", "train_loss", "test_loss"),
    only_some=("train_mse", "test_mse", "train_loss", "test_loss"),  # POLY (benchmark/stages.py, cluster stage)
    protocol=(ProtocolParameter("n_shuffles", "n_shuffles", "n_shuffles", ("percentile",), 50),),
    description="n-cut of the k-way spectral partition of the weight graph against the layer-shuffle null")

IMPORTANCE = Analysis(
    name="importance", stage="importance", paper="lesion",
    fields=("alpha", "arithmetic", "before_batchnorm", "chi2_p_means", "chi2_p_ranges", "combined_p_means",
            "combined_p_ranges", "complete", "correction", "effect_means", "effect_ranges", "exact_decisions",
            "exclude_isolated", "log_effect_means", "log_effect_means_ci_high", "log_effect_means_ci_low",
            "log_effect_ranges", "log_effect_ranges_ci_high", "log_effect_ranges_ci_low", "n_classes", "n_complete",
            "n_important", "n_random", "n_subclusters", "n_test", "tie_rule", "ties", "unlesioned_balanced_acc",
            "unlesioned_overall_acc"),
    protocol=(ProtocolParameter("n_random", "n_random", "n_random",
                                ("chi2_p_means", "combined_p_means", "chi2_p_ranges", "combined_p_ranges"), 20),),
    reference=GRAPH_SETTINGS + (
        ReferenceSetting("importance", "arithmetic", "float", "exact",
                         "ties: decided in {value} arithmetic (the reference compared float64 accuracies, methods §5.7)",
                         result_field="arithmetic"),
        ReferenceSetting("importance", "complete", "include", "skip",
                         "sub-clusters: complete={value} for whole-layer sub-clusters (the reference: include, methods §9.27)",
                         result_field="complete"),
        ReferenceSetting("importance", "test_subsample", None, None,
                         "lesions on {value} test images (the paper: the whole test set, methods §5.1)"),
    ),
    description="lesion tests of every sub-cluster against random same-size sets (importance, output coherence)")

COHERENCE = Analysis(
    name="coherence", stage="coherence", paper="input_coherence",
    fields=("alpha", "chi2_p_entropy", "chi2_p_loss", "combined_p_entropy", "combined_p_loss", "correction",
            "effect_entropy", "effect_loss", "log_effect_ci_entropy_high", "log_effect_ci_entropy_low",
            "log_effect_ci_loss_high", "log_effect_ci_loss_low", "log_effect_entropy", "log_effect_loss", "n_random",
            "n_significant_entropy_holm", "n_significant_loss_holm", "n_subclusters", "side_entropy", "side_loss",
            "ties"),
    protocol=(ProtocolParameter("n_random", "n_random", "n_random",
                                ("chi2_p_loss", "combined_p_loss", "chi2_p_entropy", "combined_p_entropy"), 9),),
    reference=GRAPH_SETTINGS + (
        ReferenceSetting("coherence", "min_size", 4, 3,
                         "size filter: size >= {value} (Lucid: size > 3, methods §4, §6.1)"),
        ReferenceSetting("coherence", "relu_override_steps", 17, None,
                         "ReLU gradient override window {value} (None: every update; Lucid: the first 17 updates, "
                         "while its global step is <= 16, methods §6.1)"),
        ReferenceSetting("coherence", "steps", 257, 256, "{value} optimisation steps (the reference: 257, methods §6.1)"),
        ReferenceSetting("coherence", "dtype", "float32", "float32",
                         "feature visualisation in {value} arithmetic (the reference: float32)"),
    ),
    description="feature visualisation of every sub-cluster against random same-size sets (input coherence)")

#: Every analysis, in stage order (the order of ``benchmark.plan.ANALYSES``).
ANALYSES: tuple[Analysis, ...] = (CLUSTER, IMPORTANCE, COHERENCE)
REGISTRY: dict[str, Analysis] = {a.name: a for a in ANALYSES}

#: Statistics a column may aggregate over replicates with, and the criteria that judge them.
STATS = ("median", "n_significant")
CRITERIA = ("tolerance", "sign", "band", "replicates", "report")


def get(name: str, where: str = "table spec") -> Analysis:
    """The analysis called ``name``; a one-line error lists the known ones otherwise."""
    if name not in REGISTRY:
        raise ModularityError(f"{where}: analysis {name!r} is not one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def validate_column(analysis: str, key: str, stat: str, criterion: dict, where: str) -> None:
    """Check one spec column against the registry: known field, statistic and criterion parameters."""
    a = get(analysis, where)
    a.check_field(key, where)
    if stat not in STATS:
        raise ModularityError(f"{where}: column {key!r} has stat {stat!r} (one of {', '.join(STATS)})")
    kind = criterion.get("kind")
    if kind not in CRITERIA:
        raise ModularityError(f"{where}: column {key!r} has criterion {kind!r}, not one of {', '.join(CRITERIA)}")
    needs = {"tolerance": ("abs",), "band": ("factor",), "replicates": (), "sign": (), "report": ()}[kind]
    missing = [n for n in needs if n not in criterion]
    if missing:
        raise ModularityError(f"{where}: column {key!r}: criterion {kind!r} needs {', '.join(missing)}")
    if kind == "replicates" and stat != "n_significant":
        raise ModularityError(f"{where}: column {key!r}: criterion 'replicates' needs stat n_significant")
    allowed = {"kind", "abs", "sd", "factor", "center", "alpha"}
    unknown = sorted(set(criterion) - allowed)
    if unknown:
        raise ModularityError(f"{where}: column {key!r}: unknown criterion parameter(s) {', '.join(unknown)}")


def protocol_of(analysis: str, field: str) -> list[ProtocolParameter]:
    """The protocol parameters whose value must match the paper's for ``field`` to be compared."""
    return [p for p in get(analysis).protocol if field in p.affects]


def _similar(a: str, b: str) -> bool:
    """Loose match for the "did you mean" hint (same words in another order, or one letter off)."""
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.8
