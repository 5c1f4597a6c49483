"""`sigserve predict`: one Predict call against a running TF Serving or sigserve, from the shell."""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from typing import Any

DESCRIPTION = """\
Send one Predict request (gRPC by default, REST with --rest) and print every output.

  sigserve predict --server localhost:8500 --model half_plus_two --input 'x=[[1.0], [2.0]]'
  sigserve predict --server localhost:8501 --rest --model m --signature_name scale \\
      --input x=batch.npy --input factor=2.0
  sigserve predict --server unix:/tmp/sigserve.sock --model m --input 'b=["a", "b"]'

--input ALIAS=VALUE: VALUE is a JSON (or Python) literal, cast to the signature input's dtype read
from the model's metadata; or a .npy file, sent as stored. Strings are sent as bytes.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="send one Predict request to a running server and print the outputs",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--server", required=True, help="HOST:PORT (gRPC, e.g. localhost:8500), unix:PATH, or the REST URL"
    )
    p.add_argument("--rest", action="store_true", help="use the REST API (e.g. --server localhost:8501)")
    p.add_argument("--model", "--model_name", dest="model", required=True, help="model name")
    p.add_argument(
        "--signature_name", "--signature-name", dest="signature_name", help="default serving_default"
    )
    version = p.add_mutually_exclusive_group()
    version.add_argument("--version", type=int, help="model version (default: the latest available)")
    version.add_argument("--label", help="model version label, e.g. stable")
    p.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="ALIAS=VALUE",
        help="one signature input, e.g. x=[[1.0]] or x=batch.npy; repeat for several",
    )
    p.add_argument(
        "--output_filter", "--output-filter", dest="output_filter", help="comma-separated output aliases"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--ca_file", "--ca-file", dest="ca_file", help="PEM CA certificate: use TLS (gRPC)")
    p.add_argument(
        "--token",
        default=os.environ.get("SIGSERVE_TOKEN") or None,
        help="access token for a server run with --auth_token_file (default: $SIGSERVE_TOKEN, "
        "which keeps it off the process list)",
    )


def parse_input(spec: str) -> tuple[str, Any, bool]:
    """`alias=value` → (alias, value, from_file). Files keep their dtype; literals get the signature's."""
    import numpy as np

    from sigserve.errors import invalid_argument

    alias, sep, text = spec.partition("=")
    if not sep or not alias:
        raise invalid_argument(f"--input must be ALIAS=VALUE, e.g. --input 'x=[[1.0]]'; got {spec!r}")
    if text.endswith(".npy") and os.path.isfile(text):
        return alias, np.load(text, allow_pickle=False), True
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise invalid_argument(
                f"--input {alias}: {text!r} is neither a JSON/Python literal nor an existing .npy file"
            ) from None
    return alias, value, False


def cast_to_signature(value: Any, dtype: int | None) -> Any:
    from sigserve.client._common import as_array
    from sigserve.codec import dtypes
    from sigserve.protos import types_pb2

    array = as_array(value)
    if dtype is None or dtype == types_pb2.DT_STRING or array.dtype == object:
        return array
    return array.astype(dtypes.to_numpy_dtype(dtype))


def check_inputs(meta: Any, signature_name: str, aliases: list[str]) -> Any:
    """The signature, after checking that it exists and has every --input alias: the server's error
    ("Signature input alias: x ... not found in request") names what is missing, not what was sent."""
    from sigserve.codec import dtypes
    from sigserve.errors import invalid_argument
    from sigserve.saved_model.show import format_shape

    signature = meta.signatures.get(signature_name)
    if signature is None:
        raise invalid_argument(
            f"model {meta.name} (version {meta.version}) has no signature {signature_name!r}; "
            f"choose one with --signature_name: {', '.join(sorted(meta.signatures)) or '(none)'}"
        )
    unknown = [a for a in aliases if a not in signature.inputs]
    if unknown:
        expected = ", ".join(
            f"{alias} ({dtypes.name(info.dtype)} {format_shape(info.tensor_shape)})"
            for alias, info in sorted(signature.inputs.items())
        )
        raise invalid_argument(
            f"--input {unknown[0]}: signature {signature_name!r} of {meta.name} has no input "
            f"{unknown[0]!r}; its inputs are: {expected or '(none)'}"
        )
    return signature


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from sigserve.client import Client, RestClient
    from sigserve.errors import invalid_argument

    if not args.server.strip():
        raise invalid_argument("--server is empty; give HOST:PORT, e.g. --server localhost:8500")
    parsed = [parse_input(spec) for spec in args.input]
    output_filter = (
        [a.strip() for a in args.output_filter.split(",") if a.strip()] if args.output_filter else None
    )
    client: Any
    if args.rest:
        client = RestClient(args.server, timeout=args.timeout, token=args.token)
    else:
        credentials = None
        if args.ca_file:
            import grpc

            try:
                with open(args.ca_file, "rb") as f:
                    credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
            except OSError as e:
                raise invalid_argument(f"--ca_file {args.ca_file}: {e.strerror}") from None
        client = Client(args.server, credentials=credentials, timeout=args.timeout, token=args.token)
    with client:
        meta = client.metadata(args.model, version=args.version, label=args.label)
        signature = check_inputs(meta, args.signature_name or "serving_default", [a for a, _, _ in parsed])
        dtypes = {alias: info.dtype for alias, info in signature.inputs.items()}
        inputs = {
            alias: value if from_file else cast_to_signature(value, dtypes.get(alias))
            for alias, value, from_file in parsed
        }
        outputs = client.predict(
            args.model,
            inputs,
            signature_name=args.signature_name,
            version=args.version,
            label=args.label,
            output_filter=output_filter,
        )
    with np.printoptions(threshold=1000):
        for alias in sorted(outputs):
            sys.stdout.write(f"Result for output key {alias}:\n{outputs[alias]}\n")
    return 0
