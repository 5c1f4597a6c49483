"""Every `sigserve serve` flag, with TF Serving's names and defaults (tfserving-api.md §7).

One dataclass shared by the REST and gRPC front ends and the wiring, so a flag is declared once.
"""

from __future__ import annotations

import dataclasses

from sigserve.codec import DEFAULT_MAX_JSON_DEPTH
from sigserve.cpus import schedulable_cpus


@dataclasses.dataclass
class ServerOptions:
    # Transport.
    port: int = 8500  # gRPC; 0 disables (then grpc_socket_path is required)
    grpc_socket_path: str = ""
    rest_api_port: int = 8501  # on by default, as in TF Serving's Docker image; 0 disables
    rest_api_host: str = "0.0.0.0"
    grpc_host: str = "0.0.0.0"
    rest_api_num_threads: int = 0  # 0 = 4 x CPUs
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    max_request_body_bytes: int = 64 * 1024 * 1024  # REST only; larger bodies get 413
    rest_api_max_header_bytes: int = 64 * 1024  # request line + headers; more gets 431
    rest_api_max_headers: int = 100  # more gets 431
    rest_api_header_timeout_seconds: float = 30  # a request's headers must arrive within this (else 408)
    rest_api_body_timeout_seconds: float = 60  # a REST body that stops arriving this long: 408
    rest_api_keep_alive_timeout_seconds: float = 60  # an idle REST connection is closed after this
    max_request_json_depth: int = DEFAULT_MAX_JSON_DEPTH  # REST JSON nesting; deeper bodies get 400
    shutdown_grace_seconds: float = 30.0  # SIGTERM: how long in-flight requests may take to finish
    grpc_max_threads: int = 0
    grpc_channel_arguments: str = ""
    grpc_transport: str = "native"  # or "grpcio"
    enable_grpc_healthcheck_service: bool = False
    ssl_config_file: str = ""
    enable_serialization_as_tensor_content: bool = False

    # Models.
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0
    file_system_poll_wait_seconds: float = 1
    saved_model_tags: str = "serve"
    allow_version_labels_for_unavailable_models: bool = False
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    enable_signature_method_name_check: bool = False
    fail_if_no_model_versions_found: bool = False  # a missing or empty base path fails start-up
    model_cache_dir: str = (
        ""  # versions on object stores are downloaded here ("" = <tmp>/sigserve-model-cache)
    )

    # TensorFlow session.
    tensorflow_session_parallelism: int = 0  # sets both of the next two when they are 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0

    # Batching.
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False

    # Monitoring.
    monitoring_config_file: str = ""
    log_format: str = "text"  # or "json": one JSON object per line (sigserve/logformat.py)

    # Request logging (each model's logging_config; sigserve/requestlog/).
    request_log_queue_size: int = 4096  # sampled calls waiting for the writer; more are dropped, counted
    request_log_queue_bytes: int = 256 * 1024 * 1024  # the same, in (approximate) tensor bytes
    request_log_max_file_bytes: int = 128 * 1024 * 1024  # a log file is closed at this size
    request_log_rotate_seconds: float = 3600  # ... or at this age

    # Model management over REST (sigserve extension): POST/GET /v1/config.
    enable_model_management_api: bool = False

    # Access and documentation (sigserve's own).
    auth_token_file: str = ""  # tokens, one per line; every API call then needs one
    public_metrics: bool = False  # with auth on, leave the Prometheus page open
    disable_web_console: bool = False


def worker_threads(configured: int) -> int:
    """A front end's pool size: `configured` when set, else TF Serving's default of 4 x CPUs
    (`--rest_api_num_threads`, `--grpc_max_threads`)."""
    return configured if configured > 0 else 4 * schedulable_cpus()
