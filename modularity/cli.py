"""``python -m modularity <command>``: train | cluster | importance | coherence | data.

Each step's module owns its sub-command through a ``add_cli(subparsers)`` function that registers a
parser whose ``func`` default takes the parsed arguments. User errors (:class:`ModularityError`)
become a one-line message on stderr and exit status 2; nothing half-written is left behind because
every writer in the package writes atomically.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from .errors import ModularityError

# Modules that contribute sub-commands, in the order they appear in ``--help``.
COMMAND_MODULES = (
    "modularity.data",
    "modularity.train",
    "modularity.partition",
    "modularity.importance",
    "modularity.visualize",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modularity", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="torch intra-op threads (default: torch's choice). On a small machine that "
                             "runs other jobs, 1 is often fastest: a thread waiting for a busy core stalls "
                             "every small operation (lesions ran ~4x slower with 2 threads here)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        import_module(name).add_cli(sub)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        result = args.func(args)
    except ModularityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
