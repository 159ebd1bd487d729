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
class Analysis:
    """One analysis: its stage kind, result fields, paper table and like-for-like parameters."""

    name: str
    stage: str
    paper: str
    fields: tuple[str, ...]
    protocol: tuple[ProtocolParameter, ...] = ()
    uses_graph: bool = True
    description: str = ""

    def check_field(self, field: str, where: str) -> None:
        """Raise a one-line error if ``field`` is not a result field of this analysis."""
        if field not in self.fields:
            near = sorted(f for f in self.fields if _similar(f, field))
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ModularityError(f"{where}: {field!r} is not a result field of analysis {self.name!r}{hint}")


CLUSTER = Analysis(
    name="cluster", stage="cluster", paper="clusterability",
    fields=("ncut", "null_mean", "null_stdev", "z_score", "percentile", "n_shuffles", "n_vertices", "n_isolated",
            "train_acc", "test_acc"),
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
