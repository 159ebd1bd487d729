"""``make reproduce``: run a profile's pipeline, compare every table with the paper, write the report.

``python -m benchmark.reproduce --profile {default,smoke,cnn-short,full,paper} [--no-dvc] [--networks DIR] [--update-expected]``

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
5. For the smoke profile: check the networks trained here against the committed ones and, where they
   are the same bits or ``--networks`` gave them, the results against ``benchmark/expected/smoke/``
   (exit status 1 on any difference; :mod:`benchmark.smoke_networks`), or rewrite both with
   ``--update-expected``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from modularity.errors import ModularityError
from modularity.utils import write_json_atomic, write_text_atomic

from . import compare as cmp_mod
from . import smoke_networks
from .paper_values import load_paper_values
from .plan import REPO, Plan, Profile, Stage, checkpoint_dir, load_params, load_profile, load_tables, plan, result_dir

EXPECTED_SMOKE = Path(__file__).parent / "expected" / "smoke"

#: First guesses of a stage's seconds, replaced by measured times as stages finish: the default profile's stages
#: alone (one worker, 2-core AMD EPYC, 2026-12-03, data/benchmark/default/timings.json). The guesses of
#: before the dense shuffle null (cluster 150 s, importance and coherence 60 s) made a fresh run's first
#: estimate 170 minutes for what took 96.
DEFAULT_SECONDS = {("train", "mlp"): 215, ("train", "cnn"): 170, ("cluster", "mlp"): 20, ("cluster", "cnn"): 7,
                   ("importance", "mlp"): 22, ("importance", "cnn"): 50, ("coherence", "mlp"): 14,
                   ("coherence", "cnn"): 75}


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


def code_digest(group: str) -> str:
    """Hash of the contents of every source file a stage of ``group`` imports (its DVC code deps)."""
    from .dvcgen import code_deps

    h = hashlib.sha256()
    for rel in code_deps(group):
        h.update(rel.encode() + b"\0" + (REPO / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def stage_signature(stage: Stage, profile: Profile, root: Path, digests: dict[str, str] | None = None) -> str:
    """Hash of what determines a stage's output without DVC: command, parameter sections, code, upstream.

    The in-process path (``--no-dvc``, ``--root``) skips a stage whose output folder carries this
    signature; like DVC's deps it covers the source files the stage imports and the upstream stage's
    own signature, so a code change or a retrained network re-runs it.
    """
    from .dvcgen import stage_command

    digests = {} if digests is None else digests
    if stage.group not in digests:
        digests[stage.group] = code_digest(stage.group)
    section = "train" if stage.kind == "train" else stage.kind
    train = Stage("train", stage.profile, stage.family, stage.tag, stage.seed)
    upstream = [_stamp(train, root).get("signature")] if stage.upstream else []  # the only upstream is training
    payload = {"cmd": stage_command(stage), "settings": profile.section(section, stage.family),
               "graph": profile.graph if stage.kind != "train" else None, "threads": profile.threads,
               "code": digests[stage.group], "upstream": upstream}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


STAMP = ".stage.json"


def _stamp_path(stage: Stage, root: Path) -> Path:
    out = stage_output(stage, root)
    return out.parent / f".{out.name}{STAMP}"


def _stamp(stage: Stage, root: Path) -> dict[str, Any]:
    path = _stamp_path(stage, root)
    return json.loads(path.read_text()) if path.is_file() else {}


def is_done(stage: Stage, profile: Profile, root: Path, digests: dict[str, str] | None = None) -> bool:
    if not stage_output(stage, root).is_dir():
        return False
    return _stamp(stage, root).get("signature") == stage_signature(stage, profile, root, digests)


def mark_done(stage: Stage, profile: Profile, root: Path, seconds: float, digests: dict[str, str] | None = None) -> None:
    write_json_atomic(_stamp_path(stage, root), {"stage": stage.name, "seconds": round(seconds, 1),
                                                 "signature": stage_signature(stage, profile, root, digests)})


def use_networks(p: Plan, folder: Path, root: Path) -> None:
    """Put the trained networks of ``folder`` where the plan's train stages would write them, marked done.

    Every network is checked before anything is copied (one-line error naming the first missing file).
    """
    trains = [s for s in p.stages if s.kind == "train"]
    for stage in trains:
        src = folder / stage.tag / f"seed{stage.seed}"
        missing = [name for name in smoke_networks.NETWORK_FILES if not (src / name).is_file()]
        if missing:
            raise ModularityError(f"--networks {folder}: {src / missing[0]} is missing (needed by {stage.name})")
    for stage in trains:
        smoke_networks.copy_network(folder / stage.tag / f"seed{stage.seed}", stage_output(stage, root))
        mark_done(stage, p.profile, root, 0.0)


def run_in_process(stage: Stage, profile: Profile, root: Path) -> None:
    from .stages import run_stage

    run_stage(stage.kind, profile, stage.tag, stage.seed, stage.pruned, list(stage.ks), root, progress=False)


def dvc(*args: str, check: bool = True, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``dvc ARGS`` in the repository with this interpreter's ``python`` first on PATH (stage commands call it)."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        tail = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()][-3:]
        raise ModularityError(f"dvc {' '.join(args[:2])} failed: {' | '.join(tail)[-300:]}")
    return proc


def dvc_changed(names: list[str]) -> set[str]:
    """The stages among ``names`` that DVC does not find up to date (``dvc status``: deps, params, outs)."""
    if not names:
        return set()
    proc = dvc("status", "--json", *names)
    try:
        status = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise ModularityError(f"dvc status printed no JSON: {proc.stdout[:200]!r}") from exc
    return {n for n in names if n in status}


#: The clustering work behind DEFAULT_SECONDS' cluster times: the default profile's 3 values of k, each with
#: the true graph and 20 shuffles, on 2 jobs.
DEFAULT_CLUSTER_WORK = 3 * (20 + 1) / 2


class Estimator:
    """Seconds left, from first guesses refined by the measured time of each (kind, family)."""

    def __init__(self, stages: list[Stage], timings: dict[str, float], workers: int = 1,
                 profile: Profile | None = None) -> None:
        self.remaining = list(stages)
        self.workers = max(1, workers)
        self.profile = profile
        self.measured: dict[tuple[str, str], list[float]] = {}
        for key, sec in timings.items():
            kind, family = key.split("/")
            self.measured.setdefault((kind, family), []).append(sec)

    def guess(self, stage: Stage) -> float:
        m = self.measured.get((stage.kind, stage.family))
        if m:
            return sum(m) / len(m)
        first = DEFAULT_SECONDS.get((stage.kind, stage.family), 120.0)
        if stage.kind == "cluster" and self.profile is not None:  # 50 shuffles on 1 job is ~5x the default's work
            cluster = self.profile.section("cluster", stage.family)
            work = len(stage.ks) * (int(cluster.get("n_shuffles", 50)) + 1) / max(1, int(cluster.get("n_jobs", 1)))
            first *= work / DEFAULT_CLUSTER_WORK
        return first

    def finished(self, stage: Stage, seconds: float | None) -> None:
        self.remaining.remove(stage)
        if seconds is not None:
            self.measured.setdefault((stage.kind, stage.family), []).append(seconds)

    def left(self) -> float:
        """Wall seconds left: the work left shared by the workers, at least the longest stage left."""
        work = [self.guess(s) for s in self.remaining]
        return max(sum(work) / self.workers, max(work, default=0.0))


def fmt_minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _running_text(executor: Any) -> str:
    """"2 running, 60 queued": the executor holds every submitted stage, its workers run at most one each."""
    submitted, workers = executor.running, max(1, int(getattr(executor, "workers", 1)))
    running = min(submitted, workers)
    return f"{running} running" + (f", {submitted - running} queued" if submitted > running else "")


def make_executor(p: Plan, root: Path, custom_root: bool, params_path: Path | None, workers: int | None,
                  cluster: str | None, use_dvc: bool) -> Any:
    """Serial for one worker without a cluster (in this process, or as DVC's command with DVC), else Dask."""
    from . import engine

    def argv(s: Stage) -> list[str]:
        return engine.stage_argv(s, root if custom_root else None, params_path)

    def log(s: Stage) -> Path:
        return root / "logs" / f"{s.name}.log"

    if cluster is None and (workers or os.cpu_count() or 1) <= 1:
        if use_dvc:  # the stage's own command in a fresh process, as `dvc repro` would run it
            return engine.SerialExecutor(lambda s: engine.run_command(argv(s), str(REPO), {}, str(log(s))))
        return engine.SerialExecutor(lambda s: run_in_process(s, p.profile, root))
    return engine.DaskExecutor(argv, log, address=cluster, n_workers=workers)


def run_stages(p: Plan, root: Path, use_dvc: bool, cache: dict[str, str | None], progress: bool = True,
               executor: Any = None) -> dict[str, str]:
    """Run every stage that can run and is not up to date, upstream first, as many at once as the executor has
    workers; returns {stage name: reason} for the stages that did not run.

    Up to date means: DVC's ``dvc status`` finds nothing changed (with DVC) or the output folder carries the
    stage's signature (without), and no upstream stage ran in this call. Each finished stage is recorded at
    once (``dvc commit`` into ``dvc.lock`` and the cache, or its signature), so an interrupted run resumes.
    """
    from tqdm.auto import tqdm

    from .engine import SerialExecutor

    executor = executor or SerialExecutor(lambda s: run_in_process(s, p.profile, root))
    failed: dict[str, str] = {}
    timings_path = root / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    est = Estimator(p.stages, {k: v for k, v in timings.items() if "/" in k}, getattr(executor, "workers", 1), p.profile)
    changed = dvc_changed([s.name for s in p.stages]) if use_dvc else set()
    digests: dict[str, str] = {}
    pending, done, ran = list(p.stages), set(), set()
    bar = tqdm(total=len(p.stages), desc=f"{p.profile.name}", unit="stage", disable=not progress, dynamic_ncols=True)

    def finish(stage: Stage, seconds: float | None) -> None:
        if seconds is not None:
            timings[f"{stage.kind}/{stage.family}"] = round(seconds, 1)
            write_json_atomic(timings_path, timings)
        est.finished(stage, seconds)
        bar.update(1)

    try:
        while pending or executor.running:
            for stage in list(pending):
                blocked = [u for u in stage.upstream if u in failed]
                if blocked or all(u in done for u in stage.upstream):
                    pending.remove(stage)
                else:
                    continue
                reason = failed[blocked[0]] if blocked else stage_reason(stage, cache)
                if reason is not None:
                    failed[stage.name] = reason
                    finish(stage, None)
                elif not (set(stage.upstream) & ran) and (
                        (use_dvc and stage.name not in changed) or (not use_dvc and is_done(stage, p.profile, root, digests))):
                    done.add(stage.name)
                    finish(stage, None)
                else:
                    executor.submit(stage)
            if not executor.running:
                continue
            bar.set_postfix_str(f"{_running_text(executor)}; ~{fmt_minutes(est.left())} left")
            out = executor.wait_one()
            stage = out.stage
            if out.error is None:
                try:
                    if use_dvc:
                        dvc("commit", "--force", "--quiet", stage.name)
                    else:
                        mark_done(stage, p.profile, root, out.seconds, digests)
                    done.add(stage.name)
                    ran.add(stage.name)
                except ModularityError as exc:
                    out.error = exc
            if out.error is not None:
                exc = out.error
                detail = str(exc).splitlines()[0] if str(exc) else ""
                kind = "" if isinstance(exc, ModularityError) else f"{type(exc).__name__}: "
                failed[stage.name] = f"stage {stage.name} failed: {kind}{detail}"
                bar.write(f"error: {failed[stage.name]}")
            finish(stage, out.seconds if out.error is None else None)
    finally:
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


def metrics_of(cmps: list[cmp_mod.TableComparison]) -> dict[str, Any]:
    """Headline numbers for ``dvc metrics show``: row verdicts per table and every judged value at k = 12."""
    out: dict[str, Any] = {}
    for c in cmps:
        counts = {str(v): int(n) for v, n in c.rows["verdict"].value_counts().sort_index().items()}
        values: dict[str, float] = {}
        judged = c.long[(c.long["k"] == 12) & c.long["verdict"].isin(["agree", "differ", "n/a"])]
        for r in judged.itertuples():
            ours = float(r.ours)
            if math.isnan(ours):  # a value we do not compute for this row (a classifier's loss)
                continue
            values[f"{r.tag}.{'pruned' if r.pruned else 'unpruned'}.{r.column}"] = ours if math.isfinite(ours) else None
        out[c.table.name] = {"rows": counts, "k12": values}
    return out


def remove_stale_figures(folder: Path, written: list[Path]) -> list[Path]:
    """Delete the PNGs of ``folder`` that this report did not write; returns them.

    Why: a figure of a network that the profile no longer runs (the default's CNNs until 2026-12-04)
    would otherwise stay beside the new ones, looking current.
    """
    keep = {Path(w).resolve() for w in written}
    stale = sorted(f for f in folder.glob("*.png") if f.resolve() not in keep) if folder.is_dir() else []
    for f in stale:
        f.unlink()
    return stale


def write_outputs(p: Plan, root: Path, report_dir: Path, failed: dict[str, str]) -> list[dict[str, Any]]:
    """``results.csv``, the report and ``metrics.json`` from the stages' result folders; returns the records."""
    records = cmp_mod.collect_records(root, [s for s in p.stages if s.name not in failed])  # no stale results
    results = cmp_mod.frame(records)
    write_text_atomic(root / "results.csv", results.to_csv(index=False, lineterminator="\n"))
    cmps = compare_all(p, results, failed)
    from .report import write_report

    written = write_report(cmps, p.profile, report_dir)
    write_text_atomic(report_dir / "metrics.json", json.dumps(metrics_of(cmps), indent=2, sort_keys=True) + "\n")
    from .figures import paper_figures  # the paper's figure types at k = 12 (benchmark/figures.py)

    try:
        drawn = paper_figures(p.profile, root, report_dir / "figures")
        written += drawn
        print("figures: " + ", ".join(f.name for f in drawn))
    except ModularityError as exc:  # the tables stand without the figures; say why they are missing
        print(f"figures not drawn: {exc}", file=sys.stderr)
    for stale in remove_stale_figures(report_dir / "figures", written):
        print(f"removed stale figure (not drawn by this report): {stale.name}")
    for c in cmps:
        counts = c.rows["verdict"].value_counts().to_dict()
        print(f"{c.table.name}: " + ", ".join(f"{v} {n}" for v, n in counts.items()))
    print(f"report: {report_dir / 'summary.md'}")
    return records


def report_only(profile_name: str, params_path: Path | None = None) -> int:
    """The ``report@<profile>`` stage: compare what the stages wrote and write the report (no stage runs).

    Rows whose stage did not run say why: the reason the last ``make reproduce`` recorded in
    ``<root>/failed.json``, or what this machine lacks, or that the stage has not run.
    """
    profile = load_profile(profile_name, load_params(params_path) if params_path else None)
    p = plan(profile, load_tables())
    path = profile.root / "failed.json"
    failed = json.loads(path.read_text()) if path.is_file() else {}
    cache: dict[str, str | None] = {}
    for s in p.stages:
        if s.name not in failed and not stage_output(s, profile.root).is_dir():
            failed[s.name] = stage_reason(s, cache) or f"stage {s.name} has not run"
    write_outputs(p, profile.root, profile.report_dir, failed)
    return 0


def remote_problem(repo: Path = REPO) -> str | None:
    """None if the default DVC remote is reachable, else a one-line reason (no remote, a missing folder).

    Reads ``dvc config`` rather than ``dvc remote list``: the latter is a table that DVC wraps at 80
    columns when its output is not a terminal, so a long remote path split the name from its URL.
    """
    default = dvc("config", "core.remote", check=False, cwd=repo).stdout.strip()
    if not default:
        return "no DVC remote is configured"
    url = dvc("config", f"remote.{default}.url", check=False, cwd=repo).stdout.strip()
    if not url:
        return f"the default DVC remote {default!r} is not defined"
    folder = (repo / ".dvc" / url).resolve()  # DVC prints a folder absolute; kept relative-safe (.dvc/)
    if "://" not in url and not folder.is_dir():
        return f"the DVC remote {default!r} is the folder {folder}, which does not exist"
    return None


def push() -> None:
    """``dvc push`` to the default remote when one is reachable; a one-line note otherwise."""
    problem = remote_problem()
    if problem:
        print(f"not pushed: {problem} (see docs/pipeline.md, 'Sharing results')")
        return
    proc = dvc("push", "--quiet", check=False)
    print("pushed the cache to the DVC remote" if proc.returncode == 0 else
          f"dvc push failed: {(proc.stdout + proc.stderr).strip().splitlines()[-1:]}")


def reproduce(profile_name: str, root: Path | None = None, report_dir: Path | None = None, use_dvc: bool | None = None,
              update_expected: bool = False, check_expected: bool | None = None, progress: bool = True,
              params_path: Path | None = None, expected_dir: Path = EXPECTED_SMOKE, workers: int | None = 1,
              cluster: str | None = None, push_results: bool = False, networks: Path | None = None) -> int:
    """The whole run; returns the exit status (0 ok, 1 regression failure).

    ``workers`` > 1 or a ``cluster`` address runs stages in parallel on the Dask engine
    (:mod:`benchmark.engine`); ``workers=None`` means one per core. ``networks`` takes the trained
    networks from that folder (``<tag>/seed<N>/{unpruned,pruned}.pt`` and their ``.json``) instead of
    training them: the analyses then run from fixed weights (the smoke regression check, networks trained
    elsewhere). It runs without DVC, whose record would otherwise claim the networks were trained here.
    """
    params = load_params(params_path) if params_path else load_params()
    profile = load_profile(profile_name, params)
    p = plan(profile, load_tables())
    custom_root = root is not None
    root = Path(root) if root is not None else profile.root
    report_dir = Path(report_dir) if report_dir is not None else profile.report_dir
    if networks is not None and use_dvc:
        raise ModularityError("--networks runs the analyses without DVC: add --no-dvc")
    if update_expected and networks is not None and Path(networks).resolve() != (expected_dir / "networks").resolve():
        raise ModularityError(f"--update-expected writes values for the committed networks {expected_dir / 'networks'}, "
                              f"not for {networks}")
    if use_dvc is None:
        use_dvc = (networks is None and not custom_root and params_path is None and (REPO / ".dvc").is_dir()
                   and shutil.which("git") is not None and _has_dvc())
    from . import guard

    lock = guard.RunLock(guard.lock_path_for(REPO, root, use_dvc))  # one run per clone; released on return
    guard.clean_stale_staging(root)
    guard.check_datasets(guard.datasets_of(p.stages))  # before DVC can remove anything
    if use_dvc:
        from .dvcgen import write_dvc_yaml

        if write_dvc_yaml():
            print("dvc.yaml regenerated from benchmark/specs and params.yaml")
    if networks is not None:
        use_networks(p, Path(networks), root)
    n_rows = sum(r.skip is None for r in p.rows)
    cache: dict[str, str | None] = {}
    executor = make_executor(p, root, custom_root, params_path, workers, cluster, use_dvc)
    where = f"{executor.workers} workers" + (f" of {cluster}" if cluster else "") if executor.workers > 1 or cluster \
        else "1 worker"
    print(f"profile {profile.name}: {n_rows} of {len(p.rows)} table rows, {len(p.stages)} stages "
          f"({'DVC' if use_dvc else 'in-process'}, {where}), output {root}, report {report_dir}")
    try:
        failed = run_stages(p, root, use_dvc, cache, progress, executor)
    finally:
        executor.close()
    write_json_atomic(root / "failed.json", failed)
    records = write_outputs(p, root, report_dir, failed)
    if use_dvc:
        proc = dvc("commit", "--force", "--quiet", f"report@{profile.name}", check=False)
        if proc.returncode != 0:
            print(f"report@{profile.name} not recorded in dvc.lock (a stage did not run)")
        if push_results:
            push()
    bad = guard.incomplete(failed)
    if bad:
        print(f"INCOMPLETE: {len(bad)} stage(s) failed or were blocked; their rows say 'not run': "
              f"{', '.join(list(bad)[:5])}{' ...' if len(bad) > 5 else ''}", file=sys.stderr)
        lock.release()
        return 2
    check = (profile.name == "smoke") if check_expected is None else check_expected
    trained = [(s.tag, s.seed) for s in p.stages if s.kind == "train"]
    committed = expected_dir / "networks"
    if update_expected:
        if networks is None:  # the networks trained now become the committed ones the analysis check starts from
            smoke_networks.commit_networks(trained, root, committed)
        regression(records, expected_dir, update=True)
        print(f"expected values rewritten under {expected_dir}")
        return 0
    if check and networks is None:
        # Trained here: the training is checked against the committed networks; the analysis check needs
        # the very same networks, which another CPU does not give (benchmark/smoke_networks.py).
        found = smoke_networks.check_training(trained, root, committed)
        for line in found.notes:
            print(f"training: {line}")
        if found.problems:
            print(f"REGRESSION: {len(found.problems)} training difference(s) from {committed}:",
                  file=sys.stderr)
            for line in found.problems:
                print(f"  {line}", file=sys.stderr)
            return 1
        if not found.bit_for_bit:
            print("analysis check skipped: these networks are not bit for bit the committed ones (another CPU); "
                  f"`--networks {committed} --no-dvc` checks the analysis from them")
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


def pull(targets: list[str]) -> int:
    """``dvc pull`` with a clear one-line message when there is no remote to pull from."""
    problem = remote_problem()
    if problem:
        print(f"error: cannot pull: {problem}. Nothing to restore: `make reproduce` computes everything; to share "
              "results, set up a remote (docs/pipeline.md, 'Sharing results'): dvc remote add -d lab /path/or/url",
              file=sys.stderr)
        return 2
    proc = subprocess.run([sys.executable, "-m", "dvc", "pull", *targets], cwd=REPO)
    return proc.returncode


def _terminate_as_interrupt() -> None:
    """SIGTERM (a scheduler's or ``kill``'s) ends the run like Ctrl-C: workers stopped, finished stages kept."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", help="default | smoke | cnn-short | full | paper (params.yaml)")
    parser.add_argument("--no-dvc", action="store_true", help="run the stages without DVC (signatures in the outputs)")
    parser.add_argument("--workers", type=int, default=None,
                        help="stages at once on a local Dask cluster (default: one per core; 1 = in this process)")
    parser.add_argument("--cluster", default=os.environ.get("MODULARITY_CLUSTER") or None,
                        help="address of a Dask scheduler (tcp://host:8786) to run the stages on")
    parser.add_argument("--push", action="store_true", help="dvc push to the default remote after the run")
    parser.add_argument("--update-expected", action="store_true",
                        help="rewrite benchmark/expected/smoke/ on purpose (the networks too, unless --networks)")
    parser.add_argument("--no-check", action="store_true", help="skip the regression check of the smoke profile")
    parser.add_argument("--write-dvc-yaml", action="store_true", help="only regenerate dvc.yaml and exit")
    parser.add_argument("--report-only", action="store_true", help="only write the report (the report@<P> stage)")
    parser.add_argument("--pull", nargs="*", default=None, metavar="STAGE", help="dvc pull, checking the remote first")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (rows and stages) and exit")
    parser.add_argument("--root", type=Path, default=None, help="output root (default: data/benchmark/<profile>)")
    parser.add_argument("--networks", type=Path, default=None, metavar="DIR",
                        help="take the trained networks from DIR/<tag>/seed<N>/ instead of training (needs --no-dvc)")
    parser.add_argument("--report-dir", type=Path, default=None, help="report folder (default: the profile's)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    _terminate_as_interrupt()
    try:
        if args.write_dvc_yaml:
            from .dvcgen import write_dvc_yaml

            print("dvc.yaml " + ("regenerated" if write_dvc_yaml() else "already up to date"))
            return 0
        if args.pull is not None:
            return pull(args.pull)
        if args.report_only:
            return report_only(args.profile)
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
                         check_expected=False if args.no_check else None, progress=not args.no_progress,
                         workers=args.workers, cluster=args.cluster, push_results=args.push, networks=args.networks)
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
