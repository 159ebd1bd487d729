"""The benchmark harness: specs, plan, paper values, comparison, regression check, report, runner.

The real stages are replaced by fakes here (fast); tests/test_benchmark_smoke.py runs the real smoke
profile against its stored expected values.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: `benchmark` is not installed

from benchmark import compare, dvcgen, paper_values, plan, report, reproduce, stages
from modularity.errors import ModularityError

REFERENCE = paper_values.DEFAULT_REFERENCE


# --------------------------------------------------------------------------------------------------
# Paper values


def test_paper_values_match_methods_medians() -> None:
    """Medians of the converted tables equal docs/methods.md §8.2 / 8.3 (hand-copied from there)."""
    cl = paper_values.load_paper_values("clusterability")
    sel = cl[(cl.tag == "MNIST") & (cl.pruned) & (cl.k == 12)]
    assert len(sel) == 5
    assert sel.ncut.median() == pytest.approx(8.8746, abs=1e-4)
    assert sel.null_mean.median() == pytest.approx(9.186, abs=1e-4)
    assert (sel.percentile < 0.05).sum() == 5
    fd = cl[(cl.tag == "FASHION+DROPOUT") & (~cl.pruned)]
    assert fd.ncut.median() == pytest.approx(9.7037, abs=1e-4)
    cnn = cl[(cl.tag == "CNN-MNIST") & (cl.pruned)]
    assert cnn.family.unique().tolist() == ["cnn"] and cnn.ncut.median() == pytest.approx(10.4355, abs=1e-4)
    les = paper_values.load_paper_values("lesion")
    m = les[(les.tag == "FASHION") & les.pruned]
    assert m.combined_p_means.median() == pytest.approx(7.73e-6, rel=1e-2)
    assert m.effect_means.median() == pytest.approx(1.1475, abs=1e-4)
    assert np.isinf(m.effect_ranges).any()  # the reference's ill-defined factor is kept as stored
    assert set(les[les.family == "imagenet"].n_random) == {24}
    lucid = paper_values.load_paper_values("input_coherence")
    mn = lucid[lucid.reference_tag == "MNIST+LUCID"]
    assert set(mn.tag) == {"MNIST"} and mn.pruned.all()
    assert mn.combined_p_loss.median() == pytest.approx(0.5753, abs=1e-4)
    assert lucid[lucid.tag == "resnet50"].k.tolist() == [35]


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference CSVs (../shared/reference) not on this machine")
def test_committed_paper_values_equal_a_fresh_conversion() -> None:
    for name, df in paper_values.convert_reference(REFERENCE).items():
        committed = (paper_values.EXPECTED_PAPER / f"{name}.csv").read_text()
        assert paper_values.to_csv_text(df) == committed, f"{name}.csv is stale: python -m benchmark.paper_values"


# --------------------------------------------------------------------------------------------------
# Specs, profiles, plan, dvc.yaml


def test_table_specs_cover_the_paper_tables() -> None:
    tables = {t.name: t for t in plan.load_tables()}
    assert list(tables) == list(plan.TABLE_ORDER)
    imp = tables["importance"]
    mlp = [g for g in imp.rows if g.family == "mlp"][0]
    assert mlp.pruned == (True,) and set(mlp.k) == {8, 12, 18}  # docs/methods.md §5.1: pruned MLPs
    cnn = [g for g in imp.rows if g.family == "cnn"][0]
    assert cnn.pruned == (False,)  # unpruned small CNNs
    vgg = [g for g in tables["clusterability"].rows if g.family == "vgg"][0]
    assert vgg.k == (12,) and set(vgg.pruned) == {False, True}
    for t in tables.values():
        assert any(g.family == "imagenet" for g in t.rows)


def test_bad_table_spec_is_a_one_line_error() -> None:
    good = yaml.safe_load((plan.SPEC_DIR / "importance.yaml").read_text())
    bad = dict(good, analysis="lesions")
    with pytest.raises(ModularityError, match="analysis 'lesions'"):
        plan.parse_table_spec(bad)
    bad = dict(good, columns=[{"key": "x", "criterion": {"kind": "vibes"}}])
    with pytest.raises(ModularityError, match="criterion 'vibes'"):
        plan.parse_table_spec(bad)
    with pytest.raises(ModularityError, match="unknown profile 'nope'"):
        plan.load_profile("nope")


def test_plan_of_the_smoke_profile() -> None:
    p = plan.plan(plan.load_profile("smoke"), plan.load_tables())
    names = [s.name for s in p.stages]
    assert names[:2] == ["train@smoke-MNIST-s0", "train@smoke-CNN-MNIST-s0"]
    assert "importance@smoke-MNIST-s0-pruned" in names and "importance@smoke-CNN-MNIST-s0-unpruned" in names
    assert "importance@smoke-MNIST-s0-unpruned" not in names  # lesions use pruned MLPs only
    running = [r for r in p.rows if r.skip is None]
    assert {r.k for r in running} == {12} and {r.tag for r in running} == {"MNIST", "CNN-MNIST"}
    reasons = {r.skip for r in p.rows if r.skip}
    assert "family vgg is not in the smoke profile (`make reproduce PROFILE=paper` runs it)" in reasons
    # a skipped row names the first profile of params.yaml that runs it
    assert "tag MNIST+DROPOUT is not in the smoke profile (`make reproduce PROFILE=default` runs it)" in reasons
    assert "tag POLY is not in the smoke profile (`make reproduce PROFILE=full` runs it)" in reasons
    for s in p.stages:  # every analysis waits for its training
        if s.kind != "train":
            assert s.upstream == (f"train@smoke-{plan.slug(s.tag)}-s{s.seed}",)


def test_default_profile_skips_what_this_machine_cannot_do() -> None:
    p = plan.plan(plan.load_profile("default"), plan.load_tables())
    assert all(r.skip for r in p.rows if r.family in ("vgg", "imagenet"))
    tags = plan.load_profile("default").tags or ()
    assert not any(r.skip for r in p.rows if r.family == "mlp" and r.k == 12 and r.tag in tags)  # all run at k=12
    assert all("not in the default profile" in r.skip for r in p.rows if r.tag == "MNIST+L1REG")
    budget = [r for r in p.rows if r.table == "input_coherence" and r.family == "mlp" and r.k == 8]
    assert budget and all("time budget" in r.skip for r in budget)
    assert {s.family for s in p.stages} == {"mlp"}  # the short-recipe CNNs did not fit the 90 minutes
    cnn = {r.skip for r in p.rows if r.tag == "CNN-FASHION" and r.table == "importance" and r.k == 12}
    assert cnn == {"family cnn is not in the default profile (`make reproduce PROFILE=cnn-short` runs it)"}
    mlp_seeds = {s.seed for s in p.stages if s.family == "mlp"}
    assert len(mlp_seeds) >= 3


def test_stage_names_are_valid_dvc_names() -> None:
    from dvc.stage.utils import is_valid_name

    for name in ("smoke", "default", "cnn-short", "paper"):
        for s in plan.plan(plan.load_profile(name), plan.load_tables()).stages:
            assert is_valid_name(s.group) and is_valid_name(s.key) and s.name == f"{s.group}@{s.key}", s.name


def test_committed_dvc_yaml_is_current() -> None:
    dvc_yaml, grid = dvcgen.render()
    assert dvcgen.DVC_YAML.read_text() == dvc_yaml, "dvc.yaml is stale: python -m benchmark.reproduce --write-dvc-yaml"
    assert dvcgen.GRID_YAML.read_text() == grid, "benchmark/grid.yaml is stale: python -m benchmark.reproduce --write-dvc-yaml"


def test_dvc_stage_reads_only_its_parameter_sections() -> None:
    dvc_yaml, grid_text = dvcgen.render()
    doc, grid = yaml.safe_load(dvc_yaml)["stages"], yaml.safe_load(grid_text)
    st_ = doc["cluster"]["do"]
    assert st_["params"] == ["profiles.${item.profile}.cluster", "profiles.${item.profile}.graph",
                             "profiles.${item.profile}.threads"]
    assert "${item.checkpoint}" in st_["deps"] and st_["outs"] == ["${item.out}"]
    item = grid["cluster"]["default-MNIST-s0-pruned"]
    assert item["checkpoint"] == "data/benchmark/default/checkpoints/MNIST/seed0"
    assert item["out"] == "data/benchmark/default/results/MNIST/seed0/pruned/cluster"
    assert doc["train"]["do"]["params"] == ["profiles.${item.profile}.train", "profiles.${item.profile}.threads"]
    assert grid["train"]["cnn-short-CNN-MNIST-s0"]["dataset"] == "data/datasets/mnist"


# --------------------------------------------------------------------------------------------------
# Verdicts


def col(kind: str, stat: str = "median", **kw: float) -> plan.Column:
    return plan.Column(key="x", label="x", criterion={"kind": kind, **kw}, stat=stat)


def test_judge_by_criterion() -> None:
    assert compare.judge(col("tolerance", abs=0.25), 8.9, 8.87, 3, 5) == "agree"
    assert compare.judge(col("tolerance", abs=0.25), 9.2, 8.87, 3, 5) == "differ"
    assert compare.judge(col("sign"), -3.0, -9.7, 3, 5) == "agree"
    assert compare.judge(col("sign"), 2.0, -9.7, 3, 5) == "differ"
    band = col("band", factor=2, center=1.0)
    assert compare.judge(band, 1.021, 1.0254, 3, 5) == "agree"  # excess 0.021 vs 0.025
    assert compare.judge(band, 0.98, 1.0254, 3, 5) == "differ"  # wrong side of 1
    assert compare.judge(band, 1.10, 1.0254, 3, 5) == "differ"  # excess 4x the paper's (the ratio 1.07 hid it)
    assert compare.judge(band, math.inf, 1.1, 3, 5) == "differ"
    assert compare.judge(col("report"), 1.0, 2.0, 3, 5) == "report"
    assert compare.judge(col("tolerance", abs=1), math.nan, 2.0, 3, 5) == "n/a"


def test_tolerance_scales_with_the_papers_replicate_sd() -> None:
    tol = col("tolerance", abs=0.02, sd=3)
    # SD 0.05 over 5 paper replicates, 3 of ours: 3 * 0.05 * sqrt(1/3 + 1/5) = 0.1095
    assert compare.tolerance(tol.criterion, 0.05, 3, 5) == pytest.approx(0.1095, abs=1e-4)
    assert compare.judge(tol, 9.0, 8.9, 3, 5, paper_sd=0.05) == "agree"
    assert compare.judge(tol, 9.02, 8.9, 3, 5, paper_sd=0.05) == "differ"
    assert compare.judge(tol, 8.915, 8.9, 3, 5, paper_sd=0.001) == "agree"  # the floor
    assert compare.judge(tol, 8.93, 8.9, 3, 5, paper_sd=0.001) == "differ"
    assert compare.judge(tol, 8.915, 8.9, 1, 1) == "agree"  # one paper replicate: floor only
    j = compare.judge_cell(tol, 9.02, 8.9, 3, 5, paper_sd=0.05)
    assert "0.12 > 0.11" in j.rule and "SD 0.05" in j.rule


def test_replicate_counts_use_an_exact_test_and_say_not_testable() -> None:
    rep = col("replicates", stat="n_significant")
    assert compare.judge(rep, 3, 0, 3, 5) == "differ"  # 3/3 vs 0/5: Fisher p = 1/56
    assert compare.judge(rep, 0, 5, 3, 5) == "differ"
    assert compare.judge(rep, 3, 3, 3, 5) == "not testable"  # 3/5 in the paper: no count of 3 differs at 0.05
    assert compare.judge(rep, 2, 5, 3, 5) == "agree"
    assert compare.judge(rep, 0, 5, 5, 5) == "differ"
    # one replicate against five: no count of ours could differ, so never "agree" (the old rule said ✓)
    assert compare.judge(rep, 0, 5, 1, 5) == "not testable"
    assert compare.judge(rep, 1, 0, 1, 5) == "not testable"
    assert "Fisher" in compare.judge_cell(rep, 3, 0, 3, 5).rule


def _judged_columns(table: plan.TableSpec) -> list[plan.Column]:
    return [c for c in table.columns if c.criterion["kind"] != "report"]


@pytest.mark.parametrize("n_ours", [1, 3, 5])
def test_every_rule_of_every_spec_can_differ_on_every_reference_row(n_ours: int) -> None:
    """0 vacuous cells: for every judged column and every reference network, a contradicting value of ours
    is judged "differ" and the paper's own value "agree"; where no value could differ the cell says
    "not testable" (never "agree")."""
    n_cells = n_untestable = 0
    for table in plan.load_tables():
        paper = paper_values.load_paper_values(table.paper)
        for (tag, _pruned, _k), grp in paper.groupby(["tag", "pruned", "k"]):
            for c in _judged_columns(table):
                if c.key not in grp or grp[c.key].isna().all():
                    continue
                pap = compare.aggregate(grp[c.key], c)
                sd = compare.replicate_sd(grp[c.key]) if c.stat == "median" else math.nan
                bad = compare.contradiction(c, pap, n_ours, len(grp), sd)
                n_cells += 1
                if bad is None:
                    n_untestable += 1
                    assert compare.judge(c, pap, pap, n_ours, len(grp), sd) == "not testable", (table.name, tag, c.name)
                    continue
                assert compare.judge(c, bad, pap, n_ours, len(grp), sd) == "differ", (table.name, tag, c.name, bad)
                if c.stat == "median" or n_ours == len(grp):
                    assert compare.judge(c, pap, pap, n_ours, len(grp), sd) == "agree", (table.name, tag, c.name)
    assert n_cells > 100
    if n_ours >= 3:
        assert n_untestable < n_cells / 4  # the count rule is testable from 3 replicates against 5


def test_misspelt_spec_field_is_rejected_when_loaded() -> None:
    good = yaml.safe_load((plan.SPEC_DIR / "clusterability.yaml").read_text())
    bad = dict(good, columns=[*good["columns"], {"key": "ncutt", "criterion": {"kind": "tolerance", "abs": 0.1}}])
    with pytest.raises(ModularityError, match="'ncutt' is not a result field of analysis 'cluster'") as exc:
        plan.parse_table_spec(bad, "clusterability.yaml")
    assert "\n" not in str(exc.value) and "ncut" in str(exc.value).split("mean")[-1]
    wrong_analysis = dict(good, columns=[{"key": "combined_p_means", "criterion": {"kind": "report"}}])
    with pytest.raises(ModularityError, match="not a result field"):
        plan.parse_table_spec(wrong_analysis)
    no_floor = dict(good, columns=[{"key": "ncut", "criterion": {"kind": "tolerance", "sd": 3}}])
    with pytest.raises(ModularityError, match="needs abs"):
        plan.parse_table_spec(no_floor)
    typo = dict(good, columns=[{"key": "ncut", "criterion": {"kind": "tolerance", "abs": 0.1, "sds": 3}}])
    with pytest.raises(ModularityError, match="unknown criterion parameter"):
        plan.parse_table_spec(typo)


def test_registry_lists_the_fields_the_stages_write() -> None:
    """The analysis registry's result fields are the value columns of the stored smoke results (plus the
    fields only the regression nets write, which the smoke profile does not train)."""
    from benchmark import analyses

    assert tuple(a.name for a in analyses.ANALYSES) == plan.ANALYSES
    for a in analyses.ANALYSES:
        stored = compare.read_expected(reproduce.EXPECTED_SMOKE / f"{a.stage}.csv")
        ignored = set(compare.load_regression_rules().ignore)  # written by the stages, not checked
        assert set(a.only_some) <= set(a.fields), a.name
        assert set(a.fields) - ignored - set(a.only_some) == set(stored.columns) - set(compare.KEYS), a.name
        assert (paper_values.EXPECTED_PAPER / f"{a.paper}.csv").is_file()


def test_aggregate_median_and_count() -> None:
    values = pd.Series([0.0196, 0.0196, 0.06, 1.0])
    assert compare.aggregate(values, col("report")) == pytest.approx(0.0398)
    assert compare.aggregate(values, plan.Column("x", "x", {"kind": "report"}, stat="n_significant", alpha=0.05)) == 2


def fake_results(tag: str = "MNIST", pruned: bool = True, k: int = 12, seeds: tuple[int, ...] = (0, 1, 2),
                 ncut: float = 8.9, **values: float) -> pd.DataFrame:
    base = {"ncut": ncut, "null_mean": 9.19, "null_stdev": 0.03, "z_score": -10.0, "percentile": 1 / 51,
            "test_acc": 0.9837, "train_acc": 1.0, "n_shuffles": 50}
    base.update(values)
    return pd.DataFrame([{"analysis": "cluster", "tag": tag, "family": "mlp", "seed": s, "pruned": pruned, "k": k,
                          **base, "ncut": base["ncut"] + 0.001 * s} for s in seeds])


def test_compare_table_rows_and_verdicts() -> None:
    table = {t.name: t for t in plan.load_tables()}["clusterability"]
    rows = [plan.Row("clusterability", "mlp", "MNIST", True, 12, (0, 1, 2)),
            plan.Row("clusterability", "mlp", "MNIST", True, 8, (0, 1, 2)),
            plan.Row("clusterability", "mlp", "FASHION", True, 12, (0, 1, 2)),
            plan.Row("clusterability", "vgg", "CNN-VGG-CIFAR10", True, 12, (0,), skip="no CIFAR-10")]
    res = pd.concat([fake_results(), fake_results(k=8)], ignore_index=True)
    out = compare.compare_table(table, rows, res, paper_values.load_paper_values("clusterability"),
                                {("FASHION", True, 12): "stage failed: boom"})
    verdicts = dict(zip(zip(out.rows.tag, out.rows.k, strict=True), out.rows.verdict, strict=True))
    assert verdicts[("MNIST", 12)] == "agree", out.long[out.long.k == 12][["column", "verdict", "rule"]]
    assert verdicts[("MNIST", 8)] == "no paper value"
    assert verdicts[("FASHION", 12)] == "not run"
    assert verdicts[("CNN-VGG-CIFAR10", 12)] == "skipped"
    ncut = out.long[(out.long.column == "ncut") & (out.long.k == 12)].iloc[0]
    assert ncut.ours == pytest.approx(8.901) and ncut.paper == pytest.approx(8.8746, abs=1e-4)
    assert ncut.paper_sd == pytest.approx(0.049296, abs=1e-5)
    n_sig = out.long[(out.long.column == "n_sig_percentile") & (out.long.k == 12)].iloc[0]
    assert (n_sig.ours, n_sig.paper, n_sig.verdict) == (3, 5, "agree")
    # Moving the n-cut by 0.5 makes the row differ, naming the column.
    moved = compare.compare_table(table, rows[:1], fake_results(ncut=9.4), paper_values.load_paper_values("clusterability"))
    assert moved.rows.verdict.tolist() == ["differ"] and moved.rows.differing.tolist() == ["n-cut"]


def test_poly_rows_compare_the_fit_by_test_loss_and_classifiers_leave_it_out() -> None:
    """POLY unpruned, k = 12: the paper's test_loss (MSE plus regulariser) over 5 replicates 0.1559, 0.0150,
    0.0112, 0.0448, 0.0050: median 0.0150, SD 0.0631, so 3 of ours agree within 3 x 0.0631 x sqrt(1/3 + 1/5)
    = 0.138 (hand-computed; the paper's own spread is that wide)."""
    table = {t.name: t for t in plan.load_tables()}["clusterability"]
    paper = paper_values.load_paper_values("clusterability")
    row = plan.Row("clusterability", "mlp", "POLY", False, 12, (0, 1, 2))
    poly = {"tag": "POLY", "pruned": False, "ncut": 9.80, "null_mean": 10.19, "null_stdev": 0.015, "z_score": -26.0,
            "test_acc": math.nan, "train_acc": math.nan}
    near = compare.compare_table(table, [row], fake_results(**poly, test_loss=0.10), paper)
    cell = near.long[near.long.column == "test_loss"].iloc[0]
    assert cell.paper == pytest.approx(0.0150, abs=1e-4) and cell.paper_sd == pytest.approx(0.0631, abs=1e-4)
    assert cell.verdict == "agree" and "0.138" in cell.rule, cell.rule
    assert near.rows.verdict.tolist() == ["agree"]
    far = compare.compare_table(table, [row], fake_results(**poly, test_loss=0.16), paper)  # 0.145 > 0.138
    assert far.rows.verdict.tolist() == ["differ"] and far.rows.differing.tolist() == ["test loss"]
    # A classifier records no loss: its test-loss cell is n/a, out of the verdict (the paper has a cross-entropy).
    mnist = compare.compare_table(table, [plan.Row("clusterability", "mlp", "MNIST", True, 12, (0, 1, 2))],
                                  fake_results(), paper)
    assert mnist.long[mnist.long.column == "test_loss"].verdict.tolist() == ["n/a"]
    assert mnist.rows.verdict.tolist() == ["agree"]
    # dvc metrics show: POLY's loss is a headline number; the classifier's missing one is left out, not null
    k12 = {**reproduce.metrics_of([near])["clusterability"]["k12"], **reproduce.metrics_of([mnist])["clusterability"]["k12"]}
    assert k12["POLY.unpruned.test_loss"] == pytest.approx(0.10) and "MNIST.pruned.ncut" in k12
    assert "MNIST.pruned.test_loss" not in k12


def test_leave_one_seed_out_says_which_verdicts_one_replicate_decides() -> None:
    """MNIST pruned, k = 12: the paper's n-cut 8.8746 (SD 0.0493, 5 replicates), so 3 of ours are within
    3 x 0.0493 x sqrt(1/3 + 1/5) = 0.108 and 2 within 0.124 (hand-computed)."""
    table = {t.name: t for t in plan.load_tables()}["clusterability"]
    paper = paper_values.load_paper_values("clusterability")
    row = plan.Row("clusterability", "mlp", "MNIST", True, 12, (0, 1, 2))
    steady = compare.compare_table(table, [row], fake_results(), paper).rows.iloc[0]
    assert (steady.verdict, steady.stability) == ("agree", "stable (3 of 3)")
    res = fake_results()
    res.loc[res.seed == 2, "ncut"] = 9.2  # median 8.901 agrees; without seed 0 or 1 the median is ~9.05
    out = compare.compare_table(table, [row], res, paper)
    r = out.rows.iloc[0]
    assert r.verdict == "agree"
    assert r.stability == "fragile: without seed 0: differ (n-cut); without seed 1: differ (n-cut)"
    assert "fragile (MNIST (pruned, k=12))" in report.stability_line(out)
    assert any("without seed 0: differ (n-cut)" in line for line in report.stability_lines([out]))
    assert report.wide_table(out, 12)["one seed left out"].iloc[0].startswith("fragile")
    two = compare.compare_table(table, [plan.Row("clusterability", "mlp", "MNIST", True, 12, (0, 1))],
                                fake_results(seeds=(0, 1)), paper)
    assert two.rows.stability.tolist() == [""] and report.stability_lines([two]) == []  # too few to leave one out


def test_a_row_groups_explanation_is_the_reason_of_a_differ_only() -> None:
    table = {t.name: t for t in plan.load_tables()}["clusterability"]
    paper = paper_values.load_paper_values("clusterability")
    row = plan.Row("clusterability", "mlp", "MNIST", True, 12, (0, 1, 2), explain="because of X")
    moved = compare.compare_table(table, [row], fake_results(ncut=9.4), paper)
    assert moved.rows.verdict.tolist() == ["differ"] and moved.rows.reason.tolist() == ["because of X"]
    cov = compare.coverage([moved], {"clusterability": paper})
    line = cov[(cov.tag == "MNIST") & cov.pruned & (cov.k == 12)].iloc[0]
    assert (line["class"], line["why"]) == ("differ", "n-cut: because of X")
    same = compare.compare_table(table, [row], fake_results(), paper)
    assert same.rows.verdict.tolist() == ["agree"] and same.rows.reason.tolist() == [""]


def test_the_input_coherence_lucid_rows_carry_their_explanation() -> None:
    table = {t.name: t for t in plan.load_tables()}["input_coherence"]
    lucid = [g for g in table.rows if "MNIST+LUCID" in g.tags]
    assert len(lucid) == 1 and "§9.15" in lucid[0].explain
    good = yaml.safe_load((plan.SPEC_DIR / "input_coherence.yaml").read_text())
    bad = dict(good, rows=[{**good["rows"][0], "explian": "typo"}])
    with pytest.raises(ModularityError, match=r"unknown keys \['explian'\]"):
        plan.parse_table_spec(bad)


def test_a_contradicting_row_differs_on_every_judged_column() -> None:
    """Each judged clusterability column alone, moved to its contradicting value, makes the row differ."""
    table = {t.name: t for t in plan.load_tables()}["clusterability"]
    paper = paper_values.load_paper_values("clusterability")
    row = plan.Row("clusterability", "mlp", "MNIST", True, 12, (0, 1, 2))
    prow = compare.paper_rows(table, paper, row)
    for c in _judged_columns(table):
        bad = compare.contradiction(c, compare.aggregate(prow[c.key], c), 3, 5, compare.replicate_sd(prow[c.key]))
        assert bad is not None, c.name
        if c.stat == "n_significant":  # a count of significant replicates: make `bad` of them significant
            res = fake_results(percentile=1.0)
            res.loc[: int(bad) - 1, "percentile"] = 1 / 51
        else:
            res = fake_results(**{c.key: bad})
        out = compare.compare_table(table, [row], res, paper)
        assert out.rows.verdict.tolist() == ["differ"] and out.rows.differing.tolist() == [c.label], c.name


def test_percentiles_from_another_number_of_shuffles_are_not_comparable() -> None:
    table = {t.name: t for t in plan.load_tables()}["clusterability"]
    row = plan.Row("clusterability", "mlp", "MNIST", True, 12, (0, 1, 2))
    out = compare.compare_table(table, [row], fake_results(n_shuffles=20, percentile=1 / 21),
                                paper_values.load_paper_values("clusterability"))
    cell = out.long[out.long.column == "n_sig_percentile"].iloc[0]
    assert cell.verdict == "not comparable" and "n shuffles 20 (the paper: 50)" in cell.rule
    assert out.rows.verdict.tolist() == ["agree"] and "#p<.05" in out.rows.untestable.iloc[0]


def test_rows_that_are_not_like_for_like_say_why_and_stay_out_of_the_counts() -> None:
    profile = plan.load_profile("default")
    tables = {t.name: t for t in plan.load_tables()}
    cl, ic = tables["clusterability"], tables["input_coherence"]
    paper = paper_values.load_paper_values("clusterability")
    mlp = plan.Row("clusterability", "mlp", "MNIST", True, 12, (0, 1, 2))
    cnn = plan.Row("clusterability", "cnn", "CNN-MNIST", True, 12, (0,))
    assert compare.like_for_like(cl, mlp, profile, pd.DataFrame(), compare.paper_rows(cl, paper, mlp)) == []
    short = plan.load_profile("cnn-short")  # the small CNNs' short recipe
    why = compare.like_for_like(cl, cnn, short, pd.DataFrame(), compare.paper_rows(cl, paper, cnn))
    assert any(w.startswith("recipe:") for w in why) and any("matrix 1-norm" in w for w in why)
    lucid = paper_values.load_paper_values("input_coherence")
    mn = plan.Row("input_coherence", "mlp", "MNIST", True, 12, (0, 1, 2))
    why = compare.like_for_like(ic, mn, profile, pd.DataFrame(), compare.paper_rows(ic, lucid, mn))
    assert any("MNIST+LUCID" in w for w in why)
    res = fake_results(tag="CNN-MNIST", seeds=(0,), ncut=20.0).assign(family="cnn")
    out = compare.compare_table(cl, [cnn], res, paper, profile=short)
    r = out.rows.iloc[0]
    assert (r.verdict, r.comparable, r.cells_verdict) == ("not comparable", False, "differ") and "recipe" in r.why
    assert report.counts(out)["differ"] == 0 and report.counts(out)["not comparable"] == 1


def test_p_values_are_corrected_across_the_networks_of_a_table() -> None:
    from modularity.stats import correct

    table = {t.name: t for t in plan.load_tables()}["importance"]
    long = pd.DataFrame({"column": ["combined_p_means"] * 3 + ["effect_means"], "k": [12] * 4,
                         "ours": [0.01, 0.04, 0.5, 1.1], "paper": [0.02, math.nan, 0.3, 1.0],
                         "ours_corrected": math.nan, "paper_corrected": math.nan})
    out = compare.correct_across_networks(table, long)
    np.testing.assert_allclose(out.ours_corrected[:3], correct([0.01, 0.04, 0.5], "holm")[1])
    np.testing.assert_allclose(out.paper_corrected[[0, 2]], correct([0.02, 0.3], "holm")[1])
    assert math.isnan(out.paper_corrected[1]) and math.isnan(out.ours_corrected[3])


def test_coverage_classifies_every_reference_row() -> None:
    profile = plan.load_profile("default")
    p = plan.plan(profile, plan.load_tables())
    cmps = [compare.compare_table(t, [r for r in p.rows if r.table == t.name], pd.DataFrame(),
                                  paper_values.load_paper_values(t.paper), profile=profile) for t in p.tables]
    papers = {t.paper: paper_values.load_paper_values(t.paper) for t in p.tables}
    cov = compare.coverage(cmps, papers)
    # 75 + 6 (ImageNet, docs/methods.md §8.2) clusterability, 13 lesion rows in two tables, 9 Lucid rows
    assert len(cov) == 81 + 2 * 13 + 9
    assert len(cov.drop_duplicates(["reference_tag", "pruned", "k", "source"])) == 97 + 6
    assert set(cov["class"]) <= set(compare.COVERAGE) and (cov["why"] != "").all()
    halves = cov[cov.tag.str.startswith("HALVES")]
    assert len(halves) == 8 and (halves["class"] == "not run").all()  # implemented, not in the default profile
    small = cov[cov.tag.str.startswith("SMALL-MNIST")]
    assert len(small) == 4 and (small["class"] == "not run").all() and (small["n_paper"] == 10).all()
    assert small["why"].str.contains("not in the default profile").all()  # implemented, runnable in the paper profile
    assert (cov[cov.tag == "MNIST+L1REG"]["class"] == "not run").all()
    lucid = cov[cov.reference_tag.isin(["MNIST+LUCID", "MNIST+DROPOUT+LUCID"])]
    assert len(lucid) == 2 and (lucid["tag"] == lucid["reference_tag"]).all()  # our own +LUCID nets (default profile)
    poly = cov[cov.tag.str.startswith("POLY")]  # implemented (modularity.poly), not in the default profile
    assert len(poly) == 5 and (poly["class"] == "not run").all() and poly["why"].str.contains("not in the default").all()


def test_report_rejudges_the_committed_tables(tmp_path: Path) -> None:
    """``python -m benchmark.report``: the committed default tables, re-judged; claims first, every cell testable."""
    tables = Path(__file__).resolve().parents[1] / "paper" / "tables"
    assert report.main(["--profile", "default", "--from-tables", str(tables), "--out", str(tmp_path), "--no-figures"]) == 0
    summary = (tmp_path / "summary.md").read_text()
    head = summary.split("## Coverage")[0]
    for claim in ("**Clusterability**", "**Importance**", "**Output coherence**", "**Input coherence**"):
        assert claim in head
    cov = pd.read_csv(tmp_path / "tables" / "coverage.csv")
    assert len(cov) == 116
    assert "Output coherence and undefined lesion ranges" in summary
    assert "Verdicts that one seed decides" not in summary  # the committed tables hold no replicates to leave out
    for name in ("clusterability", "importance", "output_coherence", "input_coherence"):
        df = pd.read_csv(tmp_path / "tables" / f"{name}.csv")
        assert "rule" in df.columns and "comparable" in df.columns
        judged = df[df.verdict.isin(["agree", "differ"])]
        table = {t.name: t for t in plan.load_tables()}[name]
        cols = {c.name: c for c in table.columns}
        for _, e in judged.iterrows():  # 0 vacuous cells: each judged cell could have said "differ"
            assert compare.contradiction(cols[e.column], e.paper, int(e.n_ours), int(e.n_paper), e.paper_sd) is not None


# --------------------------------------------------------------------------------------------------
# Regression check


RULES = compare.RegressionRules(keys=("analysis", "tag", "seed"), ignore=(), digits=6, digits_by_column={})


def test_format_value_and_unit() -> None:
    assert compare.format_value(10.0225, 6) == "1.00225e+01"
    assert compare.last_digit_unit("1.00225e+01") == pytest.approx(1e-4)
    assert compare.last_digit_unit("4.40000e-14") == pytest.approx(1e-19)
    assert compare.format_value(3, 6) == "3" and compare.format_value(True, 6) == "True"
    assert compare.format_value(float("inf"), 6) == "inf" and compare.format_value(math.nan, 6) == "nan"


def bump(text: str, units: int) -> str:
    """``text`` changed by ``units`` in its last digit, written back with as many digits."""
    digits = len(text.lower().split("e")[0].replace("-", "").replace(".", ""))
    return compare.format_value(float(text) + units * compare.last_digit_unit(text), digits)


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12).filter(
    lambda x: x == 0 or abs(x) > 1e-200)


@settings(max_examples=300, deadline=None)
@given(value=finite, digits=st.integers(2, 8), units=st.sampled_from([-1, 1]))
def test_stored_value_changed_by_one_unit_in_last_digit_fails(value: float, digits: int, units: int) -> None:
    stored = compare.format_value(value, digits)
    assert compare.value_matches(value, stored, digits)
    changed = bump(stored, units)
    if changed != stored:  # (a bump can vanish only for 0 written as 0.0e+00 +/- a denormal unit)
        assert not compare.value_matches(value, changed, digits), (value, stored, changed)


@settings(max_examples=200, deadline=None)
@given(value=finite.filter(lambda x: abs(x) > 1e-100), digits=st.integers(3, 8))
def test_noise_below_the_stored_digits_passes(value: float, digits: int) -> None:
    stored = compare.format_value(value, digits)
    noisy = value * (1 + 1e-12)
    assert compare.value_matches(noisy, stored, digits)


def test_check_regression_reports_each_difference() -> None:
    res = pd.DataFrame({"analysis": ["cluster", "cluster"], "tag": ["MNIST", "CNN-MNIST"], "seed": [0, 0],
                        "ncut": [8.91234567, 10.5], "n_isolated": [3, 0], "effect": [float("inf"), 1.0]})
    expected = compare.format_expected(res, RULES).astype(str)
    assert compare.check_regression(res, expected, RULES) == []
    exp2 = expected.copy()
    exp2.loc[0, "ncut"] = bump(exp2.loc[0, "ncut"], 1)
    exp2.loc[1, "n_isolated"] = "1"
    problems = compare.check_regression(res, exp2, RULES)
    assert problems == ["cluster/CNN-MNIST/0: n_isolated = 0, expected 1",
                        "cluster/MNIST/0: ncut = 8.91235e+00, expected 8.91236e+00"]
    assert compare.check_regression(res.iloc[:1], expected, RULES) == [
        "missing result row {'analysis': 'cluster', 'tag': 'CNN-MNIST', 'seed': '0'}"]
    more = res.assign(extra=1.0)
    assert "new columns" in compare.check_regression(more, expected, RULES)[0]


def test_stored_expected_text_round_trips(tmp_path: Path) -> None:
    res = pd.DataFrame({"analysis": ["importance"], "tag": ["MNIST"], "seed": [0], "p": [4.397937084470599e-14]})
    path = tmp_path / "importance.csv"
    path.write_text(compare.expected_text(res, RULES))
    stored = compare.read_expected(path)
    assert stored.loc[0, "p"] == "4.39794e-14"
    assert compare.check_regression(res, stored, RULES) == []


def test_smoke_expected_values_fail_when_one_digit_changes() -> None:
    """The committed smoke expected values, each numeric cell bumped by one unit, fail the check."""
    rules = compare.load_regression_rules()
    files = sorted(reproduce.EXPECTED_SMOKE.glob("*.csv"))
    assert files, "benchmark/expected/smoke/ is empty: run make update-expected"
    for path in files:
        stored = compare.read_expected(path)
        # Rebuild results equal to the stored text, then bump one float cell per row.
        results = stored.map(_parse)
        assert compare.check_regression(results, stored, rules) == []
        float_cols = [c for c in stored.columns if c not in rules.keys and compare._is_float_text(stored.loc[0, c])]
        for c in float_cols[:5]:
            bumped = stored.copy()
            bumped.loc[0, c] = bump(stored.loc[0, c], 1)
            assert compare.check_regression(results, bumped, rules), (path.name, c)


def _parse(text: str) -> object:
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


# --------------------------------------------------------------------------------------------------
# Report and the runner with fake stages


def fake_stage(stage: plan.Stage, profile: plan.Profile, root: Path, calls: list[str]) -> None:
    """Writes what a real stage writes, with made-up values depending only on (tag, seed, pruned, k)."""
    calls.append(stage.name)
    out = reproduce.stage_output(stage, root)
    with stages.staged_dir(out) as tmp:
        if stage.kind == "train":
            (tmp / "pruned.pt").write_text("x")
            return
        header = {"analysis": stage.kind, "tag": stage.tag, "family": stage.family, "seed": stage.seed,
                  "pruned": stage.pruned}
        for k in stage.ks:
            base = 8.9 + 0.01 * stage.seed + 0.1 * stage.pruned + 0.001 * k
            values = {"ncut": base, "null_mean": base + 0.3, "null_stdev": 0.03, "z_score": -10.0,
                      "percentile": 1 / 5, "test_acc": 0.98, "n_subclusters": 20 + k, "chi2_p_means": 1e-5,
                      "combined_p_means": 1e-4, "effect_means": 1.05, "chi2_p_ranges": 0.3,
                      "combined_p_ranges": 0.6, "effect_ranges": float("inf"), "chi2_p_loss": 0.5,
                      "combined_p_loss": 0.5, "effect_loss": 1.1, "chi2_p_entropy": 0.4,
                      "combined_p_entropy": 0.4, "effect_entropy": 2.0}
            stages.write_result(tmp, k, header, values)


@pytest.fixture()
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(reproduce, "run_in_process", lambda s, p, r: fake_stage(s, p, r, calls))
    monkeypatch.setattr(reproduce, "stage_reason", lambda s, cache: None)
    return calls


def test_runner_writes_report_resumes_and_is_deterministic(tmp_path: Path, fake_pipeline: list[str]) -> None:
    status = reproduce.reproduce("smoke", root=tmp_path / "run", report_dir=tmp_path / "report", use_dvc=False,
                                 check_expected=False, progress=False)
    assert status == 0
    n_stages = len(plan.plan(plan.load_profile("smoke"), plan.load_tables()).stages)
    assert len(fake_pipeline) == n_stages
    rep = tmp_path / "report"
    for name in plan.TABLE_ORDER:
        assert (rep / f"{name}.md").is_file()
        assert (rep / "tables" / f"{name}.csv").is_file() and (rep / "tables" / f"{name}.tex").is_file()
    assert (rep / "figures" / "clusterability_k12.png").is_file()
    summary = (rep / "summary.md").read_text()
    assert "## MLP rows at k = 12" in summary and "| MNIST " in summary
    assert "family vgg is not in the smoke profile" in summary
    first = {p.name: p.read_bytes() for p in sorted(rep.rglob("*")) if p.suffix in (".md", ".csv", ".tex")}
    # A second run finds every stage done and rewrites identical tables.
    reproduce.reproduce("smoke", root=tmp_path / "run", report_dir=rep, use_dvc=False, check_expected=False,
                        progress=False)
    assert len(fake_pipeline) == n_stages
    second = {p.name: p.read_bytes() for p in sorted(rep.rglob("*")) if p.suffix in (".md", ".csv", ".tex")}
    assert first == second
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(results.analysis) == {"cluster", "importance", "coherence"}


def test_runner_resumes_after_an_interruption(tmp_path: Path, fake_pipeline: list[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real = reproduce.run_in_process
    seen: list[str] = []

    def interrupting(stage: plan.Stage, profile: plan.Profile, root: Path) -> None:
        if len(seen) == 3:
            raise KeyboardInterrupt
        seen.append(stage.name)
        real(stage, profile, root)

    monkeypatch.setattr(reproduce, "run_in_process", interrupting)
    with pytest.raises(KeyboardInterrupt):
        reproduce.reproduce("smoke", root=tmp_path, report_dir=tmp_path / "r", use_dvc=False, check_expected=False,
                            progress=False)
    monkeypatch.setattr(reproduce, "run_in_process", real)
    fake_pipeline.clear()
    reproduce.reproduce("smoke", root=tmp_path, report_dir=tmp_path / "r", use_dvc=False, check_expected=False,
                        progress=False)
    assert not set(fake_pipeline) & set(seen)  # the three finished stages were not redone
    assert len(fake_pipeline) + len(seen) == len(plan.plan(plan.load_profile("smoke"), plan.load_tables()).stages)


def test_a_changed_parameter_reruns_only_its_stages(tmp_path: Path, fake_pipeline: list[str]) -> None:
    params = plan.load_params()
    reproduce.reproduce("smoke", root=tmp_path, report_dir=tmp_path / "r", use_dvc=False, check_expected=False,
                        progress=False)
    fake_pipeline.clear()
    params["profiles"]["smoke"]["cluster"]["default"]["n_shuffles"] = 5
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    reproduce.reproduce("smoke", root=tmp_path, report_dir=tmp_path / "r", use_dvc=False, check_expected=False,
                        progress=False, params_path=path)
    assert fake_pipeline and all(n.startswith("cluster@") for n in fake_pipeline)


def test_failed_and_unavailable_stages_become_not_run_rows(tmp_path: Path, fake_pipeline: list[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reproduce, "stage_reason",
                        lambda s, cache: "dataset mnist unavailable: gone" if s.tag == "CNN-MNIST" else None)
    reproduce.reproduce("smoke", root=tmp_path, report_dir=tmp_path / "r", use_dvc=False, check_expected=False,
                        progress=False)
    rows = pd.read_csv(tmp_path / "r" / "tables" / "clusterability.csv")
    cnn = rows[(rows.tag == "CNN-MNIST") & (rows.k == 12)]
    assert set(cnn.row_verdict) == {"not run"} and set(cnn.reason) == {"dataset mnist unavailable: gone"}
    assert not any("CNN-MNIST" in n for n in fake_pipeline)


def test_regression_check_of_the_runner(tmp_path: Path, fake_pipeline: list[str]) -> None:
    expected = tmp_path / "expected"
    for tag in ("MNIST", "CNN-MNIST"):  # the fake stages read no network: placeholders of the files a train stage writes
        (expected / "networks" / tag / "seed0").mkdir(parents=True)
        for name in ("unpruned.pt", "unpruned.json", "pruned.pt", "pruned.json"):
            (expected / "networks" / tag / "seed0" / name).write_text("{}")
    kw = dict(root=tmp_path / "run", report_dir=tmp_path / "r", use_dvc=False, progress=False, expected_dir=expected,
              networks=expected / "networks")
    assert reproduce.reproduce("smoke", check_expected=True, **kw) == 1  # nothing stored yet
    assert reproduce.reproduce("smoke", update_expected=True, **kw) == 0
    assert sorted(p.name for p in expected.iterdir()) == ["cluster.csv", "coherence.csv", "importance.csv", "networks"]
    assert reproduce.reproduce("smoke", check_expected=True, **kw) == 0
    text = (expected / "cluster.csv").read_text().splitlines()
    header, first = text[0].split(","), text[1].split(",")
    i = header.index("ncut")
    first[i] = bump(first[i], 1)
    (expected / "cluster.csv").write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
    assert reproduce.reproduce("smoke", check_expected=True, **kw) == 1


def test_report_formats() -> None:
    c = plan.Column("combined_p_means", "Fisher p", {"kind": "report"})
    assert report.fmt_number(7.73e-6, c) == "7.73e-06"
    assert report.fmt_number(0.0517, c) == "0.0517"
    n = plan.Column("combined_p_means", "#", {"kind": "replicates"}, stat="n_significant")
    assert report.fmt_number(3.0, n, 5) == "3/5"
    assert report.fmt_number(float("inf")) == "inf" and report.fmt_number(math.nan) == "–"
    assert report.cell(8.91, 8.8746, "agree", plan.Column("ncut", "n-cut", {"kind": "tolerance"}), 3, 5) == \
        "8.91 (8.875) ✓"


def test_stage_cli_rejects_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert stages.main(["cluster", "--profile", "smoke", "--tag", "MNIST", "--seed", "0"]) == 2
    assert "needs at least one k" in capsys.readouterr().err
    assert reproduce.main(["--profile", "nope"]) == 2
    assert "unknown profile" in capsys.readouterr().err


def test_flat_values_and_json_round_trip(tmp_path: Path) -> None:
    vals = stages.flat_values({"a": np.float64(1.5), "b": np.int64(3), "ci": (0.1, 0.2), "arr": np.arange(3),
                               "s": "holm", "inf": float("inf"), "flag": np.bool_(True)})
    assert vals == {"a": 1.5, "b": 3, "ci_low": 0.1, "ci_high": 0.2, "s": "holm", "inf": float("inf"), "flag": True}
    stages.write_result(tmp_path, 12, {"analysis": "importance"}, vals)
    doc = stages.read_result(tmp_path / "k12.json")
    assert doc["values"]["inf"] == float("inf") and doc["k"] == 12
    assert "Infinity" not in (tmp_path / "k12.json").read_text()  # strict JSON: no Infinity literal


def test_every_cited_methods_section_exists_in_docs_methods() -> None:
    """Every "docs/methods.md N.M" / "methods §N.M" the code and docs cite is a section of docs/methods.md."""
    import re

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "docs" / "methods.md").read_text()
    have = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[ .]", text, flags=re.M))
    nine = text.split("\n## 9.", 1)[1]
    have |= {f"9.{n}" for n in re.findall(r"^(\d+)\. ", nine, flags=re.M)}
    cite = re.compile(r"(?:METHODS|methods)(?:\.md)? ?§?((?:\d+(?:\.\d+)*)(?:(?:[-/,]| and |, §?| / )+\d+(?:\.\d+)*)*)")
    cited: set[str] = set()
    for folder in ("modularity", "benchmark", "tests", "docs"):
        for path in (repo / folder).rglob("*"):
            if path.suffix in (".py", ".md", ".yaml") and path.is_file():
                for group in cite.findall(path.read_text(errors="ignore")):
                    cited |= set(re.findall(r"\d+(?:\.\d+)*", group))
    cited = {c for c in cited if not c.startswith("0") and float(c.split(".")[0]) <= 9}
    assert len(cited) > 30
    assert sorted(cited - have) == []


def test_reference_settings_are_options_the_stages_read() -> None:
    """Every like-for-like setting marked as an option is read from the profile by the stages (or the graph)."""
    import inspect

    from benchmark import analyses

    source = inspect.getsource(stages)
    for a in analyses.ANALYSES:
        for s in a.reference:
            if s.section == "graph":
                assert s.key in plan.load_profile("default").graph, s.key
            elif s.option:
                assert f'"{s.key}"' in source, (a.name, s.key)
            else:
                assert f'"{s.key}"' not in source, f"{s.key} is an option now: set option=True"


def test_lucid_networks_see_the_references_scrambled_inputs() -> None:
    """+LUCID tags: 3-channel inputs where channel c at column j is the original column (3j + c) mod 28."""
    from modularity.data import DERIVED, base_dataset, lucid_scrambled, replicate_channels
    from modularity.models import build_model, tag_spec

    x = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 1, 28, 28) % 251
    y = lucid_scrambled(x.astype(np.uint8))
    j = np.arange(28)
    for c in range(3):
        np.testing.assert_array_equal(y[:, c][:, :, j], x[:, 0][:, :, (3 * j + c) % 28])
    np.testing.assert_array_equal(replicate_channels(x)[:, 2], x[:, 0])
    assert base_dataset("mnist-lucid") == "mnist" and {"mnist-lucid", "mnist-lucid-replicated"} <= set(DERIVED)
    spec = tag_spec("MNIST+LUCID")
    assert (spec.dataset, spec.epochs, spec.pruning_epochs, spec.paper) == ("mnist-lucid", 30, 20, True)
    assert build_model("MNIST+DROPOUT+LUCID").in_features == 2352
    assert tag_spec("CNN-MNIST+LUCID-REPLICATED").dataset == "mnist-lucid-replicated"


def test_lucid_rows_compare_like_networks() -> None:
    """MNIST+LUCID is compared with the paper's MNIST+LUCID (comparable network); MNIST with it too, but not like for like."""
    profile = plan.load_profile("default")
    ic = {t.name: t for t in plan.load_tables()}["input_coherence"]
    lucid = paper_values.load_paper_values("input_coherence")
    ours = plan.Row("input_coherence", "mlp", "MNIST+LUCID", True, 12, (0, 1, 2))
    plain = plan.Row("input_coherence", "mlp", "MNIST", True, 12, (0, 1, 2))
    assert set(compare.paper_rows(ic, lucid, ours)["reference_tag"]) == {"MNIST+LUCID"}
    assert set(compare.paper_rows(ic, lucid, plain)["reference_tag"]) == {"MNIST+LUCID"}
    why = compare.like_for_like(ic, ours, profile, pd.DataFrame(), compare.paper_rows(ic, lucid, ours))
    assert not any(w.startswith("network:") for w in why)
    assert any(w.startswith("network:") for w in compare.like_for_like(ic, plain, profile, pd.DataFrame(),
                                                                        compare.paper_rows(ic, lucid, plain)))
    assert dvcgen.dataset_dep("MNIST+LUCID") == "data/datasets/mnist"


def test_two_image_datasets_follow_the_references_construction() -> None:
    """HALVES: two half-width images side by side; STACKED: two channels; labels (y1 + y2) mod 10 or y_i."""
    from modularity.data import DERIVED
    from modularity.models import build_model, tag_spec

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (50, 1, 28, 28), dtype=np.uint8), "y_train": rng.integers(0, 10, 50),
              "x_test": rng.integers(0, 256, (20, 1, 28, 28), dtype=np.uint8), "y_test": rng.integers(0, 10, 20)}
    for name in ("halves-mnist", "halves-same-mnist", "stacked-mnist", "stacked-same-mnist"):
        base, make = DERIVED[name]
        out = make(arrays)
        assert base == "mnist" and out["x_test"].dtype == np.uint8 and len(out["y_test"]) == 20
        x, y = out["x_train"], out["y_train"]
        if name.startswith("stacked"):
            assert x.shape == (50, 2, 28, 28)
            first = [int(np.flatnonzero((arrays["x_train"][:, 0] == x[i, 0]).all(axis=(1, 2)))[0]) for i in range(50)]
            second = [int(np.flatnonzero((arrays["x_train"][:, 0] == x[i, 1]).all(axis=(1, 2)))[0]) for i in range(50)]
            ya = arrays["y_train"]
            if "same" in name:
                assert first == list(range(50)) and (ya[second] == ya).all() and (y == ya).all()
            else:
                assert (y == (ya[first] + ya[second]) % 10).all()
        else:
            assert x.shape == (50, 1, 28, 28) and (x.reshape(50, -1).max(1) == 255).all()
        np.testing.assert_array_equal(make(arrays)["x_test"], out["x_test"])  # seeded
    assert build_model("CNN-STACKED-SAME-FASHION").in_channels == 2
    assert tag_spec("HALVES-MNIST").family == "mlp" and build_model("HALVES-MNIST").in_features == 784
