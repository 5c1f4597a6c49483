"""`sigserve score`: batch-score a data set with a signature of a SavedModel on Ray Data
(`sigserve.integrations.ray_data`; needs `pip install 'sigserve[ray]'`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sigserve.errors import Code, SigserveError

DESCRIPTION = """\
Score every row of a data set with one signature of a SavedModel, on a Ray actor pool (each actor
loads the model once), and write the results next to the rows' keys. The numbers are the server's:
the same runtime runs the same signature.

  sigserve score --model_base_path /models/m --signature_def serving_default \\
      --input data.parquet --output scored.parquet
  sigserve score --model_base_path /models/m --signature_def classify \\
      --input 'examples/*.tfrecord' --output scored.parquet     # keys: file, record
  sigserve score --dir /models/m/3 --signature_def serving_default --input x.npy --output y.parquet
  sigserve score ... --ray-address ray://head:10001             # on a cluster

Inputs: parquet, CSV, JSON lines, .npy (one array; rows in order) or TFRecords of tf.train.Example
(for Classify/Regress signatures). Input alias A reads column A (--input_map A=COL to change it);
list and fixed-size-list columns feed higher-rank tensors. Every other column is a key, carried
next to the results (--keys to choose). Results: one column per output alias (predict),
classes/scores (classify) or outputs (regress). --output is a directory of parquet (or CSV/JSON)
files, as Ray and Spark write them: pandas.read_parquet(PATH) reads it whole.
"""


def _pairs(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        alias, sep, column = part.partition("=")
        if not sep or not alias or not column:
            raise argparse.ArgumentTypeError(f"expected ALIAS=COLUMN[,ALIAS=COLUMN], got {part!r}")
        out[alias] = column
    return out


def _names(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "score",
        help="batch-score a data set with a signature, on Ray Data (pip install 'sigserve[ray]')",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--model_base_path", help="TF Serving base path with numbered versions; the highest is used"
    )
    model.add_argument("--dir", help="one SavedModel directory (the one holding saved_model.pb)")
    p.add_argument("--model_version", type=int, help="with --model_base_path: this version, not the highest")
    p.add_argument(
        "--signature_def",
        "--signature-def",
        dest="signature_def",
        default="serving_default",
        help="signature key to run (default serving_default)",
    )
    p.add_argument(
        "--tag_set", "--tag-set", dest="tag_set", default="serve", help="comma-separated (default serve)"
    )
    p.add_argument(
        "--method",
        choices=("predict", "classify", "regress"),
        help="API to run the signature with (default: its method_name's; TF2 exports are predict)",
    )
    p.add_argument("--input", required=True, help="file, directory or glob")
    p.add_argument(
        "--input_format",
        "--input-format",
        dest="input_format",
        choices=("parquet", "csv", "json", "numpy", "tfrecords"),
        help="default: from --input's extension (.parquet, .csv, .json/.jsonl, .npy, .tfrecord)",
    )
    p.add_argument("--output", required=True, help="directory to write (format from its extension)")
    p.add_argument(
        "--output_format",
        "--output-format",
        dest="output_format",
        choices=("parquet", "csv", "json"),
        help="default: from --output's extension, else parquet",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument("--input_map", "--input-map", dest="input_map", type=_pairs, help="x=col,y=col2")
    p.add_argument("--outputs", type=_names, help="only these outputs, e.g. y,label")
    p.add_argument(
        "--keys", type=_names, help="columns carried next to the results (default: all non-inputs)"
    )
    p.add_argument(
        "--batch_size",
        "--batch-size",
        dest="batch_size",
        type=int,
        default=1024,
        help="rows per call (default 1024)",
    )
    p.add_argument(
        "--actors", type=int, default=0, help="model replicas (default 0: 1 up to CPUs/--cpus_per_actor)"
    )
    p.add_argument(
        "--cpus_per_actor",
        "--cpus-per-actor",
        dest="cpus_per_actor",
        type=float,
        default=1.0,
        help="CPUs each actor reserves; TensorFlow threads (default 1)",
    )
    p.add_argument(
        "--threads_per_actor",
        "--threads-per-actor",
        dest="threads_per_actor",
        type=int,
        default=0,
        help="TensorFlow intra/inter-op threads per actor (default 0: --cpus_per_actor rounded up)",
    )
    p.add_argument(
        "--preserve_order",
        "--preserve-order",
        dest="preserve_order",
        action="store_true",
        help="write rows in input order (slower)",
    )
    p.add_argument(
        "--ray_address",
        "--ray-address",
        dest="ray_address",
        help="Ray cluster to run on (default: a local Ray; RAY_ADDRESS also works)",
    )
    p.add_argument(
        "--no_progress", "--no-progress", dest="no_progress", action="store_true", help="no progress bar"
    )


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.cpus_per_actor <= 0 or args.actors < 0 or args.threads_per_actor < 0:
        raise SigserveError(
            Code.INVALID_ARGUMENT,
            "--batch_size and --cpus_per_actor must be positive, --actors and --threads_per_actor >= 0",
        )
    try:
        import ray

        from sigserve.integrations import ray_data, scoring
    except ImportError as e:
        raise SigserveError(
            Code.FAILED_PRECONDITION,
            f"sigserve score needs Ray ({e}); install it: pip install 'sigserve[ray]'",
        ) from None
    if args.model_base_path:
        version, export_dir = scoring.resolve_export_dir(args.model_base_path, args.model_version)
        print(f"sigserve score: version {version} of {args.model_base_path}", file=sys.stderr)
    else:
        if args.model_version is not None:
            raise SigserveError(
                Code.INVALID_ARGUMENT, "--model_version goes with --model_base_path, not --dir"
            )
        export_dir = args.dir
    tags = tuple(t.strip() for t in args.tag_set.split(",") if t.strip())
    ray_data.check_output(args.output, args.overwrite)
    scoring.read_signature(export_dir, args.signature_def, tags)  # fails fast, before Ray starts
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=args.ray_address, log_to_driver=False, include_dashboard=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = not args.no_progress
        report = ray_data.score(
            export_dir=export_dir,
            signature_name=args.signature_def,
            input=args.input,
            output=args.output,
            input_format=args.input_format,
            output_format=args.output_format,
            method=args.method,
            input_map=args.input_map,
            outputs=args.outputs,
            keys=args.keys,
            tags=tags,
            actors=args.actors,
            cpus_per_actor=args.cpus_per_actor,
            threads_per_actor=args.threads_per_actor,
            batch_size=args.batch_size,
            preserve_order=args.preserve_order,
            overwrite=args.overwrite,
        )
    except Exception as e:
        cause = _sigserve_cause(e)
        if cause is None:
            raise
        raise cause from None
    finally:
        if started_ray:
            ray.shutdown()
    plan = report.plan
    print(
        f"sigserve score: {plan.method} {plan.signature_name} -> {report.output} ({report.output_format}: "
        f"{', '.join((*plan.keys, *plan.outputs))}) in {report.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0


def _sigserve_cause(error: BaseException) -> SigserveError | None:
    """The SigserveError behind Ray's wrappers (a worker's error reaches the driver wrapped)."""
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, SigserveError) and type(current) is SigserveError:
            return current
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else current.__cause__ or current.__context__
    if isinstance(error, SigserveError):
        return SigserveError(error.code, error.message)
    return None
