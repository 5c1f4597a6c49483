"""`sigserve serve`: the model server process (tfserving-api.md §1, §6, §7).

One asyncio loop runs both front ends: REST (`http1.py` under `rest.py`'s app) and gRPC (`grpc_h2`,
or grpc.aio). The listeners open before the models finish loading, so `/healthz` answers at once
and `/readyz` says 503 until every configured model is AVAILABLE (a Kubernetes liveness probe does
not kill a server that is still loading a large model). TF Serving's two start-up lines, which
scripts wait for, are printed only once the models are available, when they mean what they mean in
TF Serving.

SIGTERM / SIGINT: stop accepting connections, let in-flight requests finish (up to
`shutdown_grace_seconds`), then unload every model. A second SIGINT stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from sigserve import batching, logformat
from sigserve.batching import BatchScheduler
from sigserve.errors import Code, SigserveError, invalid_argument
from sigserve.interfaces import RunnerWrapper, Servable
from sigserve.manager import LoadRequest, ServerCore
from sigserve.protos.model_server_config_pb2 import ModelServerConfig
from sigserve.requestlog import RequestLogger
from sigserve.server import http1
from sigserve.server.gcfreeze import GcFreezer
from sigserve.server.options import ServerOptions
from sigserve.server.rest import DEFAULT_METRICS_PATH, RestApp, create_app
from sigserve.service import CallContext, Metrics, PredictionService

logger = logging.getLogger("sigserve.serve")


# -- configuration ---------------------------------------------------------------------------------


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise invalid_argument(f"Could not read {what} '{path}': {e.strerror}") from None


def build_model_config(options: ServerOptions) -> Any:
    """The ModelServerConfig to serve: `--model_config_file`, else one model from the two flags."""
    from sigserve.manager import config as model_config

    if options.model_config_file:
        return model_config.parse(
            _read_text(options.model_config_file, "--model_config_file"), options.model_config_file
        )
    if not options.model_base_path:
        raise invalid_argument(
            "Both server_options.model_base_path and server_options.model_config_file are empty! "
            "Give one, e.g. --model_name=half_plus_two --model_base_path=/models/half_plus_two"
        )
    return model_config.single_model(options.model_name, options.model_base_path)


def configured_model_names(config: Any) -> list[str]:
    return [c.name for c in config.model_config_list.config]


def metrics_path(options: ServerOptions) -> str | None:
    """Where Prometheus metrics are served. On by default at TF Serving's path (tensorflow/serving#462:
    TF Serving answers 404 until a monitoring config is given); `enable: false` turns them off."""
    if not options.monitoring_config_file:
        return DEFAULT_METRICS_PATH
    from google.protobuf import text_format

    from sigserve.protos import monitoring_config_pb2
    from sigserve.protos.text import error_text as text_error

    text = _read_text(options.monitoring_config_file, "--monitoring_config_file")
    config = monitoring_config_pb2.MonitoringConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise invalid_argument(
            f"Invalid protobuf file: '{options.monitoring_config_file}': {text_error(e)}"
        ) from None
    if not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or DEFAULT_METRICS_PATH


def make_authenticator(options: ServerOptions) -> Any:
    """The access tokens of --auth_token_file (None: the API is open, as TF Serving's)."""
    if not options.auth_token_file:
        return None
    from sigserve.server.auth import TokenFile

    return TokenFile(options.auth_token_file)


def validate(options: ServerOptions) -> None:
    """The start-up checks of TF Serving's server.cc, with its messages."""
    if options.batching_parameters_file and not options.enable_batching:
        raise invalid_argument(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if options.port == 0 and options.rest_api_port == 0 and not options.grpc_socket_path:
        raise invalid_argument(
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set. "
            "(sigserve: or --rest_api_port; e.g. --port=8500 --rest_api_port=8501)"
        )
    if options.tensorflow_session_parallelism and (
        options.tensorflow_intra_op_parallelism or options.tensorflow_inter_op_parallelism
    ):
        raise invalid_argument(
            "Either set --tensorflow_session_parallelism, or --tensorflow_intra_op_parallelism and "
            "--tensorflow_inter_op_parallelism, not both."
        )


def make_batch_scheduler(
    options: ServerOptions, registry: CollectorRegistry | None = None
) -> BatchScheduler | None:
    if not options.enable_batching:
        return None
    text = ""
    if options.batching_parameters_file:
        text = _read_text(options.batching_parameters_file, "--batching_parameters_file")
    params = batching.parse_batching_parameters(text, source=options.batching_parameters_file)
    return batching.BatchScheduler(params, registry=registry)


def make_loader(
    options: ServerOptions, scheduler: BatchScheduler | None
) -> Callable[[LoadRequest], Servable]:
    """The manager's loader: `runtime.load` with the session flags, its runner batched if batching is on."""
    tags = tuple(t.strip() for t in options.saved_model_tags.split(",") if t.strip())
    intra = options.tensorflow_intra_op_parallelism or options.tensorflow_session_parallelism
    inter = options.tensorflow_inter_op_parallelism or options.tensorflow_session_parallelism

    def load(request: LoadRequest) -> Servable:
        from sigserve import runtime

        wrapper: RunnerWrapper | None = None
        if scheduler is not None:
            if options.enable_per_model_batching_parameters:
                # TF Serving's rule: with per-model parameters, a version without
                # batching_params.pbtxt is served unbatched.
                per_model = batching.per_model_params(request.path)
                if per_model is not None:
                    wrapper = scheduler.wrapper(per_model)
            else:
                wrapper = scheduler.wrapper()
        return runtime.load(
            request.path,
            tags,
            intra_op_parallelism=intra,
            inter_op_parallelism=inter,
            method_name_check=options.enable_signature_method_name_check,
            name=request.name,
            version=request.version,
            runner_wrapper=wrapper,
        )

    return load


def make_core(
    options: ServerOptions,
    config: ModelServerConfig,
    loader: Callable[[LoadRequest], Servable],
    metrics: Metrics | None = None,
) -> ServerCore:
    return ServerCore(
        config,
        loader=loader,
        file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
        max_num_load_retries=options.max_num_load_retries,
        load_retry_interval_micros=options.load_retry_interval_micros,
        enable_model_warmup=options.enable_model_warmup,
        num_request_iterations_for_warmup=options.num_request_iterations_for_warmup,
        allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
        fail_if_no_model_versions_found=options.fail_if_no_model_versions_found,
        model_cache_dir=options.model_cache_dir,
        load_observer=metrics,
    )


@dataclasses.dataclass
class ServerParts:
    """One server's in-process parts, without listeners: what `sigserve serve` puts behind its ports,
    and what a host that brings its own (a Ray Serve replica) embeds. `app` is the REST ASGI app;
    `service` is what the gRPC methods call. `core.start()` loads the models."""

    options: ServerOptions
    config: ModelServerConfig
    metrics: Metrics
    scheduler: BatchScheduler | None
    core: ServerCore
    request_logger: RequestLogger
    service: PredictionService
    app: RestApp

    def stop(self) -> None:
        """Write every queued request log, unload every model, drain batching, stop the REST pool
        (blocking; errors are logged). Every answered call is queued by now, so none is lost."""
        self.app.shutting_down = True
        _stop_quietly(self.request_logger.close)
        _stop_quietly(self.core.stop)
        if self.scheduler is not None:
            _stop_quietly(self.scheduler.stop)
        _stop_quietly(self.app.close)


def build(options: ServerOptions) -> ServerParts:
    """The parts `options` describe, checked (TF Serving's start-up errors as `SigserveError`)."""
    validate(options)
    config = build_model_config(options)
    path = metrics_path(options)
    metrics = Metrics()
    scheduler = make_batch_scheduler(options, registry=metrics.registry)
    core = make_core(options, config, make_loader(options, scheduler), metrics)
    request_logger = make_request_logger(options, config, metrics)
    service = PredictionService(
        core,
        metrics,
        observer=request_logger,
        authenticator=make_authenticator(options),
        batching=scheduler is not None,
    )
    return ServerParts(
        options,
        config,
        metrics,
        scheduler,
        core,
        request_logger,
        service,
        create_app(service, options, metrics_path=path),
    )


def make_request_logger(options: ServerOptions, config: ModelServerConfig, metrics: Metrics) -> RequestLogger:
    """Request logging as the config's logging_configs say; a bad one is a start-up failure."""
    from sigserve.requestlog import RequestLogger, Settings

    settings = Settings(
        queue_size=options.request_log_queue_size,
        queue_bytes=options.request_log_queue_bytes,
        max_file_bytes=options.request_log_max_file_bytes,
        rotate_seconds=options.request_log_rotate_seconds,
    )
    tags = [t.strip() for t in options.saved_model_tags.split(",") if t.strip()]
    request_logger = RequestLogger(settings, registry=metrics.registry, saved_model_tags=tags)
    request_logger.update(config)
    return request_logger


# -- listeners -------------------------------------------------------------------------------------


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the REST socket ourselves, so a busy port is a clean start-up error, not a sys.exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP (not 0): asyncio only sets TCP_NODELAY on such sockets, and without it
    # a keep-alive client waits 40 ms (Nagle + delayed ACK) for every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SigserveError(
            Code.UNAVAILABLE, f"Could not bind the REST API to {host}:{port}: {e.strerror}"
        ) from None
    sock.setblocking(False)
    return sock


def rest_limits(options: ServerOptions) -> http1.Limits:
    return http1.Limits(
        max_header_bytes=int(options.rest_api_max_header_bytes),
        max_headers=int(options.rest_api_max_headers),
        header_timeout=float(options.rest_api_header_timeout_seconds),
        body_timeout=float(options.rest_api_body_timeout_seconds),
        keep_alive_timeout=float(options.rest_api_keep_alive_timeout_seconds),
    )


# -- the process -----------------------------------------------------------------------------------


def _say(line: str) -> None:
    logformat.say(line)


async def poll_config_file(
    options: ServerOptions, service: PredictionService, app: RestApp, holder: dict[str, Any]
) -> None:
    """`--model_config_file_poll_wait_seconds`: re-read the file and hand changes to the manager."""
    period = float(options.model_config_file_poll_wait_seconds)
    last = _read_text(options.model_config_file, "--model_config_file")
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(period)
        try:
            text = _read_text(options.model_config_file, "--model_config_file")
            if text == last:
                continue
            from sigserve.manager import config as model_config

            config = model_config.parse(text, options.model_config_file)
            ctx = CallContext("CONFIG_FILE", "ReloadConfig")
            await loop.run_in_executor(None, service.reload_config, ctx, config)
            holder["config"] = config
            last = text
            logger.info("Reloaded --model_config_file %s", options.model_config_file)
        except SigserveError as e:
            logger.error("Ignoring --model_config_file change: %s", e.to_string())


async def serve_async(
    options: ServerOptions, *, ready: Callable[[], None] | None = None, freeze_gc: bool = False
) -> int:
    """Run the server until SIGTERM/SIGINT. Returns the process exit status.

    `freeze_gc`: once the models are loaded, and after every version change, freeze the heap so that
    the cyclic GC stops rescanning them (`gcfreeze.py`); `main` sets it, as it owns the process.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    force = {"count": 0}
    rest: http1.Http1Server | None = None

    def on_signal() -> None:
        force["count"] += 1
        stop.set()
        if force["count"] > 1 and rest is not None:
            _say("sigserve: second signal: stopping now")
            rest.force()

    try:
        parts = build(options)
    except SigserveError as e:
        _say(f"Failed to start server. Error: {e.to_string()}")
        return 1

    core, service, app = parts.core, parts.service, parts.app
    holder: dict[str, Any] = {"config": parts.config}
    grpc_server: Any = None
    poller: asyncio.Task[None] | None = None
    freezer: GcFreezer | None = None
    status = 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    try:
        rest_enabled = options.rest_api_port != 0
        if rest_enabled and options.rest_api_port == options.port:
            logger.error(
                "--rest_api_port cannot be the same as --port (%d); not starting the REST API", options.port
            )
            rest_enabled = False
        if rest_enabled:
            rest = http1.Http1Server(
                app,
                bind_socket(options.rest_api_host, options.rest_api_port),
                rest_limits(options),
                options.shutdown_grace_seconds,
            )
            await rest.start()
        if options.port != 0 or options.grpc_socket_path:
            from sigserve.server import grpc_server as grpc_module

            grpc_server = grpc_module.create_server(service, options)
            await grpc_server.start()
        if rest is not None:
            host = options.rest_api_host
            _say(f"sigserve: REST API listening on {host}:{options.rest_api_port}; loading models ...")

        # Load the models while the listeners answer /healthz; a failure here is a start-up failure.
        starting: asyncio.Future[None] = loop.run_in_executor(None, core.start, True)
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if starting in done:
            starting.result()  # raises the load error
            if freeze_gc:
                freezer = GcFreezer(loop)
                freezer.freeze_now()
                freezer.watch(core)
            if options.port != 0:
                _say(f"Running gRPC ModelServer at 0.0.0.0:{options.port} ...")
            if rest is not None:
                _say(f"Exporting HTTP/REST API at:localhost:{options.rest_api_port} ...")
            if ready is not None:
                ready()
            if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
                poller = asyncio.ensure_future(poll_config_file(options, service, app, holder))
            await stopped
        else:
            stopped.result()
            # Stopped before the models loaded: core.stop (below) makes start() raise CANCELLED,
            # which is the expected end of it, not an error to report.
            starting.add_done_callback(_consume_exception)
        _say("sigserve: shutting down: finishing in-flight requests ...")
    except SigserveError as e:
        _say(f"Failed to start server. Error: {e.to_string()}")
        status = 1
    finally:
        app.shutting_down = True
        if freezer is not None:
            freezer.close()
        if poller is not None:
            poller.cancel()
        await _shutdown(options, rest, grpc_server, force["count"] > 1)
        await loop.run_in_executor(None, parts.stop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    if status == 0:
        _say("sigserve: stopped")
    return status


async def _shutdown(
    options: ServerOptions, rest: http1.Http1Server | None, grpc_server: Any, force: bool
) -> None:
    tasks = []
    if rest is not None:
        tasks.append(rest.stop(force=force))
    if grpc_server is not None:
        tasks.append(grpc_server.stop(0 if force else options.shutdown_grace_seconds))
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, BaseException):
            logger.error("Error while stopping a front end: %r", result)


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _stop_quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:
        logger.exception("Error during shutdown")


def main(options: ServerOptions) -> int:
    """Blocking entry point of `sigserve serve`, on asyncio's own event loop.

    Not uvloop, though it is installed: with small predicts running on the loop (`inline.py`), a
    saturated uvloop served connections unfairly. At concurrency 64 on the benchmark machine its p99
    was 270-400 ms against 20-23 ms on asyncio's loop, for the same throughput (3600-3860 req/s); a
    bare uvicorn app that burns 250 µs per request shows the same (uvloop p99 320-400 ms, asyncio
    22 ms). uvloop's lower protocol cost (~5 µs a request) does not make up for that.
    """
    try:
        logformat.configure(options.log_format)
    except SigserveError as e:
        _say(f"Failed to start server. Error: {e.to_string()}")
        return 1
    return asyncio.run(serve_async(options, freeze_gc=True))
