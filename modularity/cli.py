"""``python -m modularity <command>``: train | cluster | importance | coherence | data.

Each step's module owns its sub-command through a ``add_cli(subparsers)`` function that registers a
parser whose ``func`` default takes the parsed arguments. User errors become one line on stderr and
exit status 2: a :class:`ModularityError` (bad input, checked before any work), an argument the parser
refuses, an I/O failure (full or read-only disk, missing permission: ``OSError``) or memory exhausted.
Anything else is a programming error and keeps its traceback.

Every command runs inside :func:`modularity.utils.staged_outputs`: its files are written into hidden
``.staging-<pid>`` folders and renamed into place together at the end, so a failure half-way leaves
the previous complete outputs (or nothing), never a mix.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import NoReturn

from .errors import ModularityError, from_os_error

# Modules that contribute sub-commands, in the order they appear in ``--help``.
COMMAND_MODULES = (
    "modularity.data",
    "modularity.train",
    "modularity.partition",
    "modularity.importance",
    "modularity.visualize",
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a refused argument is one line (``prog: error: ... (see prog --help)``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m modularity", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="torch intra-op threads (default: torch's choice). On a small machine that "
                             "runs other jobs, 1 is often fastest: a thread waiting for a busy core stalls "
                             "every small operation (lesions ran ~4x slower with 2 threads here)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMAND_MODULES:
        import_module(name).add_cli(sub)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fail(message: str) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def _terminate_cleanly() -> None:
    """SIGTERM ends the command like an interrupt (exit 143), so its staging folders are removed."""
    import signal
    import threading

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    from .utils import staged_outputs

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    _terminate_cleanly()
    try:
        with staged_outputs():
            result = args.func(args)
    except ModularityError as exc:
        return _fail(str(exc))
    except OSError as exc:  # a writer's I/O failure: disk full, read-only, permissions, a file in the way
        return _fail(str(from_os_error(exc)))
    except MemoryError as exc:
        return _fail(f"out of memory{': ' + str(exc) if str(exc) else ''}; use smaller sizes")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
