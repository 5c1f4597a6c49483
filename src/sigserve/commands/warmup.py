"""`sigserve warmup build`: a version's `assets.extra/tf_serving_warmup_requests` from request logs."""

from __future__ import annotations

import argparse
import glob
import os
import sys

DESCRIPTION = """\
Write a SavedModel version's warmup file (assets.extra/tf_serving_warmup_requests, TF Serving's
format) from the request logs a server wrote with logging_config: real requests, every request
shape once before any twice, checked against that version's signatures.

  sigserve warmup build --from '/var/log/sigserve/m-*' --model_base_path /models/m --version 8

Build it before the version appears in the base path the server watches (or the server loads it
cold): export to a staging directory, build, then move the version in. --check (on by default when
TensorFlow is installed) loads the version and replays the file exactly as the server does.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "warmup",
        help="build a version's warmup requests file from request logs",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="warmup_command", metavar="COMMAND", required=True)
    b = sub.add_parser(
        "build",
        help="write <model_base_path>/<version>/assets.extra/tf_serving_warmup_requests",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "--from",
        dest="sources",
        nargs="+",
        required=True,
        metavar="FILE",
        help="request log files (TFRecord or JSON lines; shell-style patterns are expanded)",
    )
    b.add_argument("--model_base_path", required=True, help="the model's base path, e.g. /models/m")
    b.add_argument("--version", type=int, required=True, help="the version to warm up, e.g. 8")
    b.add_argument(
        "--model_name", default="", help="only calls of this model (needed when the logs hold several)"
    )
    b.add_argument(
        "--max", type=int, default=1000, help="most records to write (default and TF Serving's limit 1000)"
    )
    b.add_argument("--saved_model_tags", default="serve", help="MetaGraph tags to read (default serve)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing warmup file")
    b.add_argument(
        "--check",
        choices=("auto", "true", "false"),
        default="auto",
        help="load the version with TensorFlow and replay the file as the server would "
        "(auto: when TensorFlow is installed)",
    )


def _expand(sources: list[str]) -> list[str]:
    from sigserve.errors import invalid_argument

    paths: list[str] = []
    for source in sources:
        matches = sorted(glob.glob(source)) if glob.has_magic(source) else [source]
        if not matches:
            raise invalid_argument(f"--from {source} matches no file")
        paths.extend(matches)
    return paths


def _find_version_dir(base_path: str, version: int) -> str:
    """The version's directory: `<base>/<N>` or a zero-padded name such as `<base>/00000123`."""
    from sigserve.errors import not_found

    if os.path.isdir(base_path):
        for name in sorted(os.listdir(base_path)):
            if name.isdigit() and int(name) == version and os.path.isdir(os.path.join(base_path, name)):
                return os.path.join(base_path, name)
    raise not_found(
        f"No version {version} under {base_path} (expected a directory such as {base_path}/{version})"
    )


def _tensorflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def run(args: argparse.Namespace) -> int:
    from sigserve.requestlog import warmup

    export_dir = _find_version_dir(args.model_base_path, args.version)
    tags = [t.strip() for t in args.saved_model_tags.split(",") if t.strip()]
    report = warmup.build(
        _expand(args.sources),
        export_dir,
        model_name=args.model_name,
        max_records=args.max,
        overwrite=args.overwrite,
        tags=tags,
    )
    print(
        f"Wrote {report.written} warmup record(s) ({report.shapes} distinct request shape(s), "
        f"from {report.read} logged call(s)) to {report.path}"
    )
    for reason, count in report.skipped.most_common():
        print(f"  left out {count}: {reason}")
    check = args.check == "true" or (args.check == "auto" and _tensorflow_installed())
    if not check:
        if args.check == "auto":
            print("Not replayed: TensorFlow is not installed (pip install 'sigserve[tensorflow]')")
        return 0
    from sigserve import runtime
    from sigserve.manager import warmup as server_warmup

    servable = runtime.load(export_dir, tags, name=args.model_name, version=args.version)
    try:
        replayed = server_warmup.run_warmup(servable, export_dir)
    except Exception:
        os.replace(report.path, report.path + ".rejected")
        print(
            f"The server would fail this version's load on it; moved it to {report.path}.rejected",
            file=sys.stderr,
        )
        raise
    finally:
        servable.close()
    print(f"Replayed {replayed} record(s) as the server does at load: the version loads warm")
    return 0
