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
