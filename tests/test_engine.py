"""The Dask engine: a cluster of separate worker processes on 127.0.0.1 gives the tables of a local run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

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


def test_stage_argv_is_the_dvc_command() -> None:
    s = plan.plan(plan.load_profile("smoke"), plan.load_tables()).stage("cluster@smoke-MNIST-s0-pruned")
    argv = engine.stage_argv(s)
    assert argv[1:] == ["-m", "benchmark.stages", "cluster", "--profile", "smoke", "--tag", "MNIST", "--seed", "0",
                        "--no-progress", "--state", "pruned", "--k", "12"]


def test_no_scheduler_is_one_line_error() -> None:
    from modularity.errors import ModularityError

    with pytest.raises(ModularityError, match="no Dask scheduler at tcp://127.0.0.1"):
        engine.DaskExecutor(lambda s: [], lambda s: Path("x"), address=f"tcp://127.0.0.1:{_free_port()}")


@pytest.mark.slow
def test_cluster_of_two_worker_processes_gives_the_tables_of_a_local_run(tmp_path: Path) -> None:
    if not (plan.REPO / "data" / "datasets" / "mnist" / "manifest.json").is_file():
        pytest.skip("MNIST is not prepared (make data)")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"profiles": {"tiny": TINY}}))
    kw = dict(use_dvc=False, check_expected=False, progress=False, params_path=params)
    assert reproduce.reproduce("tiny", root=tmp_path / "local", report_dir=tmp_path / "local-report", **kw) == 0

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(plan.REPO), OMP_NUM_THREADS="1", DASK_DISTRIBUTED__WORKER__DAEMON="False")
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(1)
        for _ in range(2):
            procs.append(subprocess.Popen([DASK, "worker", address, "--host", "127.0.0.1", "--nworkers", "1",
                                           "--nthreads", "1", "--resources", "stage=1", "--no-dashboard"],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        status = reproduce.reproduce("tiny", root=tmp_path / "cluster", report_dir=tmp_path / "cluster-report",
                                     cluster=address, **kw)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert status == 0
    local, remote = _tables(tmp_path / "local-report"), _tables(tmp_path / "cluster-report")
    assert local and local == remote
    import pandas as pd

    def results(root: Path) -> pd.DataFrame:  # every value except the measured time a lesion took
        return pd.read_csv(root / "results.csv").drop(columns=["seconds"], errors="ignore")

    pd.testing.assert_frame_equal(results(tmp_path / "local"), results(tmp_path / "cluster"), check_exact=True)
    logs = sorted(p.name for p in (tmp_path / "cluster" / "logs").iterdir())
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
