"""Where the pipeline's stages run: in this process one after another, or on a Dask cluster in parallel.

Dask (``distributed``) rather than Ray: the stage grid is a DAG of coarse tasks with files as results,
Dask runs it on a laptop (``LocalCluster``) and on the batch systems labs have (``dask-jobqueue`` for
SLURM/PBS/SGE, ``dask-kubernetes``) from one scheduler address, and joblib, which the inner loops
already use, has a ``dask`` backend, so the shuffle null runs on the same workers, not a second pool.

* :class:`SerialExecutor`: every stage in this process, in plan order (tests, ``--no-dvc``).
* :class:`DaskExecutor`: every stage as ``python -m benchmark.stages ...`` in the repository folder on a
  worker, one stage per worker at a time (worker resource ``stage=1``); a ``GPU`` resource is requested
  for training and coherence when some worker advertises one. Locally a ``LocalCluster`` with one
  single-threaded worker process per core on 127.0.0.1; with an address (``make reproduce
  CLUSTER=tcp://host:8786``) the given scheduler, whose workers must see the repository at the same
  path (a shared file system) and be started with ``--resources stage=1`` (``GPU=1`` on GPU machines).

The driver (:func:`benchmark.reproduce.run_stages`) decides what runs and records every finished stage
(``dvc commit``): workers only compute, so DVC's repository lock is never contended.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modularity.errors import ModularityError

from .plan import REPO, Stage

GPU_KINDS = ("train", "coherence")
SCHEDULER_ENV = "MODULARITY_DASK_SCHEDULER"  # set for stage processes: their joblib loops use the cluster


@dataclass
class Outcome:
    """A finished stage: seconds of work, or the error that stopped it."""

    stage: Stage
    seconds: float
    error: BaseException | None = None


class SerialExecutor:
    """Runs each submitted stage in this process when it is waited for (plan order, one at a time)."""

    workers = 1

    def __init__(self, run: Callable[[Stage], None]) -> None:
        self._run = run
        self._queue: list[Stage] = []

    def submit(self, stage: Stage) -> None:
        self._queue.append(stage)

    @property
    def running(self) -> int:
        return len(self._queue)

    def wait_one(self) -> Outcome:
        stage = self._queue.pop(0)
        t0 = time.perf_counter()
        try:
            self._run(stage)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as the stage's failure
            return Outcome(stage, time.perf_counter() - t0, exc)
        return Outcome(stage, time.perf_counter() - t0)

    def close(self) -> None:
        self._queue.clear()


def run_command(cmd: list[str], cwd: str, env: dict[str, str], log: str) -> float:
    """A stage's command on a worker (its output in ``log``); seconds taken. Raises on failure.

    The task secedes from the worker's thread pool while the command runs, so the joblib tasks the stage
    submits to the same cluster can use the thread; the ``stage`` resource stays held, so the worker
    starts no second stage meanwhile.
    """
    try:
        from distributed import rejoin, secede

        secede()
        seceded = True
    except (ImportError, ValueError):  # not on a worker
        seceded = False
    t0 = time.perf_counter()
    try:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **env}, stdout=f, stderr=subprocess.STDOUT,
                                  preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    finally:
        if seceded:
            rejoin()
    if proc.returncode != 0:
        lines = [line for line in Path(log).read_text().splitlines() if line.strip()]
        raise RuntimeError(f"exit status {proc.returncode}: {' | '.join(lines[-3:])[-300:]}")
    return time.perf_counter() - t0


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the process that started it dies (Linux ``PR_SET_PDEATHSIG``).

    So a killed driver or worker leaves no stage running on its own; the stage's staging folder is
    discarded by the next run.
    """
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class DaskExecutor:
    """Stages as tasks of a Dask cluster (local by default); see the module docstring."""

    def __init__(self, command: Callable[[Stage], list[str]], log: Callable[[Stage], Path], address: str | None = None,
                 n_workers: int | None = None, env: dict[str, str] | None = None) -> None:
        try:
            import cloudpickle
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ModularityError("the parallel engine needs dask and distributed: pip install -e '.[benchmark]'") \
                from exc
        import benchmark.engine as this

        cloudpickle.register_pickle_by_value(this)  # workers need the repository's files, not its modules
        self._command, self._log = command, log
        self._env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     "OPENBLAS_NUM_THREADS": "1", **(env or {})}
        self._cluster = None
        if address is None:
            n = n_workers or os.cpu_count() or 1
            resources: dict[str, float] = {"stage": 1}
            if _cuda_available():
                resources["GPU"] = 1
            for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ.setdefault(key, "1")  # the workers' own joblib tasks run single-threaded too
            self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                         dashboard_address=None, resources=resources, silence_logs=40)
            self.client = Client(self._cluster)
        else:
            try:
                self.client = Client(address, timeout="20s")
            except OSError as exc:
                raise ModularityError(f"no Dask scheduler at {address}: {exc}") from exc
        info = self.client.scheduler_info()["workers"].values()
        if not any(w.get("resources", {}).get("stage") for w in info):
            self.close()
            raise ModularityError(f"no worker of {address or 'the local cluster'} has the resource stage=1 "
                                  "(start workers with: dask worker ADDRESS --nthreads 1 --resources stage=1)")
        self._gpu = any(w.get("resources", {}).get("GPU") for w in info)
        self.workers = sum(1 for w in info if w.get("resources", {}).get("stage"))
        self._env[SCHEDULER_ENV] = self.client.scheduler.address
        self._futures: dict[Any, Stage] = {}

    def submit(self, stage: Stage) -> None:
        resources = {"stage": 1, **({"GPU": 1} if self._gpu and stage.kind in GPU_KINDS else {})}
        fut = self.client.submit(run_command, self._command(stage), str(REPO), self._env, str(self._log(stage)),
                                 key=f"stage-{stage.name}-{time.time_ns()}", resources=resources, pure=False)
        self._futures[fut] = stage

    @property
    def running(self) -> int:
        return len(self._futures)

    def wait_one(self) -> Outcome:
        from distributed import wait

        done = next(iter(wait(list(self._futures), return_when="FIRST_COMPLETED").done))
        stage = self._futures.pop(done)
        try:
            return Outcome(stage, float(done.result()))
        except Exception as exc:  # noqa: BLE001 - reported as the stage's failure
            return Outcome(stage, 0.0, exc)

    def close(self) -> None:
        for fut in self._futures:
            fut.cancel()
        self._futures.clear()
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def stage_argv(stage: Stage, root: Path | None = None, params: Path | None = None) -> list[str]:
    """``python -m benchmark.stages ...`` for ``stage`` with this interpreter (what DVC's cmd runs)."""
    argv = [sys.executable, "-m", "benchmark.stages", stage.kind, "--profile", stage.profile, "--tag", stage.tag,
            "--seed", str(stage.seed), "--no-progress"]
    if stage.kind != "train":
        argv += ["--state", "pruned" if stage.pruned else "unpruned", "--k", *(str(k) for k in stage.ks)]
    if root is not None:
        argv += ["--root", str(Path(root).resolve())]
    if params is not None:
        argv += ["--params", str(Path(params).resolve())]
    return argv


@contextmanager
def joblib_backend() -> Iterator[None]:
    """A context in which joblib's loops run on the cluster of ``$MODULARITY_DASK_SCHEDULER`` (if set).

    Only when the cluster has a thread to spare beyond the ones its stages hold (a worker's ``stage``
    resource): a stage waits for its inner tasks, so on workers of one thread each (the local cluster) the
    inner tasks would never start and the stages would wait forever. Without a spare thread the inner
    loops run in the stage's own process, one after the other; the results are the same (every shuffle
    and draw is seeded on its own).
    """
    address = os.environ.get(SCHEDULER_ENV)
    if not address:
        yield
        return
    import joblib
    from distributed import Client

    with Client(address, timeout="20s") as client:
        if spare_threads(client.scheduler_info()["workers"].values()) < 1:
            with joblib.parallel_config(backend="sequential"):
                yield
            return
        with joblib.parallel_config(backend="dask", wait_for_workers_timeout=20):
            yield


def spare_threads(workers: Iterable[dict[str, Any]]) -> int:
    """Threads of the cluster's workers not held by stages (``nthreads`` minus the ``stage`` resources)."""
    workers = list(workers)
    return sum(int(w.get("nthreads", 1)) for w in workers) - sum(int(w.get("resources", {}).get("stage", 0))
                                                                 for w in workers)
