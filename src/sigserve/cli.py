"""`sigserve` command line. Each subcommand lives in `sigserve.commands.<name>` and exposes
`add_parser(subparsers)` and `run(args) -> int`. Command modules import nothing heavy at module level,
so `sigserve show` starts in milliseconds; TensorFlow is imported only by commands that run models.

Flags are exact, as TF Serving's are: argparse's prefix matching is off (`--model_base` is not
`--model_base_path`), and a flag a command does not know is reported with that command's usage and
the nearest flag it does know.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from sigserve import __version__
from sigserve.errors import SigserveError

# Order is the order shown in --help.
COMMANDS = ("show", "signature", "validate", "run", "serve", "predict", "score", "warmup")


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations; subparsers (and theirs) are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices  # type: ignore[return-value]
    return {}


def _chosen_parser(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of the (sub)subcommand named in `argv` (e.g. `signature rename`'s) and the
    arguments after its name. Commands are the leading words: no top-level flag takes a value."""
    rest = list(argv)
    while True:
        choices = _subparsers(parser)
        if not choices or not rest or rest[0] not in choices:
            return parser, rest
        parser, rest = choices[rest[0]], rest[1:]


def check_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Usage errors argparse reports badly, reported with the chosen command's usage:

    - a flag the command does not know (argparse shows the top-level usage, or hides it behind "the
      following arguments are required"), with the nearest flag it knows;
    - a flag before the (sub)command's name, or a misspelt name, with the nearest name.
    """
    leaf, rest = _chosen_parser(parser, argv)
    if rest and rest[0] in ("-h", "--help", "--version"):
        return
    choices = _subparsers(leaf)
    if choices:
        names = ", ".join(choices)
        if rest and rest[0].startswith("-"):
            leaf.error(f"{rest[0]} goes after the command: {leaf.prog} {{{names}}} {rest[0]} ...")
        if rest:
            close = difflib.get_close_matches(rest[0], list(choices), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            leaf.error(f"unknown command {rest[0]!r}: choose one of {names}{hint}")
        return  # none given: argparse or main says what to do
    known = [s for a in leaf._actions for s in a.option_strings]
    long_known = [s for s in known if s.startswith("--")]
    unknown, hints = [], []
    for arg in rest:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--") or flag == "--" or flag in known:
            continue
        unknown.append(arg)
        close = [k for k in long_known if k.startswith(flag)][:1]  # what abbreviation used to allow
        close = close or difflib.get_close_matches(flag, long_known, n=1, cutoff=0.6)
        if close:
            hints.append(f"{flag}: did you mean {close[0]}?")
    if unknown:
        leaf.error("unrecognized arguments: " + " ".join(unknown) + "".join("\n" + h for h in hints))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    check_args(parser, argv)
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
