"""Small shared helpers: device choice, seeding, atomic and staged writes."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import numerics

numerics.configure_torch()


def default_device() -> torch.device:
    """The one place that picks a device: CUDA when available, else the CPU."""
    if os.environ.get("MODULARITY_DEVICE"):
        return torch.device(os.environ["MODULARITY_DEVICE"])
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG and return a dedicated generator for data order."""
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def rng_for(seed: int, *keys: int | str) -> np.random.Generator:
    """A NumPy generator derived from ``seed`` and a stage key, so stages never share streams.

    String keys are hashed to stable integers, so ``rng_for(0, "lesion", 3)`` is the same on every
    machine and adding a stage does not shift another stage's draws.
    """
    ints = [k if isinstance(k, int) else int.from_bytes(hashlib.sha256(k.encode()).digest()[:4], "little") for k in keys]
    return np.random.default_rng(np.random.SeedSequence([seed, *ints]))


# --------------------------------------------------------------------------------------------------
# Atomic writes, and staged outputs: all the files of one command appear together or not at all

STAGING_PREFIX = ".staging-"
_STALE = re.compile(r"^\.(?:.+\.)?staging-(\d+)$")  # .staging-<pid> (here) and .<name>.staging-<pid> (benchmark)


@dataclass
class _Staged:
    """The writes of one :func:`staged_outputs` block: final path -> staged file, folders it created."""

    pending: dict[Path, Path] = field(default_factory=dict)
    staging_dirs: list[Path] = field(default_factory=list)
    created_dirs: list[Path] = field(default_factory=list)


_ACTIVE: contextvars.ContextVar[_Staged | None] = contextvars.ContextVar("modularity_staged", default=None)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine (a reused PID counts as alive: safe side)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_staging(folder: str | Path) -> list[Path]:
    """Remove ``.staging-<pid>`` (and ``.<name>.staging-<pid>``) folders of processes that no longer run.

    A run killed by SIGKILL (or SIGTERM before Python's cleanup) leaves its staging folder behind; the
    next write into the same folder removes it. Folders of live processes are left alone. Returns what
    was removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _STALE.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass  # e.g. a read-only folder: nothing to do about it here
    return removed


def _mkdirs(folder: Path, staged: _Staged | None) -> None:
    """``mkdir -p``, remembering (inside a staged block) which folders it created."""
    missing = []
    probe = folder
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    if staged is not None:
        staged.created_dirs.extend(reversed(missing))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only if the block succeeds.

    Inside :func:`staged_outputs` the file is written into ``<folder>/.staging-<pid>/`` instead and is
    renamed into place only when the whole staged block succeeds.
    """
    path = Path(path)
    staged = _ACTIVE.get()
    _mkdirs(path.parent, staged)
    clean_stale_staging(path.parent)
    if staged is not None:
        staging = path.parent / f"{STAGING_PREFIX}{os.getpid()}"
        if staging not in staged.staging_dirs:
            staging.mkdir(exist_ok=True)
            staged.staging_dirs.append(staging)
        tmp_path = staging / path.name
        try:
            yield tmp_path
        except OSError as exc:
            tmp_path.unlink(missing_ok=True)
            raise _named(exc, path) from None
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        if not tmp_path.exists():
            raise FileNotFoundError(f"nothing was written to {tmp_path}")
        staged.pending[path] = tmp_path
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    _usual_permissions(tmp)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as exc:
            raise _named(exc, path) from None
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _named(exc: OSError, path: Path) -> OSError:
    """The same I/O error, naming the file being written when the OS did not (a full disk on write())."""
    if exc.filename is not None:
        return exc
    if exc.errno is not None:
        return type(exc)(exc.errno, exc.strerror or str(exc), str(path))
    return OSError(f"{exc} (writing {path})")


def _usual_permissions(path: str | Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions


@contextlib.contextmanager
def staged_outputs() -> Iterator[None]:
    """Make every :func:`atomic_path` write inside the block part of one unit.

    Files are written into hidden ``.staging-<pid>`` folders next to their targets and renamed into
    place together when the block ends without an exception; on an exception (a full disk half-way,
    an interrupt) the staging folders are removed, so the previous complete outputs stay (or nothing,
    if there were none) and output folders the block created are removed again if empty. The final
    renames are the only step that is not all-or-nothing; they allocate no data, so they do not fail on
    a full disk. Nested blocks join the outer one. The CLI runs every command in one block.
    """
    if _ACTIVE.get() is not None:
        yield
        return
    staged = _Staged()
    token = _ACTIVE.set(staged)
    try:
        yield
    except BaseException:
        _ACTIVE.reset(token)
        _discard(staged)
        raise
    _ACTIVE.reset(token)
    try:
        for final, tmp in staged.pending.items():
            _usual_permissions(tmp)
            os.replace(tmp, final)
    finally:
        _discard(staged, keep_created=True)


def _discard(staged: _Staged, keep_created: bool = False) -> None:
    for folder in staged.staging_dirs:
        shutil.rmtree(folder, ignore_errors=True)
    if not keep_created:
        for folder in reversed(staged.created_dirs):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty


@contextlib.contextmanager
def unstaged() -> Iterator[None]:
    """Inside the block, :func:`atomic_path` writes immediately again (for writers with their own
    all-or-nothing scheme, such as dataset preparation's staging folder)."""
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def staged_path(path: str | Path) -> Path:
    """Where ``path`` can be read now: its staged copy inside a :func:`staged_outputs` block, else itself."""
    staged = _ACTIVE.get()
    path = Path(path)
    if staged is not None and path in staged.pending:
        return staged.pending[path]
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON (sorted keys, indented) atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
