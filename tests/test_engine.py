"""The Dask engine: a cluster of separate worker processes on 127.0.0.1 gives the tables of a local run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: `benchmark` is not installed

from benchmark import engine, plan, reproduce  # noqa: E402

DASK = str(Path(sys.executable).with_name("dask"))

# One MNIST MLP trained on 300 images, k = 12, two shuffles run through joblib (n_jobs = 2: on the
# cluster they are Dask tasks), lesions on 200 test images, two visualisation steps.
TINY = {"description": "test profile", "seeds": {"default": [0]}, "families": ["mlp"], "tags": ["MNIST"], "k": [12],
        "threads": 1, "graph": {"conv_norm": "entrywise", "fold_batchnorm": True},
        "train": {"default": {"epochs": 1, "pruning_epochs": 1, "train_subsample": 300}},
        "cluster": {"default": {"n_shuffles": 2, "n_jobs": 2}},
        "importance": {"default": {"n_random": 3, "test_subsample": 200, "correction": "holm",
                                   "require_above_chance": False}},
        "coherence": {"default": {"n_random": 2, "steps": 2, "plot_k": []}}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tables(report: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((report / "tables").glob("*.csv"))}


def test_estimator_shares_the_work_among_workers() -> None:
    p = plan.plan(plan.load_profile("smoke"), plan.load_tables())
    one, two = reproduce.Estimator(p.stages, {}, 1), reproduce.Estimator(p.stages, {}, 2)
    assert two.left() == pytest.approx(max(one.left() / 2, max(one.guess(s) for s in p.stages)))


def test_first_estimate_of_the_default_profile_is_near_its_measured_time() -> None:
    """Before any stage has run, the guesses (DEFAULT_SECONDS) add up to within 30 % of the default profile's
    measured time with one worker: 95.5 minutes of stages on 2026-12-03, less the short-recipe CNNs' stages
    (train 2 x 170 s, cluster 4 x 7 s, importance 2 x 50 s, coherence 2 x 75 s: 10.3 minutes) that moved to
    the cnn-short profile on 2026-12-04; the guesses of before the dense shuffle null gave 170 minutes."""
    p = plan.plan(plan.load_profile("default"), plan.load_tables())
    minutes = reproduce.Estimator(p.stages, {}, 1).left() / 60
    measured = 95.5 - (2 * 170 + 4 * 7 + 2 * 50 + 2 * 75) / 60
    assert 0.7 * measured <= minutes <= 1.3 * measured, minutes
    short = plan.plan(plan.load_profile("cnn-short"), plan.load_tables())
    assert reproduce.Estimator(short.stages, {}, 1, short.profile).left() / 60 == pytest.approx(10.3, abs=0.1)


def test_first_guess_of_a_clustering_stage_scales_with_its_shuffles_and_jobs() -> None:
    """The cluster guess (20 s, measured with 3 k x 21 clusterings on 2 jobs) scaled to the stage's work: the
    full profile's 3 k x 51 clusterings on 1 job are 153 / 31.5 = 4.857 times it, 97.1 s (measured 2026-12-04:
    71 s pruned, 97 s unpruned); the default's own stage stays 20 s; a measured time still wins."""
    full, default = plan.load_profile("full"), plan.load_profile("default")
    stage = next(s for s in plan.plan(full, plan.load_tables()).stages if s.kind == "cluster" and s.tag == "MNIST")
    assert reproduce.Estimator([stage], {}, 1, full).guess(stage) == pytest.approx(20 * 153 / 31.5)
    assert reproduce.Estimator([stage], {}, 1, default).guess(stage) == pytest.approx(20.0)
    assert reproduce.Estimator([stage], {"cluster/mlp": 80.0}, 1, full).guess(stage) == 80.0


def test_stage_argv_is_the_dvc_command() -> None:
    s = plan.plan(plan.load_profile("smoke"), plan.load_tables()).stage("cluster@smoke-MNIST-s0-pruned")
    argv = engine.stage_argv(s)
    assert argv[1:] == ["-m", "benchmark.stages", "cluster", "--profile", "smoke", "--tag", "MNIST", "--seed", "0",
                        "--no-progress", "--state", "pruned", "--k", "12"]


def test_no_scheduler_is_one_line_error() -> None:
    from modularity.errors import ModularityError

    with pytest.raises(ModularityError, match="no Dask scheduler at tcp://127.0.0.1"):
        engine.DaskExecutor(lambda s: [], lambda s: Path("x"), address=f"tcp://127.0.0.1:{_free_port()}")


@contextmanager
def loopback_cluster(n_workers: int, n_threads: int) -> Iterator[str]:
    """A Dask scheduler and ``n_workers`` worker processes of ``n_threads`` threads (resource stage=1) on
    127.0.0.1, as a lab would start them (``dask scheduler`` / ``dask worker``); yields the address."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(plan.REPO), OMP_NUM_THREADS="1", DASK_DISTRIBUTED__WORKER__DAEMON="False")
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(1)
        for _ in range(n_workers):
            procs.append(subprocess.Popen([DASK, "worker", address, "--host", "127.0.0.1", "--nworkers", "1",
                                           "--nthreads", str(n_threads), "--resources", "stage=1", "--no-dashboard"],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(n_workers, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _tiny(tmp_path: Path) -> tuple[Path, dict]:
    if not (plan.REPO / "data" / "datasets" / "mnist" / "manifest.json").is_file():
        pytest.skip("MNIST is not prepared (make data)")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"profiles": {"tiny": TINY}}))
    return params, dict(use_dvc=False, check_expected=False, progress=False, params_path=params)


def _results(root: Path) -> pd.DataFrame:
    """Every value of a run's results except the measured time a lesion took."""
    return pd.read_csv(root / "results.csv").drop(columns=["seconds"], errors="ignore")


def _same_run(tmp_path: Path, a: str, b: str) -> None:
    local, remote = _tables(tmp_path / f"{a}-report"), _tables(tmp_path / f"{b}-report")
    assert local and local == remote
    pd.testing.assert_frame_equal(_results(tmp_path / a), _results(tmp_path / b), check_exact=True)


def _shuffle_prefixes_seen(address: str) -> int:
    """Task prefixes of the shuffle null's joblib loop (keys ``batch_of__shuffled_ncut_...``) the scheduler has
    seen: 0 when no shuffle ran on the cluster, more when some did (a prefix per batch kind, not per task)."""
    from distributed import Client

    def count(dask_scheduler: Any) -> int:  # prefixes outlive their tasks: the scheduler keeps their statistics
        return sum(1 for name in dask_scheduler.task_prefixes if "_shuffled_ncut" in name)

    with Client(address, timeout="30s") as client:
        return int(client.run_on_scheduler(count))


@pytest.mark.slow
def test_clusters_of_worker_processes_give_the_tables_of_a_local_run(tmp_path: Path) -> None:
    """The tiny profile through three clusters of separate worker processes on 127.0.0.1, each giving the
    tables and results of a run in one process to the last digit:

    * two workers of one thread: stages in parallel (every stage's log is there);
    * one worker of one thread, which the clustering stage itself holds: a Dask task for the shuffle null's
      joblib loop (n_jobs = 2) could never start, so the loop must run in the stage's own process (this
      configuration hung the default profile on 2026-12-02, before ``engine.joblib_backend`` checked for a
      spare thread); the run must finish within 10 minutes, with no shuffle task on the cluster;
    * one worker of two threads: a thread to spare, so the shuffles run as Dask tasks on the cluster.
    """
    import threading

    params, kw = _tiny(tmp_path)
    assert reproduce.reproduce("tiny", root=tmp_path / "local", report_dir=tmp_path / "local-report", **kw) == 0
    for name, workers, threads, expect_tasks in (("parallel", 2, 1, None), ("busy", 1, 1, False),
                                                  ("spare", 1, 2, True)):
        with loopback_cluster(workers, threads) as address:
            status: list[int] = []
            run = threading.Thread(target=lambda a=address, n=name, out=status: out.append(reproduce.reproduce(
                "tiny", root=tmp_path / n, report_dir=tmp_path / f"{n}-report", cluster=a, **kw)), daemon=True)
            run.start()
            run.join(timeout=600)
            assert not run.is_alive(), f"{name}: the run did not finish in 10 minutes (inner tasks waiting for a thread)"
            seen = _shuffle_prefixes_seen(address)
        assert status == [0], name
        if expect_tasks is not None:
            assert (seen > 0) == expect_tasks, f"{name}: {seen} shuffle task prefixes on the scheduler"
        _same_run(tmp_path, "local", name)
    logs = sorted(p.name for p in (tmp_path / "parallel" / "logs").iterdir())
    assert len(logs) == len(plan.plan(plan.load_profile("tiny", path=params), plan.load_tables()).stages)


def test_progress_says_running_and_queued_stages_apart() -> None:
    """The bar's postfix: a Dask executor holds every submitted stage, but runs one per worker."""
    from types import SimpleNamespace

    from benchmark.reproduce import _running_text

    assert _running_text(SimpleNamespace(running=62, workers=2)) == "2 running, 60 queued"
    assert _running_text(SimpleNamespace(running=1, workers=2)) == "1 running"
    assert _running_text(SimpleNamespace(running=1)) == "1 running"  # the serial executor


def test_inner_loops_use_the_cluster_only_with_a_spare_thread() -> None:
    """One-thread workers that each hold a stage have no thread for the stage's inner tasks: joblib must then
    run them in the stage's own process (else the stages wait forever for tasks that cannot start)."""
    from benchmark.engine import spare_threads

    busy = [{"nthreads": 1, "resources": {"stage": 1}}, {"nthreads": 1, "resources": {"stage": 1}}]
    assert spare_threads(busy) == 0
    assert spare_threads([{"nthreads": 2, "resources": {"stage": 1}}]) == 1
    assert spare_threads([{"nthreads": 4}]) == 4
