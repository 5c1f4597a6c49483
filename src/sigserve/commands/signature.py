"""`sigserve signature`: edit a SavedModel's SignatureDefs in place (or in a copy), without TensorFlow."""

from __future__ import annotations

import argparse
import sys
from typing import Any

DESCRIPTION = """\
Edit the SignatureDefs of a SavedModel. Only saved_model.pb is rewritten (atomically,
deterministically); variables and assets are untouched; a stale fingerprint.pb is removed.

  # make a TF2 export servable by TF Serving's Classify API (what MethodNameUpdater does)
  sigserve signature set-method --dir /models/m/1 --key serving_default --method classify
  sigserve signature rename --dir D --key predict --new_key serving_default
  sigserve signature copy --dir D --key serving_default --new_key classify_v2
  sigserve signature delete --dir D --key train_step
  sigserve signature set-default --dir D --key classification --keep_old_as old_default
  # write an edited copy as a new version instead of editing in place
  sigserve signature set-method --dir /models/m/1 --output_dir /models/m/2 \\
      --key serving_default --method regress

--method takes predict | classify | regress, or the full method name (tensorflow/serving/...).
set-method warns when the API it names cannot serve the signature (as `sigserve validate` says).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "signature",
        help="edit SignatureDefs: set-method, rename, copy, delete, set-default",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_text, description=help_text)
        a.add_argument("--dir", required=True, help="SavedModel directory")
        a.add_argument("--key", required=True, help="signature key, e.g. serving_default")
        a.add_argument(
            "--tag_set",
            "--tag-set",
            dest="tag_set",
            help="comma-separated tag-set of the MetaGraph to edit (default: the only one)",
        )
        a.add_argument(
            "--output_dir",
            "--output-dir",
            dest="output_dir",
            help="copy the SavedModel here (must not exist or be empty) and edit the copy",
        )
        return a

    a = action("set-method", "set a signature's method_name")
    a.add_argument(
        "--method",
        required=True,
        type=_method,
        help="predict | classify | regress (or the full name, e.g. tensorflow/serving/classify)",
    )
    a = action("rename", "rename a signature")
    a.add_argument(
        "--new_key", "--new-key", dest="new_key", required=True, help="the new key, e.g. serving_default"
    )
    a = action("copy", "copy a signature under a new key")
    a.add_argument(
        "--new_key", "--new-key", dest="new_key", required=True, help="key of the copy, e.g. classify_v2"
    )
    action("delete", "delete a signature")
    a = action("set-default", "make a signature the default (serving_default becomes a copy of it)")
    a.add_argument(
        "--keep_old_as",
        "--keep-old-as",
        dest="keep_old_as",
        help="rename the previous serving_default to this key instead of replacing it",
    )


def _method(text: str) -> str:
    """`--method`, checked while parsing, so a typo is a usage error and nothing is written."""
    from sigserve.errors import SigserveError
    from sigserve.saved_model import editor

    try:
        return editor.serving_method_name(text)
    except SigserveError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def _edit(ed: Any, args: argparse.Namespace) -> str:
    """Apply the action to the editor's MetaGraph in memory; returns what was done."""
    key = args.key
    if args.action == "set-method":
        before = ed.signatures[key].method_name if key in ed.signatures else ""
        ed.set_method(key, args.method)
        return f"{key}: method_name {before or '(empty)'} -> {ed.meta_graph.signature_def[key].method_name}"
    if args.action == "rename":
        ed.rename(key, args.new_key)
        return f"renamed {key} -> {args.new_key}"
    if args.action == "copy":
        ed.copy(key, args.new_key)
        return f"copied {key} -> {args.new_key}"
    if args.action == "delete":
        ed.delete(key)
        return f"deleted {key}"
    ed.set_default(key, args.keep_old_as)
    kept = f" (previous default kept as {args.keep_old_as})" if args.keep_old_as else ""
    return f"serving_default is now a copy of {key}{kept}"


def _unservable_warning(ed: Any, key: str, method_name: str, export_dir: str) -> str | None:
    """What `sigserve validate` would say if the API the method names cannot serve the signature."""
    from sigserve.saved_model import signature_constants as sc
    from sigserve.saved_model import validate

    api = {sc.CLASSIFY_METHOD_NAME: "classify", sc.REGRESS_METHOD_NAME: "regress"}.get(method_name, "predict")
    verdict = validate.check_signature(key, ed.meta_graph.signature_def[key]).default[api]
    if verdict.ok:
        return None
    return (
        f"sigserve signature: warning: the {api.capitalize()} API cannot serve {key}: {verdict.reason} "
        f"(method_name set anyway; see sigserve validate --dir {export_dir})"
    )


def run(args: argparse.Namespace) -> int:
    from sigserve.saved_model import editor, loader

    tags = loader.parse_tag_set(args.tag_set) if args.tag_set is not None else None
    # Edit the source in memory first: a wrong key or tag-set fails before --output_dir is created.
    ed = editor.SavedModelEditor(args.dir, tags)
    what = _edit(ed, args)
    if args.output_dir:
        editor.copy_saved_model(args.dir, args.output_dir)
        ed = editor.SavedModelEditor(args.output_dir, tags)
        _edit(ed, args)
    if args.action == "set-method":
        warning = _unservable_warning(ed, args.key, args.method, ed.export_dir)
        if warning:
            print(warning, file=sys.stderr)
    wrote = ed.save()
    print(f"{what}; " + (f"wrote {ed.source.path}" if wrote else "nothing to change"))
    return 0
