"""One progress bar for every long loop of the library and the command line (tqdm).

A bar is shown only when it helps a person watching: it is off when ``progress=False`` is passed,
when the environment sets ``MODULARITY_PROGRESS=0`` (what the command line's ``--no-progress``
does), and when stderr is not a terminal (logs, CI, pipelines). ``MODULARITY_PROGRESS=1`` forces
bars on even without a terminal. Bars write to stderr, so stdout stays the command's result.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "MODULARITY_PROGRESS"
_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")


def enabled(progress: bool | None = None) -> bool:
    """Whether to draw a bar: the caller's ``progress`` (None = yes), then the environment, then the terminal."""
    if progress is False:
        return False
    env = os.environ.get(ENV, "").strip().lower()
    if env in _OFF:
        return False
    if env in _ON:
        return True
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def bar(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None, unit: str = "it",
        progress: bool | None = None, leave: bool = False, **kw: Any) -> Any:
    """A ``tqdm`` bar over ``iterable`` (or a manual one with ``total``), disabled as :func:`enabled` says.

    A disabled bar is a ``tqdm`` with ``disable=True``: iterating it and calling ``update`` /
    ``set_postfix`` cost nothing and print nothing.
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=not enabled(progress),
                dynamic_ncols=True, file=sys.stderr, **kw)


def track(iterable: Iterable[T], desc: str = "", total: int | None = None, unit: str = "it",
          progress: bool | None = None) -> Iterator[T]:
    """Iterate ``iterable`` under a bar (see :func:`bar`)."""
    yield from bar(iterable, desc=desc, total=total, unit=unit, progress=progress)
