"""TF Serving's gRPC API (tfserving-api.md §2): PredictionService and ModelService under TF
Serving's service names, so every existing client stub works unchanged.

This module configures the gRPC front end from the flags and picks its transport:
`--grpc_transport=native` (the default) serves with sigserve's own HTTP/2 transport (`grpc_h2.py`,
about 4x grpcio's throughput for small Predicts on the benchmark machine), `grpcio` with grpcio's
grpc.aio server (below), which applies every `--grpc_channel_arguments` key. Both serve the same
method table (`grpc_methods.py`) with raw bytes: our messages live in the `sigserve.tensorflow.serving`
proto package but keep TensorFlow's field numbers, so their bytes are TF Serving's bytes, and only the
method paths (`/tensorflow.serving.PredictionService/Predict`) carry TF Serving's names.

Transport (server.cc): `--grpc_host:--port` and/or `unix:--grpc_socket_path`; TLS from
`--ssl_config_file`; message size INT32_MAX both ways; `--grpc_channel_arguments`;
grpc.health.v1 with `--enable_grpc_healthcheck_service` (`health_service.py`); server reflection,
always on as in TF Serving (`grpc_reflection.py`). Health and reflection are entries of the same
method table as the TF Serving services, so both transports serve one implementation of each.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc

from sigserve.errors import invalid_argument, unavailable
from sigserve.protos import INFERENCE_SERVICE, MODEL_SERVICE, PREDICTION_SERVICE
from sigserve.server import grpc_reflection, health_service
from sigserve.server.grpc_handlers import PredictionServices
from sigserve.server.grpc_methods import Method, StreamMethod, call_method, method_table, rpc_status
from sigserve.server.http2.limits import LIMIT_KEYS
from sigserve.server.options import ServerOptions, worker_threads
from sigserve.service import PredictionService

Table = dict[str, dict[str, "Method | StreamMethod"]]

logger = logging.getLogger("sigserve.grpc")

INT32_MAX = 2**31 - 1

# grpc.StatusCode by canonical number: TensorFlow's codes are gRPC's codes.
_STATUS_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def grpc_status(code: int) -> grpc.StatusCode:
    return _STATUS_BY_NUMBER.get(int(code), grpc.StatusCode.UNKNOWN)


def num_grpc_threads(options: ServerOptions) -> int:
    """`--grpc_max_threads`; 0 means TF Serving's default of 4 x schedulable CPUs."""
    return worker_threads(options.grpc_max_threads)


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
    from sigserve.protos.text import error_text

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise invalid_argument(f"Could not read --ssl_config_file '{path}': {e.strerror}") from None
    config = ssl_config_pb2.SSLConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise invalid_argument(f"Invalid protobuf file: '{path}': {error_text(e)}") from None
    return config


def checked_ssl_config(options: ServerOptions) -> Any:
    """`--ssl_config_file` read and checked, or None for plaintext."""
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
    return config


def ssl_context(options: ServerOptions) -> Any:
    """The native transport's TLS context from `--ssl_config_file`, or None for plaintext."""
    config = checked_ssl_config(options)
    if config is None:
        return None
    from sigserve.server.grpc_h2 import tls_context

    return tls_context(config.server_key, config.server_cert, config.custom_ca, bool(config.client_verify))


def server_credentials(options: ServerOptions) -> grpc.ServerCredentials | None:
    """grpcio's TLS credentials from `--ssl_config_file`, or None for plaintext."""
    config = checked_ssl_config(options)
    if config is None:
        return None
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
        _explain_bind_failure(address, str(e))
    if bound == 0 and not address.startswith("unix:"):
        _explain_bind_failure(address, "the address is in use or not local")


def _explain_bind_failure(address: str, grpcio_says: str) -> NoReturn:
    """grpcio only says that binding failed: binding the address ourselves says why (a busy port
    gets the native transport's message, with what to do)."""
    from sigserve.server.grpc_h2 import bind

    for sock in bind(address):  # raises the reason, if binding fails again
        sock.close()
    raise unavailable(f"Could not bind the gRPC API to {address}: {grpcio_says}")


# -- grpcio's server (--grpc_transport=grpcio) -------------------------------------------------------


def _grpcio_handler(method: Method, executor: concurrent.futures.Executor) -> grpc.RpcMethodHandler:
    """A grpc.aio handler running `method`: inline on the loop if it accepts, else in `executor`."""

    async def handler(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        ctx = method.context(_timeout(context), _metadata(context))
        try:
            return await call_method(method, data, ctx, executor)
        except Exception as e:
            code, message = rpc_status(e)
            await context.abort(grpc_status(code), message)
        raise AssertionError("unreachable: context.abort raises")

    # No (de)serializers: the handler takes and returns the wire bytes.
    return grpc.unary_unary_rpc_method_handler(handler)


def _timeout(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds left before the client's deadline, or None when the client set none."""
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e9:
        return None
    return max(float(remaining), 0.0)


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's metadata by lower-case name (the last value of a repeated key wins)."""
    return {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


def _grpcio_stream_handler(method: StreamMethod) -> grpc.RpcMethodHandler:
    """A grpc.aio handler running a streaming method's generator on the loop."""

    async def answers(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        try:
            async for answer in method.body(requests, method.context(_timeout(context), _metadata(context))):
                yield answer
        except Exception as e:
            code, message = rpc_status(e)
            await context.abort(grpc_status(code), message)

    if method.client_streaming:
        return grpc.stream_stream_rpc_method_handler(answers)

    async def one_request(data: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for answer in answers(_one(data), context):
            yield answer

    return grpc.unary_stream_rpc_method_handler(one_request)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def service_handlers(table: Table, executor: concurrent.futures.Executor) -> list[grpc.GenericRpcHandler]:
    return [
        grpc.method_handlers_generic_handler(
            service,
            {
                name: _grpcio_stream_handler(method)
                if isinstance(method, StreamMethod)
                else _grpcio_handler(method, executor)
                for name, method in methods.items()
            },
        )
        for service, methods in table.items()
    ]


def service_table(services: PredictionServices, health: health_service.HealthService | None) -> Table:
    """Every service either transport serves: TF Serving's two, grpc.health.v1 (if enabled) and
    server reflection (v1alpha and v1), which lists them all."""
    table: Table = {service: dict(methods) for service, methods in method_table(services).items()}
    if health is not None:
        table[health_service.SERVICE] = health.methods()
    reflection = grpc_reflection.reflection_method([*table, *grpc_reflection.SERVICES])
    for name in grpc_reflection.SERVICES:
        table[name] = {"ServerReflectionInfo": reflection}
    return table


class GrpcServer:
    """grpcio's front end (`--grpc_transport=grpcio`) as the serve wiring drives it: `await start()`,
    `await stop(grace)`.

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
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.server = server
        self.addresses = addresses
        self.executor = executor
        self.on_stop = on_stop

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace: float | None) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to `grace` seconds, then cancel them."""
        if self.on_stop is not None:
            await self.on_stop()
        await self.server.stop(grace)
        # A cancelled RPC's TensorFlow call cannot be interrupted; its worker finishes on its own.
        self.executor.shutdown(wait=False, cancel_futures=True)


NATIVE_CHANNEL_ARGUMENTS = frozenset({*LIMIT_KEYS, "grpc.so_reuseport"})
HEALTH_SERVICE_NAMES = [
    "",
    "ModelService",
    "PredictionService",
    MODEL_SERVICE,
    PREDICTION_SERVICE,
    INFERENCE_SERVICE,
]


def create_server(service: PredictionService, options: ServerOptions) -> Any:
    """The gRPC front end for `service`: bound, not started.

    `--grpc_transport=native` (the default) serves with `grpc_h2`, `grpcio` with grpcio's server.
    Raises `SigserveError` for a bad `--ssl_config_file` / `--grpc_channel_arguments` /
    `--grpc_transport` or an address that cannot be bound, so `sigserve serve` reports a start-up
    failure instead of a traceback.
    """
    addresses = listen_addresses(options)
    if not addresses:
        raise invalid_argument(
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set. "
            "(e.g. --port=8500 or --grpc_socket_path=/tmp/sigserve.sock)"
        )
    if options.grpc_transport not in ("native", "grpcio"):
        raise invalid_argument(
            f"Unknown --grpc_transport '{options.grpc_transport}': use native (the default) or grpcio"
        )
    channel_options = server_channel_options(options)
    services = PredictionServices(
        service, tensor_content=bool(options.enable_serialization_as_tensor_content)
    )
    health = (
        health_service.HealthService(service, HEALTH_SERVICE_NAMES)
        if options.enable_grpc_healthcheck_service
        else None
    )
    table = service_table(services, health)
    on_stop = health.shutdown if health is not None else None
    if options.grpc_transport == "native":
        from sigserve.server import grpc_h2

        tls = ssl_context(options)
        ignored = sorted({key for key, _ in channel_options} - NATIVE_CHANNEL_ARGUMENTS)
        if ignored:
            logger.warning(
                "--grpc_channel_arguments %s are grpcio settings the native gRPC transport does not use; "
                "run with --grpc_transport=grpcio to apply them",
                ",".join(ignored),
            )
        methods = {
            f"/{service_name}/{name}": method
            for service_name, entries in table.items()
            for name, method in entries.items()
        }
        executor = _executor(options)
        try:
            return grpc_h2.create(
                methods,
                executor,
                addresses,
                tls=tls,
                channel_arguments=dict(channel_options),
                on_stop=on_stop,
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
    credentials = server_credentials(options)
    executor = _executor(options)
    native_only = sorted({key for key, _ in channel_options if key.startswith("sigserve.")})
    if native_only:
        logger.warning(
            "--grpc_channel_arguments %s apply to the native gRPC transport only; grpcio ignores them",
            ",".join(native_only),
        )
    server = grpc.aio.server(
        handlers=service_handlers(table, executor),
        options=[(key, value) for key, value in channel_options if not key.startswith("sigserve.")],
    )
    try:
        for address in addresses:
            _bind(server, address, credentials)
    except BaseException:
        executor.shutdown(wait=False)
        raise
    return GrpcServer(server, addresses, executor, on_stop)


def _executor(options: ServerOptions) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=num_grpc_threads(options), thread_name_prefix="sigserve-grpc"
    )
