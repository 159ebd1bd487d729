"""Reproduced values against the paper's, with a verdict per statistic; and the smoke regression check.

**Paper comparison.** For every row of a table (a network (tag, pruned) at one k) and every column
of its spec, the replicates (seeds) are aggregated the same way for our results and the paper's:
``median`` over replicates, or ``n_significant`` = the number of replicates with the statistic below
``alpha``. Each column's ``criterion`` decides agreement:

* ``tolerance``: ``|ours - paper| <= abs`` (n-cut, accuracies);
* ``sign``: same sign (z-scores);
* ``band``: same side of ``center`` and ``max(ours/paper, paper/ours) <= factor`` (effect factors);
* ``replicates``: same significance at ``alpha`` in the same number of replicates within ``within``
  (default one), the paper's count scaled to our number of replicates when they differ:
  ``|n_ours - n_paper * r_ours / r_paper| <= within``;
* ``report``: shown, never judged (p-value medians, the reference's ill-defined effect factors).

A row agrees when every judged column agrees; it differs when any differs; rows without a paper
value (k = 8 or 18, tags the paper did not test) are marked so; rows the profile or the machine
could not run are skipped with their reason.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from modularity.errors import ModularityError

from .plan import ANALYSES, SPEC_DIR, Column, Row, TableSpec, result_dir

KEYS = ["analysis", "tag", "family", "seed", "pruned", "k"]
VERDICTS = ("agree", "differ", "no paper value", "not run", "skipped")

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


def judge(column: Column, ours: float, paper: float, n_ours: int, n_paper: int) -> str:
    """``agree``, ``differ``, ``report`` (not judged) or ``n/a`` (a value is missing)."""
    crit = column.criterion
    kind = crit["kind"]
    if kind == "report":
        return "report"
    if ours is None or paper is None or math.isnan(ours) or math.isnan(paper):
        return "n/a"
    if kind == "tolerance":
        ok = abs(ours - paper) <= float(crit["abs"])
    elif kind == "sign":
        ok = np.sign(ours) == np.sign(paper)
    elif kind == "band":
        center, factor = float(crit.get("center", 1.0)), float(crit["factor"])
        if math.isinf(ours) or math.isinf(paper):
            ok = ours == paper
        elif (ours - center) * (paper - center) < 0 or ours <= 0 or paper <= 0:
            ok = False
        else:
            ok = max(ours / paper, paper / ours) <= factor
    elif kind == "replicates":
        if n_ours == 0 or n_paper == 0:
            return "n/a"
        ok = abs(ours - paper * n_ours / n_paper) <= float(crit.get("within", 1)) + 1e-9
    else:  # pragma: no cover - parse_table_spec validates kinds
        raise ModularityError(f"unknown criterion {kind!r}")
    return "agree" if ok else "differ"


def paper_rows(table: TableSpec, paper: pd.DataFrame, row: Row) -> pd.DataFrame:
    sel = paper[(paper["tag"] == row.tag) & (paper["pruned"] == row.pruned) & (paper["k"] == row.k)]
    return sel


@dataclass
class TableComparison:
    """A compared table: ``long`` (one row per table row x column) and ``rows`` (one per table row)."""

    table: TableSpec
    long: pd.DataFrame
    rows: pd.DataFrame


def compare_table(table: TableSpec, rows: list[Row], results: pd.DataFrame, paper: pd.DataFrame,
                  not_run: dict[tuple[str, bool, int], str] | None = None) -> TableComparison:
    """Compare every row of ``table``; ``not_run`` gives reasons for planned rows with no results."""
    not_run = not_run or {}
    ours_all = results[results["analysis"] == table.analysis] if len(results) else results
    long_records, row_records = [], []
    for row in rows:
        base = {"table": table.name, "family": row.family, "tag": row.tag, "pruned": row.pruned, "k": row.k}
        prow = paper_rows(table, paper, row)
        n_paper = len(prow)
        if row.skip is not None:
            row_records.append({**base, "n_ours": 0, "n_paper": n_paper, "verdict": "skipped", "reason": row.skip,
                                "differing": ""})
            continue
        mine = ours_all[(ours_all["tag"] == row.tag) & (ours_all["pruned"] == row.pruned) & (ours_all["k"] == row.k)
                        & (ours_all["seed"].isin(row.seeds))] if len(ours_all) else ours_all
        n_ours = len(mine)
        if n_ours == 0:
            reason = not_run.get(row.key, "no results (stage not run or failed)")
            row_records.append({**base, "n_ours": 0, "n_paper": n_paper, "verdict": "not run", "reason": reason,
                                "differing": ""})
            continue
        verdicts = []
        for col in table.columns:
            ours = aggregate(mine[col.key], col) if col.key in mine else math.nan
            pap = aggregate(prow[col.key], col) if (n_paper and col.key in prow) else math.nan
            v = judge(col, ours, pap, n_ours, n_paper)
            verdicts.append((col, v))
            long_records.append({**base, "column": col.name, "label": col.label, "ours": ours, "paper": pap,
                                 "n_ours": n_ours, "n_paper": n_paper, "criterion": _criterion_text(col),
                                 "verdict": v})
        judged = [(c, v) for c, v in verdicts if v in ("agree", "differ")]
        differing = [c.label for c, v in judged if v == "differ"]
        if n_paper == 0 or not judged:
            verdict = "no paper value"
        else:
            verdict = "differ" if differing else "agree"
        row_records.append({**base, "n_ours": n_ours, "n_paper": n_paper, "verdict": verdict, "reason": "",
                            "differing": ", ".join(differing)})
    long = pd.DataFrame.from_records(long_records, columns=["table", "family", "tag", "pruned", "k", "column", "label",
                                                            "ours", "paper", "n_ours", "n_paper", "criterion",
                                                            "verdict"])
    rows_df = pd.DataFrame.from_records(row_records, columns=["table", "family", "tag", "pruned", "k", "n_ours",
                                                              "n_paper", "verdict", "reason", "differing"])
    return TableComparison(table, long, rows_df)


def _criterion_text(col: Column) -> str:
    c = col.criterion
    kind = c["kind"]
    if kind == "tolerance":
        return f"|ours - paper| <= {c['abs']}"
    if kind == "sign":
        return "same sign"
    if kind == "band":
        return f"same side of {c.get('center', 1.0)}, within x{c['factor']}"
    if kind == "replicates":
        return f"#(p < {col.alpha}) within {c.get('within', 1)} (scaled to our replicates)"
    return "reported only"


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
