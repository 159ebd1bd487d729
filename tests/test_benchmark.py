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
    """Medians of the converted tables equal METHODS.md 8.2 / 8.3 (hand-copied from there)."""
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
    assert mlp.pruned == (True,) and set(mlp.k) == {8, 12, 18}  # METHODS 5.1: pruned MLPs
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
    assert "family vgg is not in the smoke profile" in reasons
    for s in p.stages:  # every analysis waits for its training
        if s.kind != "train":
            assert s.upstream == (f"train@smoke-{plan.slug(s.tag)}-s{s.seed}",)


def test_default_profile_skips_what_this_machine_cannot_do() -> None:
    p = plan.plan(plan.load_profile("default"), plan.load_tables())
    assert all(r.skip for r in p.rows if r.family in ("vgg", "imagenet"))
    assert not any(r.skip for r in p.rows if r.family == "mlp" and r.k == 12)  # every MLP row at k=12 runs
    budget = [r for r in p.rows if r.table == "input_coherence" and r.family == "mlp" and r.k == 8]
    assert budget and all("time budget" in r.skip for r in budget)
    assert {s.family for s in p.stages} == {"mlp", "cnn"}
    mlp_seeds = {s.seed for s in p.stages if s.family == "mlp"}
    assert len(mlp_seeds) >= 3


def test_stage_names_are_valid_dvc_names() -> None:
    from dvc.stage.utils import is_valid_name

    for name in ("smoke", "default", "paper"):
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
    assert grid["train"]["default-CNN-MNIST-s0"]["dataset"] == "data/datasets/mnist"


# --------------------------------------------------------------------------------------------------
# Verdicts


def col(kind: str, stat: str = "median", **kw: float) -> plan.Column:
    return plan.Column(key="x", label="x", criterion={"kind": kind, **kw}, stat=stat)


def test_judge_by_criterion() -> None:
    assert compare.judge(col("tolerance", abs=0.25), 8.9, 8.87, 3, 5) == "agree"
    assert compare.judge(col("tolerance", abs=0.25), 9.2, 8.87, 3, 5) == "differ"
    assert compare.judge(col("sign"), -3.0, -9.7, 3, 5) == "agree"
    assert compare.judge(col("sign"), 2.0, -9.7, 3, 5) == "differ"
    band = col("band", factor=1.25, center=1.0)
    assert compare.judge(band, 1.10, 1.0254, 3, 5) == "agree"
    assert compare.judge(band, 0.98, 1.0254, 3, 5) == "differ"  # wrong side of 1
    assert compare.judge(band, 1.5, 1.1, 3, 5) == "differ"  # outside x1.25
    assert compare.judge(col("report"), 1.0, 2.0, 3, 5) == "report"
    assert compare.judge(col("tolerance", abs=1), math.nan, 2.0, 3, 5) == "n/a"


def test_replicate_counts_scale_to_our_number_of_replicates() -> None:
    rep = col("replicates", stat="n_significant", within=1)
    assert compare.judge(rep, 5, 5, 5, 5) == "agree"
    assert compare.judge(rep, 4, 5, 5, 5) == "agree"  # within one
    assert compare.judge(rep, 3, 5, 5, 5) == "differ"
    assert compare.judge(rep, 2, 5, 3, 5) == "agree"  # 5/5 scaled to 3 replicates = 3
    assert compare.judge(rep, 1, 5, 3, 5) == "differ"
    assert compare.judge(rep, 0, 0, 3, 5) == "agree"


def test_aggregate_median_and_count() -> None:
    values = pd.Series([0.0196, 0.0196, 0.06, 1.0])
    assert compare.aggregate(values, col("report")) == pytest.approx(0.0398)
    assert compare.aggregate(values, plan.Column("x", "x", {"kind": "report"}, stat="n_significant", alpha=0.05)) == 2


def fake_results(tag: str = "MNIST", pruned: bool = True, k: int = 12, seeds: tuple[int, ...] = (0, 1, 2),
                 ncut: float = 8.9) -> pd.DataFrame:
    return pd.DataFrame([{"analysis": "cluster", "tag": tag, "family": "mlp", "seed": s, "pruned": pruned, "k": k,
                          "ncut": ncut + 0.01 * s, "null_mean": 9.2, "null_stdev": 0.03, "z_score": -10.0,
                          "percentile": 1 / 21, "test_acc": 0.981, "train_acc": 1.0} for s in seeds])


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
    assert verdicts[("MNIST", 12)] == "agree"
    assert verdicts[("MNIST", 8)] == "no paper value"
    assert verdicts[("FASHION", 12)] == "not run"
    assert verdicts[("CNN-VGG-CIFAR10", 12)] == "skipped"
    ncut = out.long[(out.long.column == "ncut") & (out.long.k == 12)].iloc[0]
    assert ncut.ours == pytest.approx(8.91) and ncut.paper == pytest.approx(8.8746, abs=1e-4)
    n_sig = out.long[(out.long.column == "n_sig_percentile") & (out.long.k == 12)].iloc[0]
    assert (n_sig.ours, n_sig.paper, n_sig.verdict) == (3, 5, "agree")
    # Moving the n-cut by 0.5 makes the row differ, naming the column.
    moved = compare.compare_table(table, rows[:1], fake_results(ncut=9.4), paper_values.load_paper_values("clusterability"))
    assert moved.rows.verdict.tolist() == ["differ"] and moved.rows.differing.tolist() == ["n-cut"]


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
    kw = dict(root=tmp_path / "run", report_dir=tmp_path / "r", use_dvc=False, progress=False, expected_dir=expected)
    assert reproduce.reproduce("smoke", check_expected=True, **kw) == 1  # nothing stored yet
    assert reproduce.reproduce("smoke", update_expected=True, **kw) == 0
    assert sorted(p.name for p in expected.iterdir()) == ["cluster.csv", "coherence.csv", "importance.csv"]
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
