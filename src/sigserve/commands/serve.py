"""`sigserve serve`: TF Serving's `tensorflow_model_server`, with its flag names and defaults (§7).

Flags are TF Serving's, written `--flag=value` or `--flag value`; booleans also accept a bare
`--flag` and `--flag=false`. `MODEL_NAME` / `MODEL_BASE_PATH` work as in TF Serving's Docker image.
Flags TF Serving has but sigserve does not act on are accepted (so existing command lines keep
working) and reported once at start-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
from typing import Any

from sigserve.server.options import ServerOptions

EXAMPLE = (
    "example:\n"
    "  sigserve serve --model_name=half_plus_two --model_base_path=/models/half_plus_two\n"
    "  curl -d '{\"instances\": [1.0, 2.0, 5.0]}' localhost:8501/v1/models/half_plus_two:predict\n"
)

# TF Serving flags accepted for compatibility that sigserve does not act on.
IGNORED_FLAGS: dict[str, Any] = {
    "num_load_threads": 0,
    "num_unload_threads": 0,
    "flush_filesystem_caches": True,
    "enable_profiler": True,
    "use_alts_credentials": False,
    "platform_config_file": "",
    "tensorflow_session_config_file": "",
    "per_process_gpu_memory_fraction": 0.0,
    "remove_unused_fields_from_bundle_metagraph": True,
    "prefer_tflite_model": False,
    "num_tflite_pools": 0,
    "num_tflite_interpreters_per_pool": 1,
    "xla_cpu_compilation_enabled": False,
    "xla_gpu_compilation_enabled": False,
    "thread_pool_factory_config_file": "",
    "mixed_precision": "",
    "skip_initialize_tpu": False,
    "enable_model_warmup_on_unload": False,
}

HELP: dict[str, str] = {
    "port": "gRPC port (default 8500); 0 disables gRPC",
    "grpc_socket_path": "also serve gRPC on this UNIX socket",
    "rest_api_port": "REST port (default 8501, as in TF Serving's Docker image); 0 disables REST",
    "rest_api_host": "address the REST API binds to (default 0.0.0.0)",
    "grpc_host": "address the gRPC API binds to (default 0.0.0.0)",
    "grpc_transport": "native (default: sigserve's own HTTP/2; 3.5x the throughput of grpcio's server for "
    "one-row predicts at 64 concurrent calls, README: Performance) or grpcio (grpcio's server; every "
    "--grpc_channel_arguments key applies)",
    "rest_api_num_threads": "threads running REST requests (default 0 = 4 x CPUs)",
    "rest_api_timeout_in_ms": "REST per-request timeout in ms; slower requests get 504 (default 30000)",
    "rest_api_enable_cors_support": "add Access-Control-Allow-* headers to REST responses",
    "max_request_body_bytes": "largest REST request body, after gzip decoding; larger gets 413 "
    "(default 67108864 = 64 MiB)",
    "rest_api_max_header_bytes": "largest REST request line + headers in bytes; larger gets 431 "
    "(default 65536)",
    "rest_api_max_headers": "most REST request headers; more gets 431 (default 100)",
    "rest_api_header_timeout_seconds": "a REST request's headers must arrive within this, else 408 and "
    "the connection is closed (default 30)",
    "rest_api_body_timeout_seconds": "a REST request body that gets no bytes for this long while the "
    "server waits for it is answered 408 and the connection closed (default 60)",
    "rest_api_keep_alive_timeout_seconds": "close a REST connection idle this long between requests "
    "(default 60)",
    "max_request_json_depth": "deepest nesting of JSON arrays and objects in a REST request body "
    "(/v1 and /v2); deeper gets 400 before it costs memory (default 100; a rank-N tensor needs N+1 "
    "to N+4)",
    "shutdown_grace_seconds": "on SIGTERM, how long in-flight requests may take to finish (default 30)",
    "model_name": "name of the single model (default 'default'; env MODEL_NAME)",
    "model_base_path": "directory holding the model's numbered versions, e.g. /models/m with /models/m/1 "
    "(env MODEL_BASE_PATH: $MODEL_BASE_PATH/$MODEL_NAME); or a URI: s3://bucket/m, gs://, az://, https://",
    "fail_if_no_model_versions_found": "fail start-up when a base path is missing or holds no version "
    "(default: wait for one, logging why)",
    "model_cache_dir": "where versions on object stores are downloaded before loading "
    "(default <tmp>/sigserve-model-cache)",
    "model_config_file": "text ModelServerConfig listing several models; "
    "overrides --model_name/--model_base_path",
    "model_config_file_poll_wait_seconds": "re-read --model_config_file this often (default 0 = never)",
    "file_system_poll_wait_seconds": "look for new model versions this often (default 1)",
    "saved_model_tags": "comma-separated MetaGraph tags to load (default 'serve')",
    "monitoring_config_file": "text MonitoringConfig; Prometheus metrics are served at "
    "/monitoring/prometheus/metrics unless it says enable: false",
    "enable_signature_method_name_check": "require classify/regress signatures to have those method names",
    "enable_batching": "batch concurrent requests (tune with --batching_parameters_file)",
    "batching_parameters_file": "text BatchingParameters, e.g. max_batch_size { value: 128 }",
    "request_log_queue_size": "sampled calls (logging_config) waiting to be written; beyond it they are "
    "dropped and counted in request_log_count (default 4096)",
    "request_log_queue_bytes": "the same limit in tensor bytes (default 268435456 = 256 MiB)",
    "request_log_max_file_bytes": "request log files are closed at this size (default 134217728 = 128 MiB)",
    "request_log_rotate_seconds": "... or at this age (default 3600)",
    "enable_model_management_api": "serve POST/GET /v1/config on the REST port: reload the "
    "ModelServerConfig as gRPC HandleReloadConfigRequest does (default off)",
    "log_format": "the server's own log: text (default) or json (one object per line with time, level, "
    "logger, message, model, version, request_id)",
    "auth_token_file": "require an access token on every REST and gRPC API call: a file with one "
    "token per line, re-read when it changes (clients send 'Authorization: Bearer <token>'); "
    "/healthz, /readyz and gRPC health stay open",
    "public_metrics": "with --auth_token_file, leave the Prometheus page open for scrapers",
    "disable_web_console": "do not serve the web console at / and /ui",
}


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "y", "t"):
        return True
    if value in ("0", "false", "no", "n", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_flag(p: argparse.ArgumentParser, name: str, kind: str, help_text: str | None) -> None:
    flag = f"--{name}"
    if kind == "bool":
        p.add_argument(flag, type=_bool, nargs="?", const=True, default=None, metavar="BOOL", help=help_text)
    elif kind == "int":
        p.add_argument(flag, type=int, default=None, metavar="N", help=help_text)
    elif kind == "float":
        p.add_argument(flag, type=float, default=None, metavar="X", help=help_text)
    else:
        p.add_argument(flag, type=str, default=None, metavar="S", help=help_text)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve SavedModels over TF Serving's REST and gRPC APIs",
        # The generated usage lists all ~40 flags, burying the error line under it.
        usage="%(prog)s --model_name=NAME --model_base_path=DIR [--flag=value ...] (all: --help)",
        description="Serve SavedModels with TensorFlow Serving's REST (default :8501) and gRPC "
        "(default :8500) APIs. Flags are tensorflow_model_server's.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for field in dataclasses.fields(ServerOptions):
        default_help = f"as in TF Serving (default {field.default!r})"
        _add_flag(p, field.name, str(field.type), HELP.get(field.name, default_help))
    for name, default in IGNORED_FLAGS.items():
        _add_flag(p, name, type(default).__name__, argparse.SUPPRESS)
    p.add_argument("--version", action="store_true", help="print the server and TensorFlow versions and exit")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's C++ log lines, hidden by default (same as TF_CPP_MIN_LOG_LEVEL=0)",
    )


def options_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ServerOptions:
    """Flags over defaults; MODEL_NAME / MODEL_BASE_PATH fill in what the flags leave out."""
    env = os.environ if environ is None else environ
    given: dict[str, Any] = {}
    for field in dataclasses.fields(ServerOptions):
        value = getattr(args, field.name, None)
        if value is not None:
            given[field.name] = value
    for name in ("port", "rest_api_port"):
        if name in given and not 0 <= given[name] <= 65535:
            from sigserve.errors import invalid_argument

            raise invalid_argument(
                f"--{name} must be a port number, 0-65535 (0 turns it off); got {given[name]}"
            )
    if given.get("max_request_json_depth", 2) < 2:
        from sigserve.errors import invalid_argument

        raise invalid_argument(
            "--max_request_json_depth must be at least 2 (a request is an object holding a list, "
            f'{{"instances": [1.0]}}), e.g. 100, the default; got {given["max_request_json_depth"]}'
        )
    for name, example in (
        ("rest_api_max_header_bytes", "65536"),
        ("rest_api_max_headers", "100"),
        ("rest_api_header_timeout_seconds", "30"),
        ("rest_api_body_timeout_seconds", "60"),
        ("rest_api_keep_alive_timeout_seconds", "60"),
    ):
        if name in given and not given[name] > 0:
            from sigserve.errors import invalid_argument

            raise invalid_argument(
                f"--{name} must be above 0 (every request would be refused); e.g. {example}, the "
                f"default; got {given[name]}"
            )
    if "model_name" not in given and env.get("MODEL_NAME"):
        given["model_name"] = env["MODEL_NAME"]
    if "model_base_path" not in given and "model_config_file" not in given and env.get("MODEL_BASE_PATH"):
        name = given.get("model_name", ServerOptions.model_name)
        given["model_base_path"] = os.path.join(env["MODEL_BASE_PATH"], name)
    return ServerOptions(**given)


def _versions() -> str:
    from importlib import metadata

    from sigserve import __version__

    tf = "not installed"
    for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-macos"):
        try:
            tf = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    return f"TensorFlow ModelServer: {__version__} (sigserve)\nTensorFlow Library: {tf}"


def _tensorflow_installed() -> bool:
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def run(args: argparse.Namespace) -> int:
    if args.version:
        print(_versions())
        return 0
    ignored = [n for n in IGNORED_FLAGS if getattr(args, n, None) is not None]
    if ignored:
        print(
            "sigserve serve: accepted for compatibility, no effect: " + ", ".join(f"--{n}" for n in ignored),
            file=sys.stderr,
        )
    if args.verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # read by sigserve.runtime.tflog when TF is imported
    if not _tensorflow_installed():  # checked here: models load in a worker thread
        from sigserve.errors import Code, SigserveError

        raise SigserveError(
            Code.FAILED_PRECONDITION,
            "serving runs models with TensorFlow, which is not installed: "
            "pip install 'sigserve[tensorflow]' (or tensorflow-cpu)",
        )
    from sigserve.server import serve

    return serve.main(options_from_args(args))
