"""`sigserve` command line. Each subcommand lives in `sigserve.commands.<name>` and exposes
`add_parser(subparsers)` and `run(args) -> int`. Command modules import nothing heavy at module level,
so `sigserve show` starts in milliseconds; TensorFlow is imported only by commands that run models.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sigserve import __version__
from sigserve.errors import SigserveError

# Order is the order shown in --help.
COMMANDS = ("show", "signature", "validate", "run", "serve", "predict", "warmup")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigserve",
        description="SavedModel signatures, served: inspect, edit and serve TensorFlow SavedModels "
        "with TensorFlow Serving's REST and gRPC APIs.",
    )
    parser.add_argument("--version", action="version", version=f"sigserve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"sigserve.commands.{name}")
        except ModuleNotFoundError as e:  # a command not built yet
            if e.name != f"sigserve.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(f"sigserve.commands.{args.command}")
    try:
        return int(module.run(args) or 0)
    except SigserveError as e:
        print(f"sigserve {args.command}: error: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
