"""`sigserve show`: what `saved_model_cli show` prints, without importing TensorFlow."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sigserve.errors import Code, SigserveError

DESCRIPTION = """\
Print a SavedModel's tag-sets, SignatureDefs and ops exactly as `saved_model_cli show` does, in
milliseconds and without TensorFlow.

  sigserve show --dir /models/half_plus_two/00000123                  # the tag-sets
  sigserve show --dir D --tag_set serve                               # the SignatureDef keys
  sigserve show --dir D --tag_set serve --signature_def serving_default
  sigserve show --dir D --signature_def serving_default               # the only tag-set's
  sigserve show --dir D --all                                         # everything

Differences from saved_model_cli: the ops line lists the op set sorted; the TF2 "Concrete
Functions" section of --all is derived from the SavedModel's object graph instead of by loading the
model with TensorFlow (same text for tf.Module and Keras exports; listed even where TensorFlow could
not load the model's custom ops).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "show",
        help="print a SavedModel's signatures like saved_model_cli show (no TensorFlow)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dir", required=True, help="SavedModel directory (holding saved_model.pb), or a URI: s3://b/m/1"
    )
    p.add_argument("--all", action="store_true", help="print every MetaGraph, signature and op")
    p.add_argument("--tag_set", "--tag-set", dest="tag_set", help="comma-separated tag-set, e.g. serve")
    p.add_argument(
        "--signature_def", "--signature-def", dest="signature_def", help="with --tag_set: one signature's I/O"
    )
    p.add_argument(
        "--list_ops", "--list-ops", dest="list_ops", action="store_true", help="with --tag_set: ops used"
    )


def _nonempty_tags(tag_set: str) -> str:
    tags = [t.strip() for t in tag_set.split(",") if t.strip()]
    if not tags:
        raise SigserveError(Code.INVALID_ARGUMENT, "tag_set must contain at least one non-empty item.")
    return ",".join(tags)


def _only_tag_set(saved_model: Any, flag: str) -> str:
    """The tag-set `flag` applies to when --tag_set is left out: the only one there is (where
    saved_model_cli ignores the flag and lists the tag-sets)."""
    tag_sets = [",".join(mg.meta_info_def.tags) for mg in saved_model.meta_graphs]
    if len(tag_sets) == 1 and tag_sets[0]:
        return tag_sets[0]
    shown = ", ".join(repr(t) for t in tag_sets) or "none"
    example = f" --tag_set {tag_sets[0]}" if tag_sets and tag_sets[0] else ""
    raise SigserveError(
        Code.INVALID_ARGUMENT,
        f"{flag} needs --tag_set: the SavedModel has {len(tag_sets)} tag-sets ({shown}); "
        f"choose one, e.g.{example or ' --tag_set serve'}",
    )


def render(args: argparse.Namespace) -> str:
    from sigserve import storage
    from sigserve.saved_model import loader, show

    with storage.local_dir(args.dir, only=storage.SAVED_MODEL_FILES) as export_dir:
        saved_model = loader.read_saved_model(export_dir)
    if args.all:
        return show.format_all(saved_model)
    if args.tag_set is None:
        if not (args.signature_def or args.list_ops):
            return show.format_tag_sets(saved_model)
        args.tag_set = _only_tag_set(saved_model, "--signature_def" if args.signature_def else "--list_ops")
    out = []
    if args.list_ops:
        meta_graph = loader.get_meta_graph_by_tag_set(saved_model, _nonempty_tags(args.tag_set))
        out.append(show.format_ops(meta_graph))
    if args.signature_def is None:
        meta_graph = loader.get_meta_graph_by_tag_set(saved_model, args.tag_set)
        out.append(show.format_signature_keys(meta_graph))
    else:
        meta_graph = loader.get_meta_graph_by_tag_set(saved_model, _nonempty_tags(args.tag_set))
        out.append(show.format_signature(meta_graph, args.signature_def))
    return "".join(out)


def write_stdout(text: str) -> None:
    """Write all output at once; a closed pipe (`| head`) is not an error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run(args: argparse.Namespace) -> int:
    write_stdout(render(args))
    return 0
