"""Render compared tables: one Markdown file per table, CSV and LaTeX under ``tables/``, figures under
``figures/``, and ``summary.md``: one line per paper claim, the coverage of every reference row (agree /
differ / not comparable / not testable / not run / not runnable here, each with its reason), how the
output-coherence verdict depends on the rule for undefined lesion ranges, and the row lists.

``python -m benchmark.report --profile default --from-tables paper/tables --out paper`` re-judges the
committed tables (their reproduced values and replicate counts) with the current rules and rewrites the
report without re-running any stage.

Everything here is a pure function of the compared tables, so running the pipeline twice with the
same seeds writes byte-identical tables (no dates, no timings in them). Files are written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from modularity.utils import write_text_atomic

from .compare import TableComparison, criterion_text, is_pvalue_column
from .plan import Column, Profile

MARK = {"agree": "✓", "differ": "✗", "not testable": "∅", "not comparable": "≠"}
LEGEND = ("✓ agree, ✗ differ, ∅ not testable (no value of ours could differ, e.g. one replicate), "
          "≠ not comparable (another protocol behind this statistic, e.g. 20 shuffles against 50)")

#: The paper's claim each table tests.
CLAIMS = {
    "clusterability": "trained networks are more clusterable (lower n-cut) than their layer-shuffled weights",
    "importance": "lesioning a sub-cluster hurts accuracy more than lesioning random same-size sets of its layer",
    "output_coherence": "a sub-cluster's lesion damages some classes more than others, more than random lesions do",
    "input_coherence": "a sub-cluster's feature visualisation activates it more / is classified more confidently "
                       "than random sets'",
}


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


def _isnan(x: object) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def cell(ours: float, paper: float, verdict: str, column: Column, n_ours: int, n_paper: int,
         ours_corrected: float = math.nan, paper_corrected: float = math.nan) -> str:
    """``ours [corrected] (paper [corrected]) mark``; missing parts are left out."""
    text = fmt_number(ours, column, n_ours)
    if not _isnan(ours_corrected):
        text += f" [{fmt_number(ours_corrected, column)}]"
    if not _isnan(paper):
        inner = fmt_number(paper, column, n_paper)
        if not _isnan(paper_corrected):
            inner += f" [{fmt_number(paper_corrected, column)}]"
        text += f" ({inner})"
    mark = MARK.get(verdict)
    return f"{text} {mark}" if mark else text


def yes_no(pruned: bool) -> str:
    return "pruned" if pruned else "unpruned"


# --------------------------------------------------------------------------------------------------
# Tables


def why_notes(cmp: TableComparison) -> dict[str, int]:
    """Every distinct not-comparable reason of a table, numbered from 1 in row order."""
    notes: dict[str, int] = {}
    for why in cmp.rows.loc[cmp.rows["verdict"] == "not comparable", "why"]:
        notes.setdefault(why, len(notes) + 1)
    return notes


def row_verdict_text(r: pd.Series, notes: dict[str, int]) -> str:
    verdict = r["verdict"]
    if verdict == "differ":
        return f"differ: {r['differing']}"
    if verdict in ("not run", "not testable"):
        return f"{verdict}: {r['reason']}"
    if verdict == "not comparable":
        cells = r["cells_verdict"] + (f": {r['differing']}" if r["cells_verdict"] == "differ" else "")
        return f"not comparable [{notes.get(r['why'], '?')}] (cells: {cells})"
    return verdict


def wide_table(cmp: TableComparison, k: int, markdown: bool = True) -> pd.DataFrame:
    """The rows that ran at ``k`` as a display frame: one column per spec column plus the verdict."""
    notes = why_notes(cmp)
    rows = cmp.rows[(cmp.rows["k"] == k) & (~cmp.rows["verdict"].isin(["skipped"]))]
    stability = has_stability(cmp)
    out = []
    long = cmp.long.set_index(["tag", "pruned", "k", "column"]) if len(cmp.long) else None
    for _, r in rows.iterrows():
        rec = {"family": r["family"], "network": r["tag"], "weights": yes_no(r["pruned"]),
               "n (paper)": f"{r['n_ours']} ({r['n_paper']})"}
        for col in cmp.table.columns:
            key = (r["tag"], r["pruned"], r["k"], col.name)
            if long is not None and key in long.index:
                e = long.loc[key]
                text = cell(e["ours"], e["paper"], e["verdict"] if markdown else "", col, e["n_ours"], e["n_paper"],
                            e.get("ours_corrected", math.nan), e.get("paper_corrected", math.nan))
            else:
                text = "–"
            rec[col.label] = text
        rec["verdict"] = row_verdict_text(r, notes)
        if stability:
            rec["one seed left out"] = r.get("stability", "") or "–"
        out.append(rec)
    return pd.DataFrame(out)


def has_stability(cmp: TableComparison) -> bool:
    """Whether the leave-one-seed-out check ran on some row (it needs the replicates, not a committed table)."""
    return "stability" in cmp.rows and bool((cmp.rows["stability"].fillna("") != "").any())


def fragile_rows(cmp: TableComparison) -> pd.DataFrame:
    """The rows the leave-one-seed-out check marked fragile (none when it did not run)."""
    st = cmp.rows["stability"].fillna("") if "stability" in cmp.rows else pd.Series("", index=cmp.rows.index)
    return cmp.rows[st.str.startswith("fragile")]


def stability_line(cmp: TableComparison) -> str:
    """`` Leave one seed out: N stable, M fragile (rows).`` for a claim line, or "" when not checked."""
    if not has_stability(cmp):
        return ""
    st = cmp.rows["stability"].fillna("")
    fragile = fragile_rows(cmp)
    names = ", ".join(f"{t} ({yes_no(p)}, k={k})" for t, p, k in zip(fragile["tag"], fragile["pruned"], fragile["k"],
                                                                      strict=True))
    return (f" Leave one seed out: {int(st.str.startswith('stable').sum())} compared rows stable, {len(fragile)} "
            f"fragile{' (' + names + ')' if names else ''}.")


def stability_lines(cmps: list[TableComparison]) -> list[str]:
    """The rows whose verdict one replicate decides, with the subsets that flip it (nothing when not checked)."""
    if not any(has_stability(c) for c in cmps):
        return []
    lines = ["## Verdicts that one seed decides", "",
             "Each compared row with 3 or more replicates re-judged with each seed left out in turn (same rules, one "
             "replicate fewer): *fragile* when some subset gives another verdict. Such a verdict rests on one "
             "network, so another CPU (which trains other networks) or another seed can change it.", ""]
    hit = False
    for cmp in cmps:
        for _, r in fragile_rows(cmp).iterrows():
            hit = True
            lines.append(f"- {cmp.table.name}: {r['tag']} ({yes_no(r['pruned'])}, k={r['k']}), {r['verdict']}: "
                         f"{r['stability'].removeprefix('fragile: ')}")
    return lines + ([] if hit else ["None: every compared row keeps its verdict without any one seed."]) + [""]


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
    lines = [f"- **{c.label}**: {criterion_text(c)}" for c in cmp.table.columns if c.criterion["kind"] != "report"]
    if any(is_pvalue_column(c) for c in cmp.table.columns):
        lines.append("- p-value medians show `[Holm-corrected across the networks of this table at this k]` "
                     "after the uncorrected value, for ours and the paper's (not judged).")
    return lines


def note_lines(cmp: TableComparison) -> list[str]:
    """The numbered not-comparable reasons of a table page."""
    notes = why_notes(cmp)
    if not notes:
        return []
    return ["Not comparable (the row stays out of the agree / differ counts; its cells' verdict is shown):", "",
            *[f"{i}. {why}" for why, i in notes.items()], ""]


def table_markdown(cmp: TableComparison, profile: Profile) -> str:
    t = cmp.table
    lines = [f"# {t.title}", "", f"Profile `{profile.name}`: {profile.description}", "", t.note, "",
             f"Cells: reproduced value (paper value) and {LEGEND} where the column is judged. "
             "Values are medians over replicates (seeds); `#...<.05` columns count replicates. "
             "`n (paper)`: our replicates (the paper's). The CSV under `tables/` has each cell's rule with "
             "its numbers.", "", "Criteria:", *criteria_lines(cmp), ""]
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
    lines += note_lines(cmp)
    return "\n".join(lines).rstrip() + "\n"


def table_csv(cmp: TableComparison) -> str:
    """Tidy long CSV: one line per (row, column), plus one line per skipped / not-run row."""
    rows = cmp.rows.set_index(["tag", "pruned", "k"])
    long = cmp.long.copy()
    keys = list(zip(long["tag"], long["pruned"], long["k"], strict=True))
    long["row_verdict"] = [rows.loc[key, "verdict"] for key in keys]
    long["reason"] = [rows.loc[key, "reason"] for key in keys]
    long["comparable"] = [bool(rows.loc[key, "comparable"]) for key in keys]
    if has_stability(cmp):
        long["stability"] = [rows.loc[key, "stability"] for key in keys]
    idle = cmp.rows[cmp.rows["verdict"].isin(["skipped", "not run"])]
    extra = pd.DataFrame({"table": idle["table"], "family": idle["family"], "tag": idle["tag"],
                          "pruned": idle["pruned"], "k": idle["k"], "n_ours": idle["n_ours"],
                          "n_paper": idle["n_paper"], "row_verdict": idle["verdict"], "reason": idle["reason"],
                          "comparable": False})
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


ROW_CLASSES = ("agree", "differ", "not comparable", "not testable", "no paper value", "not run", "skipped")


def counts(cmp: TableComparison) -> dict[str, int]:
    vc = cmp.rows["verdict"].value_counts()
    return {v: int(vc.get(v, 0)) for v in ROW_CLASSES}


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
        lines += note_lines(cmp)
    return lines


def claim_lines(cmps: list[TableComparison], cov: pd.DataFrame) -> list[str]:
    """One line per paper claim: what the comparable rows say, and how many reference rows are behind it."""
    from .compare import COVERAGE

    lines = ["## The paper's claims", ""]
    for cmp in cmps:
        name = cmp.table.name
        c = cov[cov["table"] == name]["class"].value_counts()
        n = int(c.sum())
        tally = ", ".join(f"{int(c.get(k, 0))} {k}" for k in COVERAGE if c.get(k, 0))
        agree, differ = int(c.get("agree", 0)), int(c.get("differ", 0))
        if agree + differ == 0:
            verdict = "**not tested like for like in this profile**"
        elif differ == 0:
            verdict = f"**agrees with the paper on all {agree} comparable reference rows**"
        else:
            rows = cov[(cov["table"] == name) & (cov["class"] == "differ")]
            nets = "; ".join(f"{t} ({yes_no(p)}): {w}" for t, p, w in zip(rows["reference_tag"], rows["pruned"],
                                                                           rows["why"], strict=True))
            verdict = (f"**agrees on {agree} and differs on {differ} of {agree + differ} comparable reference rows** "
                       f"(differing columns: {nets})")
        lines.append(f"- **{cmp.table.title.split(':')[0]}** ({CLAIMS.get(name, cmp.table.title)}): {verdict}. "
                     f"Reference rows: {n} ({tally}).{stability_line(cmp)}")
    return lines + [""]


def coverage_lines(cov: pd.DataFrame) -> list[str]:
    """The coverage table: every reference row with its class and reason."""
    from .compare import COVERAGE

    n_ref = cov.drop_duplicates(["reference_tag", "pruned", "k", "source"])
    lines = ["## Coverage: every reference row", "",
             f"{len(n_ref)} reference networks (tag, weights, k; their replicates together) from the reference's "
             f"CSVs and the ImageNet values of docs/methods.md §8.2; the lesion rows feed two tables (importance, "
             f"output coherence), so this table has {len(cov)} lines.", "",
             "| class | " + " | ".join(sorted(cov["table"].unique(), key=list(CLAIMS).index)) + " | all |",
             "|---|" + "---|" * (cov["table"].nunique() + 1)]
    tables = sorted(cov["table"].unique(), key=list(CLAIMS).index)
    for cls in COVERAGE:
        sel = cov[cov["class"] == cls]
        lines.append(f"| {cls} | " + " | ".join(str(int((sel["table"] == t).sum())) for t in tables)
                     + f" | {len(sel)} |")
    lines += ["", "| table | reference network | weights | k | n | class | why |", "|---|---|---|---|---|---|---|"]
    order = {c: i for i, c in enumerate(COVERAGE)}
    cov = cov.assign(_o=cov["class"].map(order), _t=cov["table"].map(list(CLAIMS).index))
    for _, r in cov.sort_values(["_t", "_o", "reference_tag", "pruned"], kind="stable").iterrows():
        net = r["reference_tag"] if r["reference_tag"] == r["tag"] else f"{r['reference_tag']} (ours: {r['tag']})"
        why = str(r["why"]).replace("|", "/")
        lines.append(f"| {r['table']} | {net} | {yes_no(r['pruned'])} | {r['k']} | {r['n_paper']} | {r['class']} | {why} |")
    return lines + [""]


def summary_markdown(cmps: list[TableComparison], profile: Profile, extra: list[str] | None = None,
                     cov: pd.DataFrame | None = None) -> str:
    from .compare import coverage
    from .paper_values import load_paper_values

    if cov is None:
        cov = coverage(cmps, {t.table.paper: load_paper_values(t.table.paper) for t in cmps})
    lines = [f"# Reproduction summary: profile `{profile.name}`", ""]
    lines += claim_lines(cmps, cov)
    lines += [profile.description, "",
              "Each table's page (same folder) has every row; `tables/` has CSV and LaTeX versions (with each "
              "cell's rule and numbers), `figures/` the reproduced-against-paper plots. A row is *not comparable* "
              "when its network or protocol is not the reference's (the reason is given; it stays out of the "
              "agree / differ counts), *not testable* when no value of ours could make it differ. The rules: "
              "docs/reproduce.md; what the reference computed: docs/methods.md.", ""]
    lines += coverage_lines(cov)
    lines += ["## Rows per table (including rows without a paper value)", "",
              "| table | " + " | ".join(ROW_CLASSES) + " |", "|---|" + "---|" * len(ROW_CLASSES)]
    for cmp in cmps:
        c = counts(cmp)
        lines.append(f"| [{cmp.table.title}]({cmp.table.name}.md) | " + " | ".join(str(c[v]) for v in ROW_CLASSES) + " |")
    lines.append("")
    lines += undefined_range_lines()
    lines += stability_lines(cmps)
    lines += mlp_k12_section(cmps)
    for title, verdict in (("Rows that differ from the paper", "differ"), ("Rows that agree with the paper", "agree")):
        lines += [f"## {title}", ""]
        hit = False
        for cmp in cmps:
            sel = cmp.rows[cmp.rows["verdict"] == verdict]
            for _, r in sel.iterrows():
                hit = True
                detail = f": {r['differing']}" if verdict == "differ" else ""
                lines.append(f"- {cmp.table.name}: {r['tag']} ({yes_no(r['pruned'])}, k={r['k']}){detail}")
        lines += ([] if hit else ["None."]) + [""]
    lines += ["## Rows not comparable with the paper", ""]
    hit = False
    for cmp in cmps:
        sel = cmp.rows[cmp.rows["verdict"] == "not comparable"]
        for _, r in sel.iterrows():
            hit = True
            lines.append(f"- {cmp.table.name}: {r['tag']} ({yes_no(r['pruned'])}, k={r['k']}), cells "
                         f"{r['cells_verdict']}{': ' + r['differing'] if r['differing'] else ''}: {r['why']}")
    lines += ([] if hit else ["None."]) + [""]
    lines += ["## Rows not run or skipped", ""]
    for cmp in cmps:
        idle = cmp.rows[cmp.rows["verdict"].isin(["skipped", "not run"])]
        if len(idle):
            lines += [f"### {cmp.table.title}", ""]
            lines += skipped_lines(idle.assign(verdict="skipped"))
            lines.append("")
    if extra:
        lines += extra
    return "\n".join(lines).rstrip() + "\n"


#: The reference's raw single-lesion counts (two pruned FASHION+DROPOUT MLPs; docs/methods.md §5.7).
RAW_LESION = Path(__file__).resolve().parents[1] / "tests" / "data" / "fashion_dropout_mlp_lesion_raw.csv"

UNDEFINED_RULES = (("strict ties (library default)", {}), ("mid-rank ties", {"ties": "mid"}),
                   ("conservative ties", {"ties": "conservative"}), ("undefined = half", {"undefined_ranges": "mid"}),
                   ("undefined excluded", {"undefined_ranges": "exclude"}))


def undefined_range_table(path: Path = RAW_LESION) -> pd.DataFrame:
    """Fisher p on lesion ranges of the reference's raw counts under each rule for undefined ranges."""
    from modularity import stats

    raw = pd.read_csv(path)
    counts_cols = [c for c in raw.columns if c.startswith("correct_")]
    out = []
    for (net, k), grp in raw.groupby(["network", "k"], sort=True):
        unl = grp[grp["draw"] == "unlesioned"][counts_cols].to_numpy(dtype=np.int64)[0]
        subs = grp[grp["subcluster"] >= 0]
        true = subs[subs["draw"] == "true"].sort_values("subcluster")[counts_cols].to_numpy(dtype=np.int64)
        rand = subs[~subs["draw"].isin(["true"])]
        draws = sorted(rand["draw"].unique(), key=lambda d: int(str(d).rsplit("_", 1)[-1]))
        random = np.stack([rand[rand["draw"] == d].sort_values("subcluster")[counts_cols].to_numpy(dtype=np.int64)
                           for d in draws])
        sizes = np.full(len(counts_cols), 1000, dtype=np.int64)
        rec: dict[str, object] = {"network": net, "k": int(k)}
        for arithmetic in ("exact", "float"):
            for label, kw in UNDEFINED_RULES:
                s = stats.lesion_summary(unl, true, random, sizes, arithmetic=arithmetic, n_boot=10, **kw)
                rec[f"{label} / {arithmetic}"] = s["combined_p_ranges"]
        rec["undefined true ranges"] = int(stats.lesion_summary(unl, true, random, sizes, n_boot=10,
                                                                undefined_ranges="mid")["n_undefined_ranges"])
        out.append(rec)
    return pd.DataFrame(out)


def undefined_range_lines(path: Path = RAW_LESION) -> list[str]:
    """How the output-coherence test depends on the rule for undefined lesion ranges (summary section)."""
    if not path.is_file():
        return []
    df = undefined_range_table(path)
    shown = df[["network", "k", "undefined true ranges"]
               + [f"{label} / exact" for label, _ in UNDEFINED_RULES] + ["strict ties (library default) / float"]]
    shown = shown.rename(columns=lambda c: c.replace(" / exact", "").replace("(library default) / float",
                                                                             "/ float (the reference)"))
    text = shown.to_markdown(index=False, floatfmt=".3g")
    return ["## Output coherence and undefined lesion ranges", "",
            "A lesion that changes no class's accuracy on balance has no class-specificity range (0/0). The "
            "strict tie rule scores an undefined true range as more class-specific than every random draw, the "
            "conservative one as less; `stats.lesion_summary(undefined_ranges=\"mid\" | \"exclude\")` makes it "
            "neither (docs/statistics.md). Fisher's p on ranges (the output-coherence test) of the reference's own "
            "raw counts (two pruned FASHION+DROPOUT MLPs, docs/methods.md §5.7) under each rule, exact arithmetic "
            "unless marked float:", "", text, "",
            "So a \"significant\" output coherence can come from the tie rule alone: read the output-coherence "
            "verdicts with this in mind. The committed results use the library default (strict ties, undefined "
            "ranges as ties); a profile chooses another rule with `importance: {undefined_ranges: mid}`.", ""]


def write_report(cmps: list[TableComparison], profile: Profile, out: Path, extra: list[str] | None = None,
                 figures: bool = True) -> list[Path]:
    """Write every table (md, csv, tex), the figures (unless ``figures=False``) and the summary under ``out``."""
    written = []
    for cmp in cmps:
        name = cmp.table.name
        for path, text in ((out / f"{name}.md", table_markdown(cmp, profile)),
                           (out / "tables" / f"{name}.csv", table_csv(cmp)),
                           (out / "tables" / f"{name}.tex", table_latex(cmp))):
            write_text_atomic(path, text)
            written.append(path)
        for k in sorted(cmp.rows[cmp.rows["verdict"] != "skipped"]["k"].unique()) if figures else ():
            fig = figure(cmp, out / "figures" / f"{name}_k{k}.png", int(k))
            if fig:
                written.append(fig)
    from .compare import coverage
    from .paper_values import load_paper_values

    cov = coverage(cmps, {c.table.paper: load_paper_values(c.table.paper) for c in cmps})
    cov_path = out / "tables" / "coverage.csv"
    write_text_atomic(cov_path, cov.to_csv(index=False, lineterminator="\n"))
    written.append(cov_path)
    path = out / "summary.md"
    write_text_atomic(path, summary_markdown(cmps, profile, extra, cov))
    written.append(path)
    return written


# --------------------------------------------------------------------------------------------------
# Re-judging committed tables (no stage re-run)


def ours_from_table_csv(path: Path) -> tuple[dict[tuple[str, bool, int], object], dict[tuple[str, bool, int], str]]:
    """Our aggregated values per row from a committed ``tables/<table>.csv``, and the not-run reasons in it."""
    from .compare import OursRow

    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    df["pruned"] = df["pruned"].astype(str).str.lower() == "true"
    ours: dict[tuple[str, bool, int], object] = {}
    not_run: dict[tuple[str, bool, int], str] = {}
    for (tag, pruned, k), grp in df.groupby(["tag", "pruned", "k"], sort=False):
        key = (str(tag), bool(pruned), int(k))
        ran = grp[grp["column"].notna()]
        if len(ran):
            values = {str(c): float(v) for c, v in zip(ran["column"], pd.to_numeric(ran["ours"], errors="coerce"),
                                                       strict=True)}
            ours[key] = OursRow(int(ran["n_ours"].iloc[0]), values)
        elif (grp["row_verdict"] == "not run").any():
            not_run[key] = str(grp["reason"].iloc[0])
    return ours, not_run


def rejudge(profile_name: str, tables_dir: Path, out: Path, figures: bool = True) -> list[Path]:
    """Rewrite the report under ``out`` from the committed tables in ``tables_dir`` with the current rules."""
    from .compare import compare_table
    from .paper_values import load_paper_values
    from .plan import load_profile, load_tables, plan

    profile = load_profile(profile_name)
    p = plan(profile, load_tables())
    cmps = []
    for table in p.tables:
        path = tables_dir / f"{table.name}.csv"
        ours, not_run = ours_from_table_csv(path) if path.is_file() else ({}, {})
        rows = [r for r in p.rows if r.table == table.name]
        cmps.append(compare_table(table, rows, pd.DataFrame(), load_paper_values(table.paper), not_run,
                                  profile=profile, ours=ours))  # type: ignore[arg-type]
    return write_report(cmps, profile, out, figures=figures)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from modularity.errors import ModularityError

    parser = argparse.ArgumentParser(prog="python -m benchmark.report",
                                     description="re-judge committed tables with the current rules and rewrite the report")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--from-tables", type=Path, default=Path("paper/tables"),
                        help="folder of committed <table>.csv files (default paper/tables)")
    parser.add_argument("--out", type=Path, default=Path("paper"))
    parser.add_argument("--no-figures", action="store_true", help="leave the figures as they are (faster)")
    args = parser.parse_args(argv)
    try:
        tables_dir = args.from_tables.resolve()
        if not tables_dir.is_dir():
            raise ModularityError(f"no tables folder {tables_dir}")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # read every table before the first is rewritten
            snapshot = Path(tmp)
            for f in tables_dir.glob("*.csv"):
                (snapshot / f.name).write_bytes(f.read_bytes())
            written = rejudge(args.profile, snapshot, args.out, figures=not args.no_figures)
    except ModularityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(written)} files written under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
