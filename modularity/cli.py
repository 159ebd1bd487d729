"""``python -m modularity <command>``: train | cluster | importance | coherence | data.

The parsers of every sub-command live in :mod:`modularity.commands`, which imports no torch: ``--help``
and an option the parser refuses answer in a fraction of a second, and each command's module (which
does import torch) is imported only once the arguments have parsed. User errors become one line on
stderr and exit status 2: a :class:`ModularityError` (bad input, checked before any work), an argument
the parser refuses, an I/O failure (full or read-only disk, missing permission: ``OSError``) or memory
exhausted. Anything else is a programming error and keeps its traceback.

Every command runs inside :func:`modularity.utils.staged_outputs`: its files are written into hidden
``.staging-<pid>`` folders and renamed into place together at the end, so a failure half-way leaves
the previous complete outputs (or nothing), never a mix.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from .commands import COMMANDS, add_commands
from .errors import ModularityError, from_os_error

__all__ = ["COMMANDS", "OneLineParser", "build_parser", "main"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a refused argument is one line (``prog: error: ... (see prog --help)``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


DEVICES = ("auto", "cpu", "cuda")


def build_parser() -> argparse.ArgumentParser:
    """The parser of the global options and every sub-command (torch-free)."""
    parser = OneLineParser(prog="python -m modularity", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="torch intra-op threads (default: torch's choice). On a small machine that "
                             "runs other jobs, 1 is often fastest: a thread waiting for a busy core stalls "
                             "every small operation (lesions ran ~4x slower with 2 threads here)")
    parser.add_argument("--device", choices=DEVICES, default=None,
                        help="where tensors run (default: $MODULARITY_DEVICE, else CUDA when available)")
    parser.add_argument("--no-progress", dest="global_no_progress", action="store_true",
                        help="no progress bars (also: MODULARITY_PROGRESS=0; bars are off when stderr is not a terminal)")
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser))
    return parser


def _apply_globals(args: argparse.Namespace) -> None:
    """``--device`` and ``--no-progress`` act through the environment the library reads."""
    import os

    if args.global_no_progress:
        os.environ["MODULARITY_PROGRESS"] = "0"
    if args.device == "auto":
        os.environ.pop("MODULARITY_DEVICE", None)
    elif args.device is not None:
        if args.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ModularityError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
        os.environ["MODULARITY_DEVICE"] = args.device


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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)  # every option checked before torch is imported
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    _terminate_cleanly()
    try:
        _apply_globals(args)
        from .utils import staged_outputs

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
