"""`sigserve run`: run one signature of a SavedModel on inputs from the command line, like
`saved_model_cli run` (savedmodel.md §5.4), through sigserve's runtime (TF Serving's semantics).

Expressions are read with `ast.literal_eval` only: nothing on the command line is executed.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from sigserve.errors import Code, SigserveError

DESCRIPTION = """\
Run a SignatureDef of a SavedModel and print (or save) its outputs, as `saved_model_cli run` does.

  sigserve run --dir /models/half_plus_two/00000123 --signature_def serving_default \\
      --input_exprs 'x=[[1.0],[2.0]]'
  sigserve run --dir D --signature_def serving_default --inputs 'x=x.npy;y=data.npz[y]'
  sigserve run --dir D --signature_def regress_x_to_y --input_examples 'inputs=[{"x":[80.0]}]'
  sigserve run --dir D --signature_def serving_default --input_exprs 'x=[[1.0]]' --outdir out/

--input_examples overrides --input_exprs, which overrides --inputs, for the same key. Outputs are
printed in sorted key order ("Result for output key y:"), or saved as <outdir>/<key>.npy.
"""

_INPUT_FILE = re.compile(r"^([^=]+)=([^\[\]]+)\[([^\[\]]+)\]$|^([^=]+)=([^\[\]]+)$")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a signature on command-line inputs, like saved_model_cli run (uses TensorFlow)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dir", required=True, help="SavedModel directory (holding saved_model.pb), or a URI: s3://b/m/1"
    )
    p.add_argument(
        "--tag_set",
        "--tag-set",
        dest="tag_set",
        default="serve",
        help="comma-separated tag-set (default: serve)",
    )
    p.add_argument(
        "--signature_def",
        "--signature-def",
        dest="signature_def",
        required=True,
        help="signature key to run, e.g. serving_default",
    )
    p.add_argument("--inputs", default="", help="'key=file.npy;key2=file.npz[name]' (np.load)")
    p.add_argument(
        "--input_exprs",
        "--input-exprs",
        dest="input_exprs",
        default="",
        help="'key=[[1.0],[2.0]]' (Python literals)",
    )
    p.add_argument(
        "--input_examples",
        "--input-examples",
        dest="input_examples",
        default="",
        help="""'inputs=[{"x":[1.0],"label":["a"]}]' (list of dicts of lists → serialized tf.Examples)""",
    )
    p.add_argument("--outdir", help="save each output as <outdir>/<key>.npy instead of printing it")
    p.add_argument("--overwrite", action="store_true", help="with --outdir: replace existing .npy files")
    p.add_argument(
        "--allow_pickle",
        "--allow-pickle",
        dest="allow_pickle",
        action="store_true",
        help="let --inputs load pickled object arrays (only for files you trust)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's C++ log lines, hidden by default (same as TF_CPP_MIN_LOG_LEVEL=0)",
    )


def _bad(message: str) -> SigserveError:
    return SigserveError(Code.INVALID_ARGUMENT, message)


def _entries(text: str) -> list[str]:
    return [part for part in text.split(";") if part.strip()]


def parse_inputs_arg(text: str) -> dict[str, tuple[str, str | None]]:
    """`k=file.npy;k2=file.npz[var]` → {key: (filename, variable or None)}."""
    out: dict[str, tuple[str, str | None]] = {}
    for entry in _entries(text):
        match = _INPUT_FILE.match(entry.strip())
        if not match:
            raise _bad(
                f'--inputs "{entry}" format is incorrect. Please follow"<input_key>=<filename>", '
                'or"<input_key>=<filename>[<variable_name>]"'
            )
        if match.group(1) is not None:
            out[match.group(1)] = (match.group(2), match.group(3))
        else:
            out[match.group(4)] = (match.group(5), None)
    return out


def _split_key(entry: str, flag: str, example: str) -> tuple[str, str]:
    key, sep, value = entry.partition("=")
    if not sep or not key.strip():
        raise _bad(
            f'{flag} "{entry}" format is incorrect. Please follow "<input_key>=<value>", e.g. {example}'
        )
    return key.strip(), value


def parse_input_exprs_arg(text: str) -> dict[str, Any]:
    """`k=[[1.0]];k2=3` → Python values, by `ast.literal_eval` (never eval)."""
    out: dict[str, Any] = {}
    for entry in _entries(text):
        key, expr = _split_key(entry, "--input_exprs", "x=[[1.0],[2.0]]")
        try:
            out[key] = ast.literal_eval(expr.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise _bad(f'Expression "{expr}" is not a valid python literal.') from None
    return out


def _feature(name: str, values: Any) -> Any:
    from sigserve.protos import feature_pb2

    if not isinstance(values, list):
        raise _bad(f'feature value must be a list, but {name}: "{values}" is {type(values)}')
    feature = feature_pb2.Feature()
    if not values:
        return feature
    first = values[0]
    try:
        if isinstance(first, float):
            feature.float_list.value.extend(values)
        elif isinstance(first, str):
            feature.bytes_list.value.extend(v.encode("utf-8") for v in values)
        elif isinstance(first, bytes):
            feature.bytes_list.value.extend(values)
        elif isinstance(first, int):
            feature.int64_list.value.extend(values)
        else:
            raise _bad(f"Type {type(first)} for value {first} is not supported for tf.train.Feature.")
    except (TypeError, ValueError, AttributeError) as e:
        raise _bad(
            f"feature {name}: all values must have the type of the first one ({first!r}): {e}"
        ) from None
    return feature


def parse_input_examples_arg(text: str) -> dict[str, Any]:
    """`inputs=[{"x":[1.0]}]` → {key: 1-D object array of serialized tf.Examples}."""
    import numpy as np

    from sigserve.protos import example_pb2

    out: dict[str, Any] = {}
    for entry in _entries(text):
        key, expr = _split_key(entry, "--input_examples", 'inputs=[{"x":[1.0]}]')
        try:
            dicts = ast.literal_eval(expr.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise _bad(f'Expression "{expr}" is not a valid python literal.') from None
        if not isinstance(dicts, list) or not all(isinstance(d, dict) for d in dicts):
            raise _bad(f'tf.Example input must be a list of dictionaries, but "{dicts}" is {type(dicts)}')
        serialized = np.empty(len(dicts), dtype=object)
        for i, features in enumerate(dicts):
            example = example_pb2.Example()
            for name, values in features.items():
                example.features.feature[str(name)].CopyFrom(_feature(str(name), values))
            serialized[i] = example.SerializeToString()
        out[key] = serialized
    return out


def load_input_files(files: Mapping[str, tuple[str, str | None]], allow_pickle: bool) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {}
    for key, (filename, variable) in files.items():
        try:
            loaded = np.load(filename, allow_pickle=allow_pickle)
        except (OSError, ValueError, EOFError) as e:
            hint = ""
            if "pickle" in str(e).lower():
                hint = " If you are sure this file is safe, set the option --allow_pickle to True."
            raise _bad(f"Failed to load input file {filename}: {e}.{hint}") from None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            names = list(loaded.files)
            if variable is not None:
                if variable not in names:
                    raise _bad(f"Input file {filename} has no ndarray named {variable}; it holds {names}")
                out[key] = loaded[variable]
            elif len(names) == 1:
                out[key] = loaded[names[0]]
            else:
                raise _bad(
                    f"Input file {filename} contains more than one ndarrays. Please specify the name of "
                    "ndarray to use."
                )
        else:
            out[key] = loaded
    return out


def collect_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """--inputs, then --input_exprs, then --input_examples; later flags win for the same key."""
    if not (args.inputs or args.input_exprs or args.input_examples):
        raise _bad(
            "At least one of --inputs, --input_exprs or --input_examples must be required, "
            "e.g. --input_exprs 'x=[[1.0]]'"
        )
    inputs = load_input_files(parse_inputs_arg(args.inputs), args.allow_pickle)
    for key, value in parse_input_exprs_arg(args.input_exprs).items():
        if key in inputs:
            print(
                f"input_key {key} has been specified with both --inputs and --input_exprs options. "
                "Value in --input_exprs will be used.",
                file=sys.stderr,
            )
        inputs[key] = value
    for key, value in parse_input_examples_arg(args.input_examples).items():
        if key in inputs:
            print(
                f"input_key {key} has been specified in multiple options. "
                "Value in --input_examples will be used.",
                file=sys.stderr,
            )
        inputs[key] = value
    return inputs


def run(args: argparse.Namespace) -> int:
    if args.verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # read by sigserve.runtime.tflog when TF is imported
    import numpy as np

    from sigserve import runtime, storage
    from sigserve.runtime.predict import numpy_dtype

    inputs = collect_inputs(args)
    if args.outdir and os.path.exists(args.outdir) and not os.path.isdir(args.outdir):
        raise _bad(f"--outdir {args.outdir} is a file; give a directory (created if missing)")
    tags = [t.strip() for t in args.tag_set.split(",") if t.strip()]
    with storage.local_dir(args.dir) as export_dir, runtime.load(export_dir, tags) as servable:
        if args.signature_def not in servable.signatures:
            raise SigserveError(
                Code.NOT_FOUND,
                f'Serving signature key "{args.signature_def}" not found. Signatures: '
                f"{', '.join(sorted(servable.signatures))} (see sigserve show --dir {args.dir} --tag_set "
                f"{args.tag_set})",
            )
        signature = servable.signatures[args.signature_def]
        for key in inputs:
            if key not in signature.inputs:
                choices = '"' + '", "'.join(sorted(signature.inputs)) + '"'
                raise _bad(
                    f'"{key}" is not a valid input key. Please choose from {choices}, or use sigserve '
                    f"show --dir {args.dir} --tag_set {args.tag_set} --signature_def {args.signature_def}."
                )
            # saved_model_cli feeds through Session.run, which casts to the placeholder's dtype.
            dtype = numpy_dtype(signature.inputs[key].dtype)
            value = inputs[key]
            if isinstance(value, np.ndarray) and dtype is not None and value.dtype != dtype:
                try:
                    inputs[key] = value.astype(dtype)
                except (TypeError, ValueError):
                    pass  # TensorFlow reports the mismatch
        outputs = servable.predict(inputs, signature_name=args.signature_def)
    keys = sorted(outputs)
    if args.outdir:
        try:
            os.makedirs(args.outdir, exist_ok=True)
        except OSError as e:
            raise _bad(
                f"--outdir {args.outdir}: {e.strerror}; give a directory (created if missing)"
            ) from None
        for key in keys:
            path = os.path.join(args.outdir, key + ".npy")
            if os.path.exists(path) and not args.overwrite:
                raise SigserveError(
                    Code.ALREADY_EXISTS,
                    f'Output file {path} already exists. Add "--overwrite" to overwrite the existing '
                    "output files.",
                )
            np.save(path, outputs[key])
            print(f"Output {key} is saved to {path}")
    else:
        for key in keys:
            print(f"Result for output key {key}:\n{outputs[key]}")
    return 0
