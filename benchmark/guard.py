"""Guards around a pipeline run: one run per clone, data verified before DVC, no stale staging.

Called by :func:`benchmark.reproduce.reproduce` before any stage runs:

* :func:`run_lock`: a second ``make reproduce`` in the same clone (or on the same output root) stops at
  once with one line naming the first run's PID, instead of both runs fighting over DVC's lock and
  each losing stages. The lock is ``fcntl.flock`` on a file, so a killed run never leaves it held.
* :func:`check_datasets`: every dataset the run needs is verified against its pinned digests
  (:func:`modularity.data.load_arrays`) *before* DVC runs: DVC removes a stage's outputs before it runs
  the stage's command, so a corrupted ``data/datasets/mnist/x_test.npy`` would otherwise cost both
  checkpoint folders and then fail anyway.
* :func:`clean_stale_staging`: staging folders (``.<name>.staging-<pid>``) left by runs killed with
  SIGTERM or SIGKILL are removed when their process no longer exists.
* :func:`incomplete`: which stages failed (rather than being unavailable on this machine), for the
  exit status.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from modularity.errors import ModularityError

LOCK_NAME = "reproduce.lock"


@contextlib.contextmanager
def run_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` for the block; refuse with the holder's PID if it is taken."""
    import fcntl

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise ModularityError(f"another reproduce run (PID {holder}) is using this clone ({lock_path}); "
                                  "wait for it to finish or stop it, then run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_path_for(repo: Path, root: Path, use_dvc: bool) -> Path:
    """The clone's lock (``.dvc/tmp/reproduce.lock``) for DVC runs, else one per output root."""
    if use_dvc:
        return Path(repo) / ".dvc" / "tmp" / LOCK_NAME
    return Path(root) / f".{LOCK_NAME}"


def check_datasets(names: Iterable[str], root: Path | str | None = None) -> None:
    """Verify every prepared dataset in ``names`` against its pinned digests; raise naming the file.

    Datasets that are not prepared are left to the stages' own checks (they may be prepared or be
    unavailable on this machine, which the run reports as "not run").
    """
    from modularity.data import DATASETS, data_root, load_arrays

    for name in dict.fromkeys(names):
        if name not in DATASETS:
            continue
        if not (data_root(root) / "datasets" / name / "manifest.json").exists():
            continue
        try:
            load_arrays(name, root, prepare_missing=False, verify=True)
        except ModularityError as exc:
            raise ModularityError(f"{exc}; stopped before any stage ran (nothing was removed)") from None


def datasets_of(stages: Iterable[Any]) -> list[str]:
    """Datasets read by the stages (training and lesion stages of non-ImageNet tags)."""
    from modularity.models import tag_spec

    out = []
    for s in stages:
        spec = tag_spec(s.tag)
        if spec.family != "imagenet" and s.kind in ("train", "importance"):
            out.append(spec.dataset)
    return list(dict.fromkeys(out))


def clean_stale_staging(root: Path) -> list[Path]:
    """Remove staging folders of dead processes anywhere under ``root``; returns what was removed."""
    from modularity.utils import clean_stale_staging as clean_folder

    removed: list[Path] = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for folder, dirs, _files in os.walk(root):
        removed += clean_folder(folder)
        dirs[:] = [d for d in dirs if not d.startswith(".") or "staging-" not in d]
    return removed


def incomplete(failed: dict[str, str]) -> dict[str, str]:
    """The stages that ran and failed, or were blocked by one that did (their reason reads
    "stage <name> failed: ..."); not those this machine cannot run by design (no ImageNet images, no
    pretrained weights, a dataset that cannot be prepared here), which are reported as "not run" only."""
    return {name: reason for name, reason in failed.items() if reason.startswith("stage ") and " failed: " in reason}


_HELD: dict[Path, Any] = {}


class RunLock:
    """:func:`run_lock` taken for the rest of this process (or until :meth:`release`).

    Re-entrant within one process (a second ``reproduce()`` call in the same interpreter, as the tests
    make, reuses the lock); another process is refused. The kernel drops the lock when the process
    ends, however it ends.
    """

    def __init__(self, lock_path: Path) -> None:
        self.path = Path(lock_path).resolve()
        if self.path not in _HELD:
            cm = run_lock(self.path)
            cm.__enter__()
            _HELD[self.path] = cm

    def release(self) -> None:
        cm = _HELD.pop(self.path, None)
        if cm is not None:
            cm.__exit__(None, None, None)
