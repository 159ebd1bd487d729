"""One exception family for user errors.

The CLI turns a :class:`ModularityError` into a one-line message and a non-zero exit; anything else
is a programming error and keeps its traceback.
"""

from __future__ import annotations


class ModularityError(Exception):
    """A user-facing error: bad input, missing data, checksum mismatch, unsupported model."""


class DataError(ModularityError):
    """A dataset cannot be found, fetched or verified."""


class CheckpointError(ModularityError):
    """A checkpoint is missing, corrupt or does not match its metadata."""


class UnsupportedModelError(ModularityError):
    """A model, tag or layer type that this package does not know how to handle."""


class OutputError(ModularityError):
    """An output cannot be written: read-only or full disk, missing permission, a file where a folder is."""


def from_os_error(exc: OSError) -> OutputError:
    """An I/O failure as one line naming the path and the cause (``No space left on device: /out/x.csv``)."""
    import errno

    where = exc.filename if exc.filename is not None else None
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = {errno.ENOSPC: " (the disk is full)", errno.EDQUOT: " (disk quota exceeded)",
            errno.EROFS: " (read-only file system)", errno.EPERM: " (an immutable or protected file or folder?)",
            errno.EEXIST: " (a file is in the way of a folder?)", errno.ENOTDIR: " (a file is in the way of a folder)",
            }.get(exc.errno or -1, "")
    if exc.errno is None and "requested and" in reason and "written" in reason:
        hint = " (short write: is the disk full?)"
    target = f" {where}" if where else ""
    return OutputError(f"I/O error{target}: {' '.join(reason.split())}{hint}")
