"""TF Serving's gRPC API on grpc.aio (tfserving-api.md §2): PredictionService and ModelService under
TF Serving's service names, so every existing client stub works unchanged.

The services are registered with generic handlers that move raw bytes: our messages live in the
`sigserve.tensorflow.serving` proto package but keep TensorFlow's field numbers, so their bytes are
TF Serving's bytes, and only the method paths (`/tensorflow.serving.PredictionService/Predict`) have
to carry TF Serving's names. Decoding, TensorFlow and encoding run in a thread pool of
`--grpc_max_threads` workers, except small Predicts on routes that qualify for the short path
(`inline.py`), which run on the event loop.

Transport (server.cc): `--grpc_host:--port` and/or `unix:--grpc_socket_path`; TLS from
`--ssl_config_file`; message size INT32_MAX both ways; `--grpc_channel_arguments`;
grpc.health.v1 with `--enable_grpc_healthcheck_service`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from sigserve.errors import Code, SigserveError, invalid_argument, unavailable
from sigserve.protos import MODEL_SERVICE, PREDICTION_SERVICE
from sigserve.server.grpc_handlers import PredictionServices
from sigserve.server.metrics import Metrics
from sigserve.server.options import ServerOptions

logger = logging.getLogger("sigserve.grpc")

INT32_MAX = 2**31 - 1
MAX_ERROR_MESSAGE = 1024  # grpc_status_util.cc

# grpc.StatusCode by canonical number: TensorFlow's codes are gRPC's codes.
_STATUS_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def grpc_status(code: Code) -> grpc.StatusCode:
    return _STATUS_BY_NUMBER.get(int(code), grpc.StatusCode.UNKNOWN)


def truncate_message(message: str) -> str:
    """TF Serving's ToGRPCStatus: at most 1024 characters, then `...TRUNCATED`."""
    if len(message) > MAX_ERROR_MESSAGE:
        return message[:MAX_ERROR_MESSAGE] + "...TRUNCATED"
    return message


def num_grpc_threads(options: ServerOptions) -> int:
    """`--grpc_max_threads`; 0 means TF Serving's default of 4 x schedulable CPUs."""
    if options.grpc_max_threads > 0:
        return options.grpc_max_threads
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return 4 * max(1, cpus)


# -- transport configuration -----------------------------------------------------------------------


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """`--grpc_channel_arguments=k=v,k=v`: values that parse as int32 are passed as ints."""
    args: list[tuple[str, int | str]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise invalid_argument(
                f"Invalid --grpc_channel_arguments entry '{item}': expected key=value pairs separated "
                "by commas, e.g. "
                "--grpc_channel_arguments=grpc.max_concurrent_streams=100,grpc.keepalive_time_ms=60000"
            )
        try:
            number = int(value)
        except ValueError:
            args.append((key, value))
            continue
        args.append((key, number) if -(2**31) <= number < 2**31 else (key, value))
    return args


def server_channel_options(options: ServerOptions) -> list[tuple[str, int | str]]:
    user = parse_channel_arguments(options.grpc_channel_arguments)
    given = {key for key, _ in user}
    defaults: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", INT32_MAX),
        ("grpc.max_send_message_length", INT32_MAX),
        # A second server on a busy port must fail to start, not silently share the port.
        ("grpc.so_reuseport", 0),
    ]
    return [(k, v) for k, v in defaults if k not in given] + user


def read_ssl_config(path: str) -> Any:
    from google.protobuf import text_format

    from sigserve.protos import ssl_config_pb2

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise invalid_argument(f"Could not read --ssl_config_file '{path}': {e.strerror}") from None
    config = ssl_config_pb2.SSLConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise invalid_argument(f"Invalid protobuf file: '{path}': {e}") from None
    return config


def server_credentials(options: ServerOptions) -> grpc.ServerCredentials | None:
    """TLS credentials from `--ssl_config_file` (SSLConfig text proto), or None for plaintext."""
    if not options.ssl_config_file:
        return None
    config = read_ssl_config(options.ssl_config_file)
    if not config.server_key or not config.server_cert:
        raise invalid_argument(
            f"--ssl_config_file '{options.ssl_config_file}' needs both server_key and server_cert "
            '(PEM text), e.g. server_key: "-----BEGIN PRIVATE KEY-----\\n..." '
            'server_cert: "-----BEGIN CERTIFICATE-----\\n..."'
        )
    if config.client_verify and not config.custom_ca:
        raise invalid_argument(
            f"--ssl_config_file '{options.ssl_config_file}' sets client_verify: true without custom_ca: "
            "give the PEM of the CA that signs the client certificates"
        )
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() if config.custom_ca else None,
        require_client_auth=bool(config.client_verify),
    )


def listen_addresses(options: ServerOptions) -> list[str]:
    addresses = []
    if options.port:
        host = options.grpc_host or "0.0.0.0"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        addresses.append(f"{host}:{options.port}")
    if options.grpc_socket_path:
        path = options.grpc_socket_path
        addresses.append(path if path.startswith("unix:") else "unix:" + path)
    return addresses


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> None:
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as e:
        raise unavailable(f"Could not bind the gRPC API to {address}: {e}") from None
    if bound == 0 and not address.startswith("unix:"):
        raise unavailable(f"Could not bind the gRPC API to {address}: the address is in use or not local")


# -- the services ----------------------------------------------------------------------------------

Body = Callable[[bytes, "float | None"], bytes]
InlineBody = Callable[[bytes, "float | None"], "bytes | None"]
Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


class _Frontend:
    """Adapts the byte-level RPC bodies to grpc.aio handlers: deadline, thread pool, status code and
    metrics.

    A body runs in the `executor` (`--grpc_max_threads` workers): parsing a 256 MB request, running
    TensorFlow and serializing the answer would otherwise stall every connection on the event loop.
    The exception is a Predict whose route qualifies for the short path (`inline.py`): it runs on the
    loop, because for a step of a few µs the hop to a worker and back costs more than the call.
    """

    def __init__(self, metrics: Metrics, executor: concurrent.futures.Executor) -> None:
        self.metrics = metrics
        self.executor = executor

    async def _call(
        self, context: grpc.aio.ServicerContext, body: Body, data: bytes, inline: InlineBody | None = None
    ) -> bytes:
        timeout = _timeout(context)
        try:
            if inline is not None:
                out = inline(data, timeout)
                if out is not None:
                    return out
            return await asyncio.get_running_loop().run_in_executor(self.executor, body, data, timeout)
        except SigserveError as e:
            await context.abort(grpc_status(e.code), truncate_message(e.message))
        except Exception as e:  # a bug: answer INTERNAL and keep serving
            logger.exception("Unexpected error in a gRPC call")
            await context.abort(grpc.StatusCode.INTERNAL, truncate_message(f"{type(e).__name__}: {e}"))
        raise AssertionError("unreachable: context.abort raises")

    def _counting(self, api: str, body: Callable[..., tuple[bytes, str, str] | None]) -> Any:
        """`body` with TF Serving's request_count / request_latency around it; None (an inline body
        that declined) is not counted: the pool call that follows is."""

        def run(data: bytes, timeout: float | None) -> bytes | None:
            started = time.perf_counter()
            model_name, signature, code = "", "", Code.OK
            declined = False
            try:
                result = body(data, timeout)
                if result is None:
                    declined = True
                    return None
                out, model_name, signature = result
                return out
            except SigserveError as e:
                code = e.code
                raise
            except Exception:
                code = Code.INTERNAL
                raise
            finally:
                if not declined:
                    if not model_name:
                        model_name = _model_name_of(data)
                    self.metrics.observe_request(
                        model_name=model_name,
                        api=api,
                        entrypoint="GRPC",
                        signature=signature,
                        code=code,
                        latency_seconds=time.perf_counter() - started,
                    )

        return run

    def counted(
        self,
        api: str,
        body: Callable[[bytes, float | None], tuple[bytes, str, str]],
        inline: Callable[[bytes, float | None], tuple[bytes, str, str] | None] | None = None,
    ) -> Handler:
        """Predict/Classify/Regress: the client's deadline is the run timeout; request metrics.
        `inline`, if given, is tried on the loop first and returns None to send the call to the pool."""
        pooled = self._counting(api, body)
        quick = self._counting(api, inline) if inline is not None else None

        async def handler(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._call(context, pooled, data, quick)

        return handler

    def timed(self, body: Body) -> Handler:
        async def handler(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._call(context, body, data)

        return handler

    def plain(self, body: Callable[[bytes], bytes]) -> Handler:
        def untimed(data: bytes, timeout: float | None) -> bytes:
            return body(data)

        async def handler(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._call(context, untimed, data)

        return handler


def _timeout(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds left before the client's deadline, or None when the client set none."""
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e9:
        return None
    return max(float(remaining), 0.0)


def _model_name_of(data: bytes) -> str:
    """The model name of a request that failed before it was resolved, for the request_count label."""
    from sigserve.protos import get_model_status_pb2

    # Field 1 of PredictRequest, ClassificationRequest and RegressionRequest is the ModelSpec, as in
    # GetModelStatusRequest, which has nothing else.
    try:
        return str(get_model_status_pb2.GetModelStatusRequest.FromString(data).model_spec.name)
    except Exception:
        return ""


def _unary(handler: Handler) -> grpc.RpcMethodHandler:
    # No (de)serializers: the handler takes and returns the wire bytes.
    return grpc.unary_unary_rpc_method_handler(handler)


def service_handlers(
    services: PredictionServices, metrics: Metrics, executor: concurrent.futures.Executor
) -> list[grpc.GenericRpcHandler]:
    front = _Frontend(metrics, executor)
    prediction = grpc.method_handlers_generic_handler(
        PREDICTION_SERVICE,
        {
            "Classify": _unary(front.counted("Classify", services.classify)),
            "Regress": _unary(front.counted("Regress", services.regress)),
            "Predict": _unary(front.counted("Predict", services.predict, services.predict_inline)),
            "MultiInference": _unary(front.timed(services.multi_inference)),
            "GetModelMetadata": _unary(front.plain(services.get_model_metadata)),
        },
    )
    model = grpc.method_handlers_generic_handler(
        MODEL_SERVICE,
        {
            "GetModelStatus": _unary(front.plain(services.get_model_status)),
            "HandleReloadConfigRequest": _unary(front.plain(services.handle_reload_config_request)),
        },
    )
    return [prediction, model]


async def _add_health_service(server: grpc.aio.Server) -> None:
    """grpc.health.v1 with TF Serving's service names (and the full names, and "") SERVING."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    servicer = health.aio.HealthServicer()
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", "ModelService", "PredictionService", MODEL_SERVICE, PREDICTION_SERVICE):
        await servicer.set(service, serving)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)


class GrpcServer:
    """The gRPC front end as the serve wiring drives it: `await start()`, `await stop(grace)`.

    A grpc.aio server on the serve loop (the REST server's loop), with a thread pool for the work.
    grpcio's thread-pool server was used before: it needs no loop, but on this 2-CPU machine its
    worker threads fight over the GIL for every RPC; measured with h2load (1-row Predict,
    concurrency 64, 3 interleaved rounds) the thread-pool server gave 1,957-2,459 req/s and grpc.aio
    with small predicts on the loop 2,873-3,278.
    """

    def __init__(
        self,
        server: grpc.aio.Server,
        addresses: list[str],
        executor: concurrent.futures.ThreadPoolExecutor,
        health: bool,
    ) -> None:
        self.server = server
        self.addresses = addresses
        self.executor = executor
        self.health = health

    async def start(self) -> None:
        if self.health:
            await _add_health_service(self.server)
        await self.server.start()

    async def stop(self, grace: float | None) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to `grace` seconds, then cancel them."""
        await self.server.stop(grace)
        # A cancelled RPC's TensorFlow call cannot be interrupted; its worker finishes on its own.
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(await self.server.wait_for_termination(timeout))


def create_server(core: Any, options: ServerOptions, metrics: Metrics) -> GrpcServer:
    """The gRPC front end for `core` (a `sigserve.manager.ServerCore`): bound, not started.

    Raises `SigserveError` for a bad `--ssl_config_file` / `--grpc_channel_arguments` or an address that
    cannot be bound, so `sigserve serve` reports a start-up failure instead of a traceback.
    """
    addresses = listen_addresses(options)
    if not addresses:
        raise invalid_argument(
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set. "
            "(e.g. --port=8500 or --grpc_socket_path=/tmp/sigserve.sock)"
        )
    credentials = server_credentials(options)
    channel_options = server_channel_options(options)
    services = PredictionServices(
        core, metrics, tensor_content=bool(options.enable_serialization_as_tensor_content)
    )
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=num_grpc_threads(options), thread_name_prefix="sigserve-grpc"
    )
    server = grpc.aio.server(
        handlers=service_handlers(services, metrics, executor),
        options=channel_options,
    )
    try:
        for address in addresses:
            _bind(server, address, credentials)
    except BaseException:
        executor.shutdown(wait=False)
        raise
    return GrpcServer(server, addresses, executor, bool(options.enable_grpc_healthcheck_service))
