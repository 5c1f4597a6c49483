"""`sigserve validate`: per signature, whether TF Serving can serve it by Predict, Classify or Regress."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
For every SignatureDef: can TF Serving serve it through Predict, Classify and Regress, and if not,
TF Serving's reason. Checks run as TF Serving does by default (--enable_signature_method_name_check
off); a different verdict with the check on is shown in parentheses.

  sigserve validate --dir /models/half_plus_two/00000123
  sigserve validate --dir D --tag_set serve --method_name_check

Exit status: 0 when every signature (other than the reserved __saved_model_init_op /
__saved_model_train_op) is servable by at least one API and there is at least one; 1 otherwise.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate",
        help="which signatures TF Serving can serve by Predict/Classify/Regress, and why not",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dir", required=True, help="SavedModel directory, or a URI: s3://bucket/m/1")
    p.add_argument("--tag_set", "--tag-set", dest="tag_set", help="only this tag-set, e.g. serve")
    p.add_argument(
        "--method_name_check",
        "--method-name-check",
        dest="method_name_check",
        action="store_true",
        help="judge as a server run with --enable_signature_method_name_check",
    )


def run(args: argparse.Namespace) -> int:
    from sigserve import storage
    from sigserve.commands.show import write_stdout
    from sigserve.saved_model import loader, validate

    with storage.local_dir(args.dir, only=storage.SAVED_MODEL_FILES) as export_dir:
        saved_model = loader.read_saved_model(export_dir)
    if args.tag_set is not None:
        meta_graphs = [loader.get_meta_graph_by_tag_set(saved_model, args.tag_set)]
    else:
        meta_graphs = list(saved_model.meta_graphs)
    chunks = []
    ok = True
    for meta_graph in meta_graphs:
        reports = validate.check_meta_graph(meta_graph)
        servable = [r for r in reports if not r.reserved]
        ok = ok and bool(servable) and all(r.servable(args.method_name_check) for r in servable)
        chunks.append(
            validate.format_reports(
                list(meta_graph.meta_info_def.tags), reports, args.dir, args.method_name_check
            )
        )
    write_stdout("\n".join(chunks))
    return 0 if ok else 1
