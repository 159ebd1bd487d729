"""Reproduced values against the paper's, with a verdict per statistic that can fail; and the smoke regression check.

**Paper comparison.** For every row of a table (a network (tag, pruned) at one k) and every column of
its spec, the replicates (seeds) are aggregated the same way for our results and the paper's:
``median`` over replicates, or ``n_significant`` = the number of replicates with the statistic below
``alpha``. Each column's ``criterion`` decides agreement, and every criterion can say "differ":

* ``tolerance``: ``|ours - paper| <= max(abs, sd * SD_paper * sqrt(1/n_ours + 1/n_paper))``, where
  ``SD_paper`` is the sample SD of the paper's replicates (from the reference CSVs) and ``abs`` is the
  stated floor (used alone where the paper has one replicate): the paper's own spread sets the scale;
* ``sign``: same sign (z-scores);
* ``band``: on the excess over ``center`` (``effect - 1``): same side of ``center`` and
  ``max(|e_ours / e_paper|, |e_paper / e_ours|) <= factor`` with ``e = effect - center``;
* ``replicates``: the two counts of significant replicates (ours k1 of n1, the paper's k2 of n2) differ
  when Fisher's exact test on the 2x2 table gives p < ``alpha`` (default 0.05). With few replicates no
  count can differ (1 replicate against 5: the smallest p is 1/6): the cell is then **not testable**,
  never "agree";
* ``report``: shown, never judged (p-value medians, the reference's ill-defined effect factors).

A cell is *not testable* when no value of ours could make it differ (:func:`contradiction` finds none),
and *not comparable* when a protocol parameter behind the statistic differs from the paper's
(:mod:`benchmark.analyses`: a percentile from 20 shuffles is not one from 50). A row is **not
comparable** when the network or protocol is not the paper's (:func:`like_for_like`: another network
variant, a shorter training recipe, another graph norm, exact instead of float ties, ...): it stays in
the tables with its reason and the verdict its cells would have, but out of the agree / differ counts.
Otherwise a row differs when any judged cell differs, agrees when every judged cell agrees, and is not
testable when it has no judged cell. Rows without a paper value (k = 8 or 18, tags the paper did not
test) are marked so; rows the profile or the machine could not run are skipped with their reason.

p-value medians are also shown corrected across the networks of a table at one k (Holm, statsmodels,
:func:`modularity.stats.correct_columns`), for ours and the paper's, next to the uncorrected values.

**Regression check** (smoke profile). :func:`format_expected` stores every value as text: integers,
booleans and strings exactly, floats with a fixed number of significant digits (``%.{d-1}e``).
:func:`check_regression` passes a value when it formats to the stored text, or lies within half a unit
of the stored text's last digit, so run-to-run float noise below the stored digits passes, and a
stored value changed by one unit in its last digit fails.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
import yaml

from modularity.errors import ModularityError

from . import analyses
from .plan import ANALYSES, SPEC_DIR, Column, Profile, Row, TableSpec, result_dir

KEYS = ["analysis", "tag", "family", "seed", "pruned", "k"]
VERDICTS = ("agree", "differ", "not comparable", "not testable", "no paper value", "not run", "skipped")
#: Correction across the networks of a table (statsmodels ``multipletests`` method).
CORRECTION = "holm"

# --------------------------------------------------------------------------------------------------
# Collecting results


def collect_records(root: Path, stages: Iterable[Any] | None = None) -> list[dict[str, Any]]:
    """Every network-level result under ``root/results`` as flat records (KEYS + values).

    With ``stages`` (from :func:`benchmark.plan.plan`), only those stages' folders are read, so stale
    results of stages no longer in the profile are ignored.
    """
    from .stages import read_result

    if stages is None:
        files = sorted((root / "results").glob("*/seed*/*/*/k*.json"))
    else:
        files = []
        for s in stages:
            if s.kind == "train":
                continue
            folder = result_dir(root, s.kind, s.tag, s.seed, s.pruned)
            files += [folder / f"k{k}.json" for k in s.ks if (folder / f"k{k}.json").is_file()]
    records = []
    for f in files:
        doc = read_result(f)
        records.append({"analysis": doc["analysis"], "tag": doc["tag"], "family": doc["family"],
                        "seed": int(doc["seed"]), "pruned": bool(doc["pruned"]), "k": int(doc["k"]),
                        **doc["values"]})
    return records


def frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records as a tidy frame: KEYS first, then the value columns by name, rows in a stable order."""
    if not records:
        return pd.DataFrame(columns=KEYS)
    df = pd.DataFrame.from_records(records)
    order = {a: i for i, a in enumerate(ANALYSES)}
    df = df.assign(_a=df["analysis"].map(order)).sort_values(["_a", "family", "tag", "pruned", "k", "seed"],
                                                            kind="stable").drop(columns="_a")
    value_cols = sorted(c for c in df.columns if c not in KEYS)
    return df[KEYS + value_cols].reset_index(drop=True)


def collect(root: Path, stages: Iterable[Any] | None = None) -> pd.DataFrame:
    """All results as one frame (see :func:`collect_records`)."""
    return frame(collect_records(root, stages))


def by_analysis(records: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """One frame per analysis, built from that analysis's records only.

    Stored separately so that integer columns stay integers (a column mixing analyses would hold NaN
    and turn into floats) and every analysis has only its own columns.
    """
    out = {}
    for analysis in ANALYSES:
        part = [r for r in records if r["analysis"] == analysis]
        if part:
            out[analysis] = frame(part)
    return out


# --------------------------------------------------------------------------------------------------
# Aggregation and verdicts


def aggregate(values: pd.Series, column: Column) -> float:
    """Median over replicates, or the number of replicates with the statistic below ``alpha``."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if v.size == 0:
        return math.nan
    if column.stat == "n_significant":
        return float(np.sum(v[~np.isnan(v)] < column.alpha)) if np.any(~np.isnan(v)) else math.nan
    v = v[~np.isnan(v)]
    return float(np.median(v)) if v.size else math.nan


def replicate_sd(values: pd.Series) -> float:
    """Sample SD (ddof = 1) of the finite replicate values; NaN with fewer than two."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(np.std(v, ddof=1)) if v.size >= 2 else math.nan


@dataclass(frozen=True)
class Judgement:
    """The verdict of one cell and the rule that gave it, with its numbers (shown in the CSV)."""

    verdict: str
    rule: str


def tolerance(crit: dict[str, Any], paper_sd: float, n_ours: int, n_paper: int) -> float:
    """``max(abs, sd * SD_paper * sqrt(1/n_ours + 1/n_paper))``; just ``abs`` without a usable SD."""
    floor = float(crit["abs"])
    k = crit.get("sd")
    if k is None or not np.isfinite(paper_sd) or n_paper < 2 or n_ours < 1:
        return floor
    return max(floor, float(k) * paper_sd * math.sqrt(1.0 / n_ours + 1.0 / n_paper))


def _counts_p(ours: float, paper: float, n_ours: int, n_paper: int) -> float:
    """Two-sided Fisher exact p of ours (k1 of n1) against the paper's (k2 of n2) significant replicates."""
    o, p = int(round(ours)), int(round(paper))
    return float(scipy.stats.fisher_exact([[o, n_ours - o], [p, n_paper - p]]).pvalue)


def contradiction(column: Column, paper: float, n_ours: int, n_paper: int, paper_sd: float = math.nan) -> float | None:
    """A value of ours that this column's rule must judge "differ", or None when there is none.

    None means the cell is not testable (e.g. one replicate against five: no count differs at 0.05).
    """
    crit = column.criterion
    kind = crit["kind"]
    if kind == "report" or paper is None or math.isnan(paper):
        return None
    if kind == "tolerance":
        return paper + 2.0 * tolerance(crit, paper_sd, n_ours, n_paper) + 1.0
    if kind == "sign":
        return -paper if paper != 0 else None
    if kind == "band":
        center = float(crit.get("center", 1.0))
        if math.isinf(paper):
            return center + 1.0
        excess = paper - center
        return center - excess if excess != 0 else center + 1.0
    if kind == "replicates":
        if n_ours < 1 or n_paper < 1:
            return None
        alpha = float(crit.get("alpha", 0.05))
        best = min(range(n_ours + 1), key=lambda o: _counts_p(o, paper, n_ours, n_paper))
        return float(best) if _counts_p(best, paper, n_ours, n_paper) < alpha else None
    raise ModularityError(f"unknown criterion {kind!r}")  # pragma: no cover - validated when the spec loads


def judge_cell(column: Column, ours: float, paper: float, n_ours: int, n_paper: int,
               paper_sd: float = math.nan) -> Judgement:
    """``agree`` / ``differ`` / ``not testable`` / ``report`` / ``n/a`` for one cell, with the rule's numbers."""
    crit = column.criterion
    kind = crit["kind"]
    if kind == "report":
        return Judgement("report", "reported only")
    if ours is None or paper is None or math.isnan(ours) or math.isnan(paper):
        return Judgement("n/a", "a value is missing")
    if contradiction(column, paper, n_ours, n_paper, paper_sd) is None:
        why = (f"{n_ours} replicate(s) against {n_paper}: no count differs at p < {crit.get('alpha', 0.05)} "
               "(Fisher's exact test)" if kind == "replicates" else "no value of ours could differ")
        return Judgement("not testable", why)
    if kind == "tolerance":
        tol = tolerance(crit, paper_sd, n_ours, n_paper)
        ok = abs(ours - paper) <= tol
        sd_text = (f"{crit['sd']} x SD {paper_sd:.3g} x sqrt(1/{n_ours} + 1/{n_paper}), floor {crit['abs']}"
                   if crit.get("sd") is not None and np.isfinite(paper_sd) and n_paper >= 2 else f"floor {crit['abs']}")
        rule = f"|ours - paper| = {abs(ours - paper):.3g} {'<=' if ok else '>'} {tol:.3g} ({sd_text})"
    elif kind == "sign":
        ok = bool(np.sign(ours) == np.sign(paper))
        rule = "same sign" if ok else "opposite signs"
    elif kind == "band":
        center, factor = float(crit.get("center", 1.0)), float(crit["factor"])
        if math.isinf(ours) or math.isinf(paper):
            ok = ours == paper
            rule = "both infinite" if ok else "one value is infinite"
        else:
            eo, ep = ours - center, paper - center
            if eo * ep <= 0:
                ok = eo == ep == 0
                rule = f"excess over {center:g}: {eo:.3g} vs {ep:.3g} ({'both 0' if ok else 'not the same side'})"
            else:
                ratio = max(eo / ep, ep / eo)
                ok = ratio <= factor
                rule = f"excess over {center:g}: {eo:.3g} vs {ep:.3g}, ratio {ratio:.3g} {'<=' if ok else '>'} {factor:g}"
    elif kind == "replicates":
        alpha = float(crit.get("alpha", 0.05))
        pv = _counts_p(ours, paper, n_ours, n_paper)
        ok = pv >= alpha
        rule = f"{int(ours)}/{n_ours} vs {int(paper)}/{n_paper}: Fisher exact p = {pv:.3g} {'>=' if ok else '<'} {alpha:g}"
    else:  # pragma: no cover - validated when the spec loads
        raise ModularityError(f"unknown criterion {kind!r}")
    return Judgement("agree" if ok else "differ", rule)


def judge(column: Column, ours: float, paper: float, n_ours: int, n_paper: int, paper_sd: float = math.nan) -> str:
    """The verdict of :func:`judge_cell` alone."""
    return judge_cell(column, ours, paper, n_ours, n_paper, paper_sd).verdict


# --------------------------------------------------------------------------------------------------
# Like for like

#: The reference networks our tags stand in for in the paper's tables, and what is different about them.
VARIANTS = {
    "+LUCID": "3-channel, column-scrambled MNIST inputs and 30 + 20 epochs for the MLPs (methods §1.3, §9.9); "
              "the reference's published evaluation code cannot evaluate its own MLP Lucid images (§9.15), so the "
              "stored rows came from another version of it",
}


def _value_used(mine: pd.DataFrame, field_name: str, settings: dict[str, Any], setting: str, default: Any) -> Any:
    """What a run used: the recorded result field if every replicate has one value, else the profile's setting."""
    if len(mine) and field_name in mine.columns:
        vals = mine[field_name].dropna().unique()
        if len(vals) == 1:
            v = vals[0]
            return v.item() if hasattr(v, "item") else v
    return settings.get(setting, default)


def like_for_like(table: TableSpec, row: Row, profile: Profile | None, mine: pd.DataFrame,
                  prow: pd.DataFrame) -> list[str]:
    """Why this row's networks or protocol are not the paper's (empty list: comparable).

    Checks the network variant (the paper's ``reference_tag``), the training recipe, the graph norm and
    the analysis protocol: every :class:`benchmark.analyses.ReferenceSetting` of the table's analysis (conv
    norm, tie arithmetic, whole-layer sub-clusters, test images, the coherence size filter, ReLU-override
    window and steps). Values recorded in the results win over the profile's settings.
    """
    reasons: list[str] = []
    if "reference_tag" in prow.columns:
        refs = sorted(set(prow["reference_tag"].dropna()) - {row.tag})
        for ref in refs:
            note = next((v for suffix, v in VARIANTS.items() if ref.endswith(suffix)), "another network")
            reasons.append(f"network: the paper's numbers are from {ref} ({note}); ours from {row.tag}")
    if profile is None:
        return reasons
    family = row.family
    if family != "imagenet":
        train = profile.section("train", family)
        short = {k: train.get(k) for k in ("epochs", "pruning_epochs", "train_subsample") if train.get(k) is not None}
        if short:
            parts = [f"{k.replace('_', ' ')} {v}" for k, v in short.items()]
            reasons.append(f"recipe: {', '.join(parts)} (the paper: the tag's full recipe, methods §1.3)")
    if family == "mlp" and "+L2REG" in row.tag:
        reasons.append("regulariser: L2 on every kernel (the reference's MLP +L2REG nets had L1 on the first layer, "
                       "methods §9.6)")
    if table.name == "importance" and row.tag.startswith("POLY"):  # the regression lesion test (modularity.poly)
        direction = _value_used(mine, "direction", profile.section("importance", family), "direction", "paper")
        if direction != "reference":
            reasons.append(f"direction: {direction} (the stored POLY row used the reference's inverted test: small p when "
                           "the lesion gives a LOWER MSE than random ones, methods §9.11)")
    for setting in analyses.get(table.analysis).reference:
        if not setting.applies(family):
            continue
        section = profile.graph if setting.section == "graph" else profile.section(setting.section, family)
        value = _value_used(mine, setting.result_field or "", section, setting.key, setting.default)
        if value != setting.reference:
            reasons.append(setting.why.format(value=value))
    return reasons


def cell_protocol(table: TableSpec, column: Column, row: Row, profile: Profile | None, mine: pd.DataFrame,
                  prow: pd.DataFrame) -> str | None:
    """Why this cell's statistic is not comparable (e.g. 20 shuffles against 50), or None."""
    settings = profile.section(table.analysis, row.family) if profile is not None else {}
    for param in analyses.protocol_of(table.analysis, column.key):
        if param.paper_column not in prow.columns or not len(prow):
            continue
        theirs = sorted({int(v) for v in prow[param.paper_column].dropna()})
        ours = _value_used(mine, param.result_field, settings, param.setting, param.default)
        if ours is None or len(theirs) != 1:
            continue
        if int(ours) != theirs[0]:
            return f"{param.setting.replace('_', ' ')} {int(ours)} (the paper: {theirs[0]})"
    return None


# --------------------------------------------------------------------------------------------------
# Comparing a table


def paper_rows(table: TableSpec, paper: pd.DataFrame, row: Row) -> pd.DataFrame:
    """The paper's replicates of a row: by the reference's own tag where it is ours (``MNIST+LUCID``), else by
    the tag the paper values are compared with (``MNIST`` for the +LUCID rows)."""
    key = paper["tag"]
    if "reference_tag" in paper.columns and (paper["reference_tag"] == row.tag).any():
        key = paper["reference_tag"]
    return paper[(key == row.tag) & (paper["pruned"] == row.pruned) & (paper["k"] == row.k)]


@dataclass
class TableComparison:
    """A compared table: ``long`` (one row per table row x column) and ``rows`` (one per table row)."""

    table: TableSpec
    long: pd.DataFrame
    rows: pd.DataFrame


@dataclass
class OursRow:
    """Our side of one table row: replicate count, aggregated column values and the raw replicate rows."""

    n: int
    values: dict[str, float]
    replicates: pd.DataFrame = field(default_factory=pd.DataFrame)


LONG_COLUMNS = ["table", "family", "tag", "pruned", "k", "column", "label", "ours", "paper", "paper_sd",
                "ours_corrected", "paper_corrected", "n_ours", "n_paper", "criterion", "verdict", "rule"]
ROW_COLUMNS = ["table", "family", "tag", "pruned", "k", "n_ours", "n_paper", "verdict", "reason", "differing",
               "comparable", "why", "cells_verdict", "untestable", "stability"]


def aggregate_results(table: TableSpec, rows: list[Row], results: pd.DataFrame) -> dict[tuple[str, bool, int], OursRow]:
    """Our replicates of every row, aggregated per column (rows without results are left out)."""
    ours_all = results[results["analysis"] == table.analysis] if len(results) else results
    out = {}
    for row in rows:
        if row.skip is not None or not len(ours_all):
            continue
        mine = ours_all[(ours_all["tag"] == row.tag) & (ours_all["pruned"] == row.pruned) & (ours_all["k"] == row.k)
                        & (ours_all["seed"].isin(row.seeds))]
        if len(mine):
            out[row.key] = OursRow(len(mine), aggregate_columns(table, mine), mine)
    return out


def aggregate_columns(table: TableSpec, replicates: pd.DataFrame) -> dict[str, float]:
    """Each column of ``table`` aggregated over ``replicates`` (NaN for a field the results lack)."""
    return {c.name: (aggregate(replicates[c.key], c) if c.key in replicates else math.nan) for c in table.columns}


def judge_cells(table: TableSpec, row: Row, profile: Profile | None, mine: OursRow,
                prow: pd.DataFrame) -> list[tuple[Column, float, float, float, Judgement]]:
    """Every column of one row judged: (column, ours, paper, paper SD, judgement), cells whose protocol is
    not the paper's marked not comparable (:func:`cell_protocol`)."""
    n_paper, out = len(prow), []
    for col in table.columns:
        o = mine.values.get(col.name, math.nan)
        has_paper = n_paper and col.key in prow
        pap = aggregate(prow[col.key], col) if has_paper else math.nan
        sd = replicate_sd(prow[col.key]) if has_paper and col.stat == "median" else math.nan
        j = judge_cell(col, o, pap, mine.n, n_paper, sd)
        if j.verdict in ("agree", "differ", "not testable"):
            off = cell_protocol(table, col, row, profile, mine.replicates, prow)
            if off is not None:
                j = Judgement("not comparable", f"{off}; rule alone: {j.verdict} ({j.rule})")
        out.append((col, o, pap, sd, j))
    return out


def cells_verdict(verdicts: list[tuple[Column, str]]) -> tuple[str, list[str]]:
    """A row's verdict from its judged cells (differ if any differs) and the labels of the differing ones."""
    judged = [(c, v) for c, v in verdicts if v in ("agree", "differ")]
    differing = [c.label for c, v in judged if v == "differ"]
    return ("differ" if differing else "agree") if judged else "not testable", differing


#: Fewest replicates for the leave-one-out check (with two, one replicate is left: no spread to speak of).
LOO_MIN_REPLICATES = 3


def leave_one_out(table: TableSpec, row: Row, profile: Profile | None, mine: OursRow, prow: pd.DataFrame,
                  verdict: str) -> str:
    """Does one replicate decide the row's verdict? The row re-judged with each seed left out in turn.

    "stable (n of n)" when every subset gives ``verdict``; "fragile: without seed S: differ (col), ..." when
    some subset gives another verdict; "" with fewer than :data:`LOO_MIN_REPLICATES` replicates or without
    the replicates (a row read back from a committed table). Why: with three seeds a verdict can rest on
    one network (the CPU that trains them, or another seed, changes it); this says which rows do.
    """
    reps = mine.replicates
    if mine.n < LOO_MIN_REPLICATES or not len(reps) or "seed" not in reps:
        return ""
    seeds = sorted(reps["seed"].unique())
    if len(seeds) != mine.n:
        return ""
    flips = []
    for seed in seeds:
        sub = reps[reps["seed"] != seed]
        judged = judge_cells(table, row, profile, OursRow(len(sub), aggregate_columns(table, sub), sub), prow)
        v, differing = cells_verdict([(c, j.verdict) for c, _, _, _, j in judged])
        if v != verdict:
            flips.append(f"without seed {seed}: {v}" + (f" ({', '.join(differing)})" if differing else ""))
    return f"fragile: {'; '.join(flips)}" if flips else f"stable ({len(seeds)} of {len(seeds)})"


def compare_table(table: TableSpec, rows: list[Row], results: pd.DataFrame, paper: pd.DataFrame,
                  not_run: dict[tuple[str, bool, int], str] | None = None, profile: Profile | None = None,
                  ours: dict[tuple[str, bool, int], OursRow] | None = None) -> TableComparison:
    """Compare every row of ``table``; ``not_run`` gives reasons for planned rows with no results.

    ``profile`` (the one that made the results) decides like for like (:func:`like_for_like`);
    ``ours`` replaces the aggregation of ``results`` (e.g. values read back from a committed table).
    """
    not_run = not_run or {}
    ours = aggregate_results(table, rows, results) if ours is None else ours
    long_records, row_records = [], []
    for row in rows:
        base = {"table": table.name, "family": row.family, "tag": row.tag, "pruned": row.pruned, "k": row.k}
        prow = paper_rows(table, paper, row)
        n_paper = len(prow)
        idle = {"differing": "", "comparable": False, "why": "", "cells_verdict": "", "untestable": "",
                "stability": ""}
        if row.skip is not None:
            row_records.append({**base, "n_ours": 0, "n_paper": n_paper, "verdict": "skipped", "reason": row.skip,
                                **idle})
            continue
        mine = ours.get(row.key)
        if mine is None or mine.n == 0:
            reason = not_run.get(row.key, "no results (stage not run or failed)")
            row_records.append({**base, "n_ours": 0, "n_paper": n_paper, "verdict": "not run", "reason": reason,
                                **idle})
            continue
        n_ours = mine.n
        why = like_for_like(table, row, profile, mine.replicates, prow)
        cells_judged = judge_cells(table, row, profile, mine, prow)
        verdicts = []
        for col, o, pap, sd, j in cells_judged:
            verdicts.append((col, j.verdict))
            long_records.append({**base, "column": col.name, "label": col.label, "ours": o, "paper": pap,
                                 "paper_sd": sd, "ours_corrected": math.nan, "paper_corrected": math.nan,
                                 "n_ours": n_ours, "n_paper": n_paper, "criterion": criterion_text(col),
                                 "verdict": j.verdict, "rule": j.rule})
        cells, differing = cells_verdict(verdicts)
        untestable = [c.label for c, v in verdicts if v in ("not testable", "not comparable")]
        if n_paper == 0:
            verdict, cells = "no paper value", ""
        elif why:
            verdict = "not comparable"
        else:
            verdict = cells
        reason = "; ".join(why) if why else ("no judged column could differ: " + ", ".join(untestable)
                                             if verdict == "not testable" else "")
        if verdict == "differ" and row.explain:
            reason = row.explain
        stability = leave_one_out(table, row, profile, mine, prow, cells) if verdict in ("agree", "differ") else ""
        row_records.append({**base, "n_ours": n_ours, "n_paper": n_paper, "verdict": verdict, "reason": reason,
                            "differing": ", ".join(differing), "comparable": not why and n_paper > 0,
                            "why": "; ".join(why), "cells_verdict": cells, "untestable": ", ".join(untestable),
                            "stability": stability})
    long = pd.DataFrame.from_records(long_records, columns=LONG_COLUMNS)
    long = correct_across_networks(table, long)
    rows_df = pd.DataFrame.from_records(row_records, columns=ROW_COLUMNS)
    return TableComparison(table, long, rows_df)


def is_pvalue_column(col: Column) -> bool:
    """A network-level p-value shown as a median (``chi2_p_*``, ``combined_p_*``)."""
    return col.stat == "median" and (col.key.startswith("chi2_p_") or col.key.startswith("combined_p_"))


def correct_across_networks(table: TableSpec, long: pd.DataFrame, method: str = CORRECTION) -> pd.DataFrame:
    """Fill ``ours_corrected`` / ``paper_corrected``: each p-value column corrected across the table's networks at one k."""
    from modularity.stats import correct_columns

    if not len(long):
        return long
    names = [c.name for c in table.columns if is_pvalue_column(c)]
    out = long.copy()
    for name in names:
        for _, idx in out[out["column"] == name].groupby("k").groups.items():
            part = out.loc[idx, ["ours", "paper"]].astype(float).clip(upper=1.0)
            done = correct_columns(part, ["ours", "paper"], method=method)
            out.loc[idx, "ours_corrected"] = done["ours_corrected"].to_numpy()
            out.loc[idx, "paper_corrected"] = done["paper_corrected"].to_numpy()
    return out


def criterion_text(col: Column) -> str:
    c = col.criterion
    kind = c["kind"]
    if kind == "tolerance":
        if c.get("sd") is not None:
            return f"|ours - paper| <= max({c['abs']}, {c['sd']} x paper SD x sqrt(1/n_ours + 1/n_paper))"
        return f"|ours - paper| <= {c['abs']}"
    if kind == "sign":
        return "same sign"
    if kind == "band":
        return f"effect - {c.get('center', 1.0)}: same sign, within x{c['factor']}"
    if kind == "replicates":
        return f"#(p < {col.alpha}): Fisher exact test on the counts, differ at p < {c.get('alpha', 0.05)}"
    return "reported only"


_criterion_text = criterion_text  # the old private name (benchmark.report used it)


# --------------------------------------------------------------------------------------------------
# Coverage: every reference row, classified

#: Coverage classes, in the order the summary lists them.
COVERAGE = ("agree", "differ", "not comparable", "not testable", "not run", "not runnable here")


def _implemented(tag: str) -> bool:
    from modularity.models import TAGS

    return tag in TAGS


def coverage(cmps: list[TableComparison], paper_tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One line per (table, reference network): every reference row of the paper's CSVs, classified.

    A reference network is a (tag, pruned, k) group of a paper table (its replicates together); the lesion
    table's networks feed two tables (importance and output coherence), so they appear once for each.
    ``class`` is one of :data:`COVERAGE`; ``why`` says why a row is not compared.
    """
    records = []
    for cmp in cmps:
        paper = paper_tables[cmp.table.paper]
        tag_col = "reference_tag" if "reference_tag" in paper.columns else "tag"
        rows = cmp.rows.set_index(["tag", "pruned", "k"])
        groups = paper.groupby([tag_col, "tag", "pruned", "k"], sort=False)
        for (ref_tag, tag, pruned, k), grp in groups:
            base = {"table": cmp.table.name, "reference_tag": ref_tag, "tag": tag, "pruned": bool(pruned), "k": int(k),
                    "n_paper": len(grp), "source": grp["source"].iloc[0] if "source" in grp else ""}
            key = (tag, bool(pruned), int(k))
            if (ref_tag, bool(pruned), int(k)) in rows.index:  # our network of the reference's own tag
                key = (ref_tag, bool(pruned), int(k))
            base["tag"] = key[0]  # the network of ours the line is about
            if key in rows.index:
                r = rows.loc[key]
                verdict = r["verdict"]
                if verdict == "skipped":
                    cls, why = "not run", r["reason"]
                elif verdict == "not comparable":
                    cls, why = verdict, f"{r['why']} (its cells: {r['cells_verdict']})"
                elif verdict in ("not run", "not testable"):
                    cls, why = verdict, r["reason"]
                elif verdict == "differ":
                    cls, why = verdict, r["differing"] + (f": {r['reason']}" if r["reason"] else "")
                else:
                    cls, why = verdict, ""
            elif not (_implemented(ref_tag) or _implemented(tag)):
                cls, why = "not runnable here", "network not implemented in this project"
            else:
                cls, why = "not run", "the network exists here but no table spec lists this row"
            records.append({**base, "class": cls, "why": why})
    return pd.DataFrame.from_records(records, columns=["table", "reference_tag", "tag", "pruned", "k", "n_paper",
                                                       "source", "class", "why"])


# --------------------------------------------------------------------------------------------------
# Regression check (smoke profile)

REGRESSION_SPEC = SPEC_DIR / "regression.yaml"


@dataclass(frozen=True)
class RegressionRules:
    keys: tuple[str, ...]
    ignore: tuple[str, ...]
    digits: int
    digits_by_column: dict[str, int]

    def digits_for(self, column: str) -> int:
        return int(self.digits_by_column.get(column, self.digits))


def load_regression_rules(path: Path = REGRESSION_SPEC) -> RegressionRules:
    data = yaml.safe_load(path.read_text())
    return RegressionRules(tuple(data["keys"]), tuple(data.get("ignore") or ()), int(data.get("digits", 6)),
                           dict(data.get("digits_by_column") or {}))


def format_value(value: Any, digits: int) -> str:
    """The stored text of one value: exact for int/bool/str, ``digits`` significant digits for floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f"{f:.{digits - 1}e}"
    return str(value)


def last_digit_unit(text: str) -> float:
    """The value of one unit in the last digit of a stored float (``1.2346e+01`` -> 1e-3)."""
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 10.0 ** (int(exponent or 0) - decimals)


def _is_float_text(text: str) -> bool:
    """Whether stored text is a finite float in the stored format (``d.ddddde+XX``)."""
    t = text.lower()
    if "e" not in t or t in ("inf", "-inf", "nan"):
        return False
    try:
        float(t)
    except ValueError:
        return False
    return True


def value_matches(actual: Any, stored: str, digits: int) -> bool:
    """Whether ``actual`` reproduces the stored text (see the module docstring)."""
    text = format_value(actual, digits)
    if text == stored:
        return True
    if not (_is_float_text(stored) and _is_float_text(text)):
        return False
    unit = min(last_digit_unit(stored), last_digit_unit(text))
    return abs(float(actual) - float(stored)) < 0.5 * unit


def _native(value: Any) -> Any:
    """A pandas cell as a Python value (ints stay ints even in float columns with NaNs elsewhere)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def regression_columns(results: pd.DataFrame, rules: RegressionRules) -> list[str]:
    return [c for c in results.columns if c not in rules.ignore]


def format_expected(results: pd.DataFrame, rules: RegressionRules) -> pd.DataFrame:
    """The stored form of a results frame: every checked cell as text."""
    cols = regression_columns(results, rules)
    out = pd.DataFrame(index=results.index)
    for c in cols:
        out[c] = [format_value(_native(results.at[i, c]), rules.digits_for(c)) for i in results.index]
    return out


def check_regression(results: pd.DataFrame, expected: pd.DataFrame, rules: RegressionRules) -> list[str]:
    """Every difference between ``results`` and the stored ``expected`` text, as one line each."""
    problems: list[str] = []
    keys = list(rules.keys)
    for frame, name in ((results, "results"), (expected, "expected")):
        missing = [k for k in keys if k not in frame.columns]
        if missing:
            return [f"{name} lacks key columns {missing}"]
    res_text = format_expected(results, rules)
    res_keys = {tuple(res_text.loc[i, keys]): i for i in res_text.index}
    exp_keys = {tuple(expected.loc[i, keys].astype(str)): i for i in expected.index}
    for key in sorted(set(exp_keys) - set(res_keys)):
        problems.append(f"missing result row {dict(zip(keys, key, strict=True))}")
    for key in sorted(set(res_keys) - set(exp_keys)):
        problems.append(f"unexpected result row {dict(zip(keys, key, strict=True))}")
    value_cols = [c for c in expected.columns if c not in keys]
    for key in sorted(set(res_keys) & set(exp_keys)):
        i, j = res_keys[key], exp_keys[key]
        label = "/".join(key)
        for c in value_cols:
            stored = str(expected.at[j, c])
            if c not in results.columns:
                problems.append(f"{label}: column {c} is missing from the results")
                continue
            actual = _native(results.at[i, c])
            if not value_matches(actual, stored, rules.digits_for(c)):
                problems.append(f"{label}: {c} = {format_value(actual, rules.digits_for(c))}, expected {stored}")
        extra = [c for c in regression_columns(results, rules) if c not in expected.columns]
        if extra:
            problems.append(f"{label}: new columns not in the expected values: {', '.join(sorted(extra))}")
    return problems


def read_expected(path: Path) -> pd.DataFrame:
    """Stored expected values: every cell as text, exactly as written."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def expected_text(results: pd.DataFrame, rules: RegressionRules) -> str:
    return format_expected(results, rules).to_csv(index=False, lineterminator="\n")


def results_json_safe(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records"))
