"""``make reproduce``: run a profile's pipeline, compare every table with the paper, write the report.

``python -m benchmark.reproduce --profile {smoke,default,paper} [--no-dvc] [--update-expected]``

1. Plan the profile (:mod:`benchmark.plan`) and regenerate ``dvc.yaml`` if the specs or the
   parameters changed (:mod:`benchmark.dvcgen`).
2. Check what this machine can run (datasets, pretrained weights); stages that cannot run, and their
   downstream rows, are reported as not run with the reason instead of failing the whole run.
3. Run the stages in order with a progress bar and an estimate of the time left: through DVC
   (``dvc repro --single-item <stage>``, so finished stages are skipped, an interrupted run resumes and
   ``dvc pull`` restores cached outputs) or, with ``--no-dvc`` (or when DVC is unavailable), in this
   process, skipping stages whose output folder is complete for the same parameters.
4. Collect the results (``<root>/results.csv``), compare every table with the paper
   (:mod:`benchmark.compare`) and write the report (:mod:`benchmark.report`) under the profile's
   ``report_dir``.
5. For the smoke profile: check the results against ``benchmark/expected/smoke/`` (exit status 1 on
   any difference), or rewrite them with ``--update-expected``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from modularity.errors import ModularityError
from modularity.utils import write_json_atomic, write_text_atomic

from . import compare as cmp_mod
from .paper_values import load_paper_values
from .plan import REPO, Plan, Profile, Stage, checkpoint_dir, load_params, load_profile, load_tables, plan, result_dir

EXPECTED_SMOKE = Path(__file__).parent / "expected" / "smoke"

# First guesses of a stage's seconds on this 2-core CPU, replaced by measured times as stages finish.
DEFAULT_SECONDS = {("train", "mlp"): 200, ("train", "cnn"): 300, ("cluster", "mlp"): 150, ("cluster", "cnn"): 30,
                   ("importance", "mlp"): 60, ("importance", "cnn"): 120, ("coherence", "mlp"): 60,
                   ("coherence", "cnn"): 120}


# --------------------------------------------------------------------------------------------------
# What this machine can run


def dataset_reason(name: str, cache: dict[str, str | None]) -> str | None:
    """None if dataset ``name`` is prepared (or can be prepared now), else why not."""
    if name not in cache:
        from modularity.data import load_arrays

        try:
            load_arrays(name, prepare_missing=True, verify=False)
            cache[name] = None
        except ModularityError as exc:
            cache[name] = f"dataset {name} unavailable: {str(exc).splitlines()[0]}"
    return cache[name]


def stage_reason(stage: Stage, cache: dict[str, str | None]) -> str | None:
    """None if this machine can run ``stage``, else the reason it cannot."""
    from modularity.models import tag_spec

    spec = tag_spec(stage.tag)
    if spec.family != "imagenet":
        if stage.kind in ("train", "importance"):
            return dataset_reason(spec.dataset, cache)
        return None
    key = f"weights:{stage.tag}"
    if key not in cache:
        from modularity.models import imagenet_model

        try:
            imagenet_model(stage.tag, pretrained=True)
            cache[key] = None
        except ModularityError as exc:
            cache[key] = f"pretrained {stage.tag} weights unavailable: {str(exc).splitlines()[0]}"
    if cache[key]:
        return cache[key]
    if stage.kind == "importance" and not os.environ.get("MODULARITY_IMAGENET"):
        return "no ImageNet validation images (set MODULARITY_IMAGENET, see docs/data.md)"
    return None


# --------------------------------------------------------------------------------------------------
# Running stages


def stage_output(stage: Stage, root: Path) -> Path:
    if stage.kind == "train":
        return checkpoint_dir(root, stage.tag, stage.seed)
    return result_dir(root, stage.kind, stage.tag, stage.seed, stage.pruned)


def stage_signature(stage: Stage, profile: Profile) -> str:
    """Hash of what determines a stage's output apart from code: its command and parameter sections."""
    from .dvcgen import stage_command

    section = "train" if stage.kind == "train" else stage.kind
    payload = {"cmd": stage_command(stage), "settings": profile.section(section, stage.family),
               "graph": profile.graph if stage.kind != "train" else None, "threads": profile.threads}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


STAMP = ".stage.json"


def is_done(stage: Stage, profile: Profile, root: Path) -> bool:
    stamp = stage_output(stage, root).parent / f".{stage_output(stage, root).name}{STAMP}"
    if not stamp.is_file() or not stage_output(stage, root).is_dir():
        return False
    return json.loads(stamp.read_text()).get("signature") == stage_signature(stage, profile)


def mark_done(stage: Stage, profile: Profile, root: Path, seconds: float) -> None:
    out = stage_output(stage, root)
    write_json_atomic(out.parent / f".{out.name}{STAMP}", {"stage": stage.name, "signature": stage_signature(stage, profile),
                                                          "seconds": round(seconds, 1)})


def run_in_process(stage: Stage, profile: Profile, root: Path) -> None:
    from .stages import run_stage

    run_stage(stage.kind, profile, stage.tag, stage.seed, stage.pruned, list(stage.ks), root, progress=False)


def run_with_dvc(stage: Stage, log: Path) -> None:
    """``dvc repro --single-item <stage>`` with this interpreter's ``python`` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", stage.name], cwd=REPO, env=env,
                              stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        ours = [line for line in lines if line.startswith("error: ")]  # the command's own one-line error
        detail = ours[-1][:300] if ours else " | ".join(lines[-3:])[-300:]
        raise ModularityError(f"dvc repro {stage.name} failed: {detail} (log: {log})")


class Estimator:
    """Seconds left, from first guesses refined by the measured time of each (kind, family)."""

    def __init__(self, stages: list[Stage], timings: dict[str, float]) -> None:
        self.remaining = list(stages)
        self.measured: dict[tuple[str, str], list[float]] = {}
        for key, sec in timings.items():
            kind, family = key.split("/")
            self.measured.setdefault((kind, family), []).append(sec)

    def guess(self, stage: Stage) -> float:
        m = self.measured.get((stage.kind, stage.family))
        if m:
            return sum(m) / len(m)
        return DEFAULT_SECONDS.get((stage.kind, stage.family), 120.0)

    def finished(self, stage: Stage, seconds: float | None) -> None:
        self.remaining.remove(stage)
        if seconds is not None:
            self.measured.setdefault((stage.kind, stage.family), []).append(seconds)

    def left(self) -> float:
        return sum(self.guess(s) for s in self.remaining)


def fmt_minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def run_stages(p: Plan, root: Path, use_dvc: bool, cache: dict[str, str | None],
               progress: bool = True) -> dict[str, str]:
    """Run every stage that can run; returns {stage name: reason} for the stages that did not."""
    from tqdm.auto import tqdm

    failed: dict[str, str] = {}
    timings_path = root / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    est = Estimator(p.stages, {k: v for k, v in timings.items() if "/" in k})
    bar = tqdm(total=len(p.stages), desc=f"{p.profile.name}", unit="stage", disable=not progress, dynamic_ncols=True)
    for stage in p.stages:
        bar.set_postfix_str(f"{stage.kind} {stage.tag} s{stage.seed}; ~{fmt_minutes(est.left())} left")
        reason = stage_reason(stage, cache)
        blocked = [u for u in stage.upstream if u in failed]
        seconds = None
        if reason is None and blocked:
            reason = failed[blocked[0]]
        if reason is not None:
            failed[stage.name] = reason
        elif not use_dvc and is_done(stage, p.profile, root):
            pass
        else:
            t0 = time.perf_counter()
            try:
                if use_dvc:
                    run_with_dvc(stage, root / "logs" / f"{stage.name}.log")
                else:
                    run_in_process(stage, p.profile, root)
                    mark_done(stage, p.profile, root, time.perf_counter() - t0)
                seconds = time.perf_counter() - t0
                if use_dvc and seconds < 0.1 * est.guess(stage):
                    seconds = None  # DVC found it up to date: not a measurement of the work
            except Exception as exc:  # noqa: BLE001 - one failed stage must not lose the others' results
                detail = str(exc).splitlines()[0] if str(exc) else ""
                kind = "" if isinstance(exc, ModularityError) else f"{type(exc).__name__}: "
                failed[stage.name] = f"stage {stage.name} failed: {kind}{detail}"
                bar.write(f"error: {failed[stage.name]}")
        if seconds is not None:
            timings[f"{stage.kind}/{stage.family}"] = round(seconds, 1)
            write_json_atomic(timings_path, timings)
        est.finished(stage, seconds)
        bar.update(1)
    bar.close()
    return failed


# --------------------------------------------------------------------------------------------------
# Compare, report, regression


def not_run_reasons(p: Plan, failed: dict[str, str]) -> dict[tuple[str, bool, int], str]:
    out = {}
    for s in p.stages:
        if s.name in failed and s.kind != "train":
            for k in s.ks:
                out.setdefault((s.tag, s.pruned, k), failed[s.name])
        elif s.name in failed:  # a failed training blocks every analysis of its checkpoints
            for r in p.rows:
                if r.tag == s.tag:
                    out.setdefault(r.key, failed[s.name])
    return out


def compare_all(p: Plan, results: Any, failed: dict[str, str]) -> list[cmp_mod.TableComparison]:
    reasons = not_run_reasons(p, failed)
    out = []
    for table in p.tables:
        rows = [r for r in p.rows if r.table == table.name]
        out.append(cmp_mod.compare_table(table, rows, results, load_paper_values(table.paper), reasons, profile=p.profile))
    return out


def regression(records: list[dict[str, Any]], expected_dir: Path, update: bool) -> list[str]:
    """Check (or, with ``update``, rewrite) the stored expected values of every analysis."""
    rules = cmp_mod.load_regression_rules()
    frames = cmp_mod.by_analysis(records)
    problems: list[str] = []
    if update:
        for analysis, df in frames.items():
            write_text_atomic(expected_dir / f"{analysis}.csv", cmp_mod.expected_text(df, rules))
        return problems
    stored = sorted(expected_dir.glob("*.csv"))
    if not stored:
        return [f"no expected values in {expected_dir} (run: make update-expected)"]
    for path in stored:
        analysis = path.stem
        if analysis not in frames:
            problems.append(f"{analysis}: no results (expected {path})")
            continue
        problems += [f"{analysis}: {p}" for p in cmp_mod.check_regression(frames[analysis], cmp_mod.read_expected(path),
                                                                          rules)]
    for analysis in sorted(set(frames) - {p.stem for p in stored}):
        problems.append(f"{analysis}: results have no stored expected values")
    return problems


def reproduce(profile_name: str, root: Path | None = None, report_dir: Path | None = None, use_dvc: bool | None = None,
              update_expected: bool = False, check_expected: bool | None = None, progress: bool = True,
              params_path: Path | None = None, expected_dir: Path = EXPECTED_SMOKE) -> int:
    """The whole run; returns the exit status (0 ok, 1 regression failure)."""
    params = load_params(params_path) if params_path else load_params()
    profile = load_profile(profile_name, params)
    p = plan(profile, load_tables())
    custom_root = root is not None
    root = Path(root) if root is not None else profile.root
    report_dir = Path(report_dir) if report_dir is not None else profile.report_dir
    if use_dvc is None:
        use_dvc = not custom_root and (REPO / ".dvc").is_dir() and shutil.which("git") is not None and _has_dvc()
    from . import guard

    lock = guard.RunLock(guard.lock_path_for(REPO, root, use_dvc))  # one run per clone; released on return
    guard.clean_stale_staging(root)
    guard.check_datasets(guard.datasets_of(p.stages))  # before DVC can remove anything
    if use_dvc:
        from .dvcgen import write_dvc_yaml

        if write_dvc_yaml():
            print("dvc.yaml regenerated from benchmark/specs and params.yaml")
    n_rows = sum(r.skip is None for r in p.rows)
    print(f"profile {profile.name}: {n_rows} of {len(p.rows)} table rows, {len(p.stages)} stages "
          f"({'DVC' if use_dvc else 'in-process'}), output {root}, report {report_dir}")
    cache: dict[str, str | None] = {}
    failed = run_stages(p, root, use_dvc, cache, progress)
    records = cmp_mod.collect_records(root, [s for s in p.stages if s.name not in failed])  # no stale results
    results = cmp_mod.frame(records)
    write_text_atomic(root / "results.csv", results.to_csv(index=False, lineterminator="\n"))
    cmps = compare_all(p, results, failed)
    from .report import write_report

    write_report(cmps, profile, report_dir)
    from .figures import paper_figures  # the paper's figure types at k = 12 (benchmark/figures.py)

    try:
        print("figures: " + ", ".join(f.name for f in paper_figures(profile, root, report_dir / "figures")))
    except ModularityError as exc:  # the tables stand without the figures; say why they are missing
        print(f"figures not drawn: {exc}", file=sys.stderr)
    for c in cmps:
        counts = c.rows["verdict"].value_counts().to_dict()
        print(f"{c.table.name}: " + ", ".join(f"{v} {n}" for v, n in counts.items()))
    print(f"report: {report_dir / 'summary.md'}")
    bad = guard.incomplete(failed)
    if bad:
        print(f"INCOMPLETE: {len(bad)} stage(s) failed or were blocked; their rows say 'not run': "
              f"{', '.join(list(bad)[:5])}{' ...' if len(bad) > 5 else ''}", file=sys.stderr)
        lock.release()
        return 2
    check = (profile.name == "smoke") if check_expected is None else check_expected
    if update_expected:
        regression(records, expected_dir, update=True)
        print(f"expected values rewritten under {expected_dir}")
        return 0
    if check:
        problems = regression(records, expected_dir, update=False)
        if problems:
            print(f"REGRESSION: {len(problems)} difference(s) from {expected_dir}:", file=sys.stderr)
            for line in problems[:50]:
                print(f"  {line}", file=sys.stderr)
            return 1
        print(f"regression check passed against {expected_dir}")
    return 0


def _has_dvc() -> bool:
    try:
        import dvc  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", help="smoke | default | paper (params.yaml)")
    parser.add_argument("--no-dvc", action="store_true", help="run the stages in this process, without DVC")
    parser.add_argument("--update-expected", action="store_true", help="rewrite benchmark/expected/smoke/ on purpose")
    parser.add_argument("--no-check", action="store_true", help="skip the regression check of the smoke profile")
    parser.add_argument("--write-dvc-yaml", action="store_true", help="only regenerate dvc.yaml and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (rows and stages) and exit")
    parser.add_argument("--root", type=Path, default=None, help="output root (default: data/benchmark/<profile>)")
    parser.add_argument("--report-dir", type=Path, default=None, help="report folder (default: the profile's)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.write_dvc_yaml:
            from .dvcgen import write_dvc_yaml

            print("dvc.yaml " + ("regenerated" if write_dvc_yaml() else "already up to date"))
            return 0
        if args.dry_run:
            p = plan(load_profile(args.profile), load_tables())
            for s in p.stages:
                print(s.name)
            for r in p.rows:
                if r.skip:
                    print(f"skip {r.table} {r.tag} {'pruned' if r.pruned else 'unpruned'} k={r.k}: {r.skip}")
            return 0
        return reproduce(args.profile, root=args.root, report_dir=args.report_dir,
                         use_dvc=False if args.no_dvc else None, update_expected=args.update_expected,
                         check_expected=False if args.no_check else None, progress=not args.no_progress)
    except ModularityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # read-only or full disk under the output root or the report folder
        from modularity.errors import from_os_error

        print(f"error: {from_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
