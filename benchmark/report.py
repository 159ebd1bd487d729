"""Render compared tables: one Markdown file per table, CSV and LaTeX under ``tables/``, figures under
``figures/``, and ``summary.md`` (which rows agree, which differ, which were skipped and why).

Everything here is a pure function of the compared tables, so running the pipeline twice with the
same seeds writes byte-identical tables (no dates, no timings in them). Files are written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from modularity.utils import write_text_atomic

from .compare import TableComparison
from .plan import Column, Profile

MARK = {"agree": "✓", "differ": "✗"}


# --------------------------------------------------------------------------------------------------
# Number formatting


def fmt_number(x: float, column: Column | None = None, n: int | None = None) -> str:
    """A value as shown in the tables: counts as ``k/n``, p-values with 3 significant digits, else 4."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if column is not None and column.stat == "n_significant":
        return f"{int(x)}/{n}" if n else f"{int(x)}"
    if column is not None and column.key in ("n_subclusters",):
        return f"{x:g}"
    key = column.key if column is not None else ""
    if "p_" in key or key == "percentile":
        return f"{x:.3g}" if abs(x) >= 1e-3 else f"{x:.2e}"
    if abs(x) >= 1e5 or (0 < abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.4g}"


def cell(ours: float, paper: float, verdict: str, column: Column, n_ours: int, n_paper: int) -> str:
    """``ours (paper) mark``; the paper's part is left out where there is no paper value."""
    text = fmt_number(ours, column, n_ours)
    if not (isinstance(paper, float) and math.isnan(paper)):
        text += f" ({fmt_number(paper, column, n_paper)})"
    mark = MARK.get(verdict)
    return f"{text} {mark}" if mark else text


def yes_no(pruned: bool) -> str:
    return "pruned" if pruned else "unpruned"


# --------------------------------------------------------------------------------------------------
# Tables


def wide_table(cmp: TableComparison, k: int, markdown: bool = True) -> pd.DataFrame:
    """The rows that ran at ``k`` as a display frame: one column per spec column plus the verdict."""
    rows = cmp.rows[(cmp.rows["k"] == k) & (~cmp.rows["verdict"].isin(["skipped"]))]
    out = []
    long = cmp.long.set_index(["tag", "pruned", "k", "column"]) if len(cmp.long) else None
    for _, r in rows.iterrows():
        rec = {"family": r["family"], "network": r["tag"], "weights": yes_no(r["pruned"]),
               "n (paper)": f"{r['n_ours']} ({r['n_paper']})"}
        for col in cmp.table.columns:
            key = (r["tag"], r["pruned"], r["k"], col.name)
            if long is not None and key in long.index:
                e = long.loc[key]
                text = cell(e["ours"], e["paper"], e["verdict"] if markdown else "", col, e["n_ours"], e["n_paper"])
            else:
                text = "–"
            rec[col.label] = text
        verdict = r["verdict"]
        if verdict == "differ":
            verdict = f"differ: {r['differing']}"
        elif verdict == "not run":
            verdict = f"not run: {r['reason']}"
        rec["verdict"] = verdict
        out.append(rec)
    return pd.DataFrame(out)


def skipped_lines(rows: pd.DataFrame) -> list[str]:
    """Skipped rows grouped by reason: ``- reason: TAG (weights, k), ...``."""
    skipped = rows[rows["verdict"] == "skipped"]
    lines = []
    for reason, grp in skipped.groupby("reason", sort=False):
        nets = ", ".join(f"{t} ({yes_no(p)}, k={k})" for t, p, k in zip(grp["tag"], grp["pruned"], grp["k"],
                                                                         strict=True))
        lines.append(f"- {reason}: {nets}")
    return lines


def criteria_lines(cmp: TableComparison) -> list[str]:
    from .compare import _criterion_text

    return [f"- **{c.label}**: {_criterion_text(c)}" for c in cmp.table.columns if c.criterion["kind"] != "report"]


def table_markdown(cmp: TableComparison, profile: Profile) -> str:
    t = cmp.table
    lines = [f"# {t.title}", "", f"Profile `{profile.name}`: {profile.description}", "", t.note, "",
             "Cells: reproduced value (paper value) and ✓ agree / ✗ differ where the column is judged. "
             "Values are medians over replicates (seeds); `#...<.05` columns count replicates. "
             "`n (paper)`: our replicates (the paper's).", "", "Criteria:", *criteria_lines(cmp), ""]
    for k in sorted(cmp.rows["k"].unique(), key=lambda k: (k != 12, k)):
        lines += [f"## k = {k}", ""]
        wide = wide_table(cmp, k)
        if len(wide):
            lines += [wide.to_markdown(index=False), ""]
        else:
            lines += ["No row ran at this k.", ""]
        skipped = skipped_lines(cmp.rows[cmp.rows["k"] == k])
        if skipped:
            lines += ["Skipped:", "", *skipped, ""]
    return "\n".join(lines).rstrip() + "\n"


def table_csv(cmp: TableComparison) -> str:
    """Tidy long CSV: one line per (row, column), plus one line per skipped / not-run row."""
    rows = cmp.rows.set_index(["tag", "pruned", "k"])
    long = cmp.long.copy()
    long["row_verdict"] = [rows.loc[(t, p, k), "verdict"] for t, p, k in zip(long["tag"], long["pruned"], long["k"],
                                                                               strict=True)]
    long["reason"] = ""
    idle = cmp.rows[cmp.rows["verdict"].isin(["skipped", "not run"])]
    extra = pd.DataFrame({"table": idle["table"], "family": idle["family"], "tag": idle["tag"],
                          "pruned": idle["pruned"], "k": idle["k"], "n_ours": idle["n_ours"],
                          "n_paper": idle["n_paper"], "row_verdict": idle["verdict"], "reason": idle["reason"]})
    out = pd.concat([long, extra], ignore_index=True) if len(extra) else long
    return out.to_csv(index=False, lineterminator="\n", float_format="%.10g")


def table_latex(cmp: TableComparison) -> str:
    parts = [f"% {cmp.table.title} (generated by benchmark.report)"]
    for k in sorted(cmp.rows["k"].unique(), key=lambda k: (k != 12, k)):
        wide = wide_table(cmp, k, markdown=False)
        if not len(wide):
            continue
        wide = wide.drop(columns=["verdict"]).assign(verdict=[
            v for v in cmp.rows[(cmp.rows["k"] == k) & (cmp.rows["verdict"] != "skipped")]["verdict"]])
        parts.append(wide.to_latex(index=False, escape=True, caption=f"{cmp.table.title}, k = {k}",
                                   label=f"tab:{cmp.table.name}-k{k}"))
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------------
# Figures


def figure(cmp: TableComparison, path: Path, k: int = 12) -> Path | None:
    """Reproduced against paper value at ``k``, one panel per median column that has paper values
    (:func:`benchmark.figures.comparison_figure`: family by marker, agreement band, log axes)."""
    from .figures import comparison_figure

    return comparison_figure(cmp, path, k)


# --------------------------------------------------------------------------------------------------
# Summary


def counts(cmp: TableComparison) -> dict[str, int]:
    vc = cmp.rows["verdict"].value_counts()
    return {v: int(vc.get(v, 0)) for v in ("agree", "differ", "no paper value", "not run", "skipped")}


def mlp_k12_section(cmps: list[TableComparison]) -> list[str]:
    """For every MLP row at k = 12: judged columns side by side (reproduced, paper) and the verdict."""
    lines = ["## MLP rows at k = 12", ""]
    for cmp in cmps:
        rows = cmp.rows[(cmp.rows["family"] == "mlp") & (cmp.rows["k"] == 12)]
        if not len(rows):
            continue
        lines += [f"### {cmp.table.title}", ""]
        if (rows["verdict"] == "skipped").all():
            lines += skipped_lines(rows) + [""]
            continue
        wide = wide_table(cmp, 12)
        wide = wide[wide["family"] == "mlp"].drop(columns=["family"])
        lines += [wide.to_markdown(index=False), ""]
    return lines


def summary_markdown(cmps: list[TableComparison], profile: Profile, extra: list[str] | None = None) -> str:
    lines = [f"# Reproduction summary: profile `{profile.name}`", "", profile.description, "",
             "Each table's page (same folder) has every row; `tables/` has CSV and LaTeX versions, "
             "`figures/` the reproduced-against-paper plots.", "",
             "| table | agree | differ | no paper value | not run | skipped |", "|---|---|---|---|---|---|"]
    for cmp in cmps:
        c = counts(cmp)
        lines.append(f"| [{cmp.table.title}]({cmp.table.name}.md) | {c['agree']} | {c['differ']} | "
                     f"{c['no paper value']} | {c['not run']} | {c['skipped']} |")
    lines.append("")
    lines += mlp_k12_section(cmps)
    lines += ["## Rows that differ from the paper", ""]
    any_diff = False
    for cmp in cmps:
        d = cmp.rows[cmp.rows["verdict"] == "differ"]
        for _, r in d.iterrows():
            any_diff = True
            lines.append(f"- {cmp.table.name}: {r['tag']} ({yes_no(r['pruned'])}, k={r['k']}): {r['differing']}")
    if not any_diff:
        lines.append("None.")
    lines += ["", "## Rows that agree with the paper", ""]
    any_agree = False
    for cmp in cmps:
        a = cmp.rows[cmp.rows["verdict"] == "agree"]
        if len(a):
            any_agree = True
            nets = ", ".join(f"{t} ({yes_no(p)}, k={k})" for t, p, k in zip(a["tag"], a["pruned"], a["k"], strict=True))
            lines.append(f"- {cmp.table.name}: {nets}")
    if not any_agree:
        lines.append("None.")
    lines += ["", "## Rows not run or skipped", ""]
    for cmp in cmps:
        idle = cmp.rows[cmp.rows["verdict"].isin(["skipped", "not run"])]
        if len(idle):
            lines += [f"### {cmp.table.title}", ""]
            lines += skipped_lines(idle.assign(verdict="skipped"))
            lines.append("")
    if extra:
        lines += extra
    return "\n".join(lines).rstrip() + "\n"


def write_report(cmps: list[TableComparison], profile: Profile, out: Path, extra: list[str] | None = None) -> list[Path]:
    """Write every table (md, csv, tex), the figures and the summary under ``out``; returns the paths."""
    written = []
    for cmp in cmps:
        name = cmp.table.name
        for path, text in ((out / f"{name}.md", table_markdown(cmp, profile)),
                           (out / "tables" / f"{name}.csv", table_csv(cmp)),
                           (out / "tables" / f"{name}.tex", table_latex(cmp))):
            write_text_atomic(path, text)
            written.append(path)
        for k in sorted(cmp.rows[cmp.rows["verdict"] != "skipped"]["k"].unique()):
            fig = figure(cmp, out / "figures" / f"{name}_k{k}.png", int(k))
            if fig:
                written.append(fig)
    path = out / "summary.md"
    write_text_atomic(path, summary_markdown(cmps, profile, extra))
    written.append(path)
    return written
