"""sigserve as a Ray Serve application: replicas, autoscaling and rolling updates from Ray Serve;
every API, flag and behaviour from sigserve.

Each replica is a whole sigserve server without its own listeners (`server.serve.build`): its own
model manager (versions, labels, hot reload from the file system, `--model_config_file` polling),
batching and metrics. Ray Serve's HTTP proxy hands every request to sigserve's own ASGI app, so all
REST routes work unchanged (TF Serving's API, `/healthz`, `/readyz`, the metrics page). Ray Serve's
gRPC proxy dispatches TF Serving's PredictionService and ModelService calls by method name to the
replica, which runs sigserve's gRPC method bodies on the wire bytes: the proxy registers the two
services without (de)serializers (`GRPC_SERVICER_FUNCTIONS`), so it never parses a message and needs
neither TensorFlow nor `tensorflow-serving-api`.

A replica starts taking traffic only once its models are AVAILABLE (the constructor waits for them),
so a replica being added or replaced never answers "not found".

    # TF Serving's flags as key=value (or after `--`, as --flag=value); Ray Serve's own:
    # num_replicas, min_replicas, max_replicas, target_ongoing_requests, max_ongoing_requests, num_cpus
    serve run sigserve.integrations.ray_serve:app model_name=half_plus_two \\
        model_base_path=/models/half_plus_two num_replicas=2
    serve run deploy/ray/serve.yaml   # REST on 8501, gRPC on 8500, autoscaling 1-4 replicas

    from sigserve.integrations import ray_serve
    from sigserve.server.options import ServerOptions
    ray_serve.run(ray_serve.build_app(ServerOptions(model_name="m", model_base_path="/models/m"),
                                      num_replicas=2), http_port=8501, grpc_port=8500)
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import io
import logging
import math
from collections.abc import Mapping
from typing import Any

import grpc
from ray import serve
from ray.serve.handle import DeploymentHandle

from sigserve.errors import Code, SigserveError
from sigserve.protos import MODEL_SERVICE, PREDICTION_SERVICE
from sigserve.server.options import ServerOptions

logger = logging.getLogger("sigserve.ray_serve")

# TF Serving's RPCs (server/grpc_methods.method_table): the replica has a method of each name, which
# is how Ray Serve's gRPC proxy routes (by the last path segment, whatever the service).
PREDICTION_METHODS = ("Classify", "Regress", "Predict", "MultiInference", "GetModelMetadata")
MODEL_METHODS = ("GetModelStatus", "HandleReloadConfigRequest")
GRPC_SERVICER_FUNCTIONS = [
    "sigserve.integrations.ray_serve.add_PredictionServiceServicer_to_server",
    "sigserve.integrations.ray_serve.add_ModelServiceServicer_to_server",
]
REPLICA_HEADER = b"sigserve-replica"  # on every REST response: which replica answered
# Ray Serve's own options that `app(args)` takes next to sigserve's flags.
SERVE_OPTIONS = (
    "num_replicas",
    "min_replicas",
    "max_replicas",
    "target_ongoing_requests",
    "max_ongoing_requests",
    "num_cpus",
)


# -- the proxy side: TF Serving's services, bytes in and out ---------------------------------------


def _register(service: str, methods: tuple[str, ...], server: Any) -> None:
    def unused(request: bytes, context: Any) -> bytes:  # Ray Serve replaces every handler
        raise NotImplementedError

    handlers = {name: grpc.unary_unary_rpc_method_handler(unused) for name in methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))


def add_PredictionServiceServicer_to_server(servicer: Any, server: Any) -> None:
    """TF Serving's `tensorflow.serving.PredictionService`, for `grpc_servicer_functions`."""
    _register(PREDICTION_SERVICE, PREDICTION_METHODS, server)


def add_ModelServiceServicer_to_server(servicer: Any, server: Any) -> None:
    """TF Serving's `tensorflow.serving.ModelService`, for `grpc_servicer_functions`."""
    _register(MODEL_SERVICE, MODEL_METHODS, server)


class WireMessage:
    """A response already serialized: the replica sends `SerializeToString()` of what a method returns."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data


# -- the replica ------------------------------------------------------------------------------------


class _ReplicaHeader:
    """sigserve's ASGI app, with the replica's id on every response (which replica answered is the
    first question when replicas disagree)."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER, replica.encode("latin-1"))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


class SigserveReplica:
    """One Ray Serve replica: a sigserve server whose listeners are Ray Serve's proxies."""

    async def __init__(self, options: ServerOptions) -> None:  # type: ignore[misc]  # Ray Serve awaits it
        from sigserve.server import serve as serve_module
        from sigserve.server.gcfreeze import GcFreezer
        from sigserve.server.grpc_handlers import PredictionServices
        from sigserve.server.grpc_methods import method_table
        from sigserve.server.grpc_server import num_grpc_threads

        self.options = options
        self.parts = serve_module.build(options)
        services = PredictionServices(
            self.parts.service, tensor_content=bool(options.enable_serialization_as_tensor_content)
        )
        self.methods = {name: m for table in method_table(services).values() for name, m in table.items()}
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=num_grpc_threads(options), thread_name_prefix="sigserve-grpc"
        )
        try:
            self.replica = str(serve.get_replica_context().replica_id.unique_id)
        except Exception:  # constructed outside a replica (local testing mode)
            self.replica = "local"
        loop = asyncio.get_running_loop()
        # Ray Serve routes to a replica once its constructor returns: load first, then take traffic.
        await loop.run_in_executor(None, self.parts.core.start, True)
        self.freezer = GcFreezer(loop)
        self.freezer.freeze_now()
        self.freezer.watch(self.parts.core)
        self.poller: asyncio.Task[None] | None = None
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            self.poller = asyncio.ensure_future(
                serve_module.poll_config_file(options, self.parts.service, self.parts.app, {})
            )
        logger.info("sigserve replica %s: models AVAILABLE", self.replica)

    def __serve_build_asgi_app__(self) -> Any:
        return _ReplicaHeader(self.parts.app, self.replica)

    def check_health(self) -> None:
        """Ray Serve's health check: a replica that has stopped is restarted."""
        if self.parts.app.shutting_down:
            raise RuntimeError("sigserve replica is shutting down")

    async def __del__(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
        self.freezer.close()
        await asyncio.get_running_loop().run_in_executor(None, self.parts.stop)
        self.executor.shutdown(wait=False)

    async def _rpc(self, name: str, request: bytes, grpc_context: Any) -> WireMessage:
        from sigserve.server.grpc_methods import call_method, rpc_status
        from sigserve.server.grpc_server import grpc_status

        method = self.methods[name]
        metadata = getattr(grpc_context, "_invocation_metadata_dict", None) or {}
        # Ray Serve's proxy passes no client deadline on; its own request_timeout_s applies.
        ctx = method.context(None, metadata)
        try:
            return WireMessage(await call_method(method, request, ctx, self.executor))
        except Exception as e:
            code, message = rpc_status(e)
            grpc_context.set_code(grpc_status(code))
            grpc_context.set_details(message)
            return WireMessage(b"")

    async def Predict(self, request: bytes, grpc_context: Any) -> WireMessage:
        return await self._rpc("Predict", request, grpc_context)

    async def Classify(self, request: bytes, grpc_context: Any) -> WireMessage:
        return await self._rpc("Classify", request, grpc_context)

    async def Regress(self, request: bytes, grpc_context: Any) -> WireMessage:
        return await self._rpc("Regress", request, grpc_context)

    async def MultiInference(self, request: bytes, grpc_context: Any) -> WireMessage:
        return await self._rpc("MultiInference", request, grpc_context)

    async def GetModelMetadata(self, request: bytes, grpc_context: Any) -> WireMessage:
        return await self._rpc("GetModelMetadata", request, grpc_context)

    async def GetModelStatus(self, request: bytes, grpc_context: Any) -> WireMessage:
        return await self._rpc("GetModelStatus", request, grpc_context)

    async def HandleReloadConfigRequest(self, request: bytes, grpc_context: Any) -> WireMessage:
        """Refused: the call reaches one replica, whose config would then differ from the others'."""
        from sigserve.server.grpc_server import grpc_status

        grpc_context.set_code(grpc_status(Code.UNIMPLEMENTED))
        grpc_context.set_details(
            "HandleReloadConfigRequest reaches only one Ray Serve replica; change the models for all of "
            "them with --model_config_file and --model_config_file_poll_wait_seconds, or redeploy the "
            "application (serve deploy) for a rolling update"
        )
        return WireMessage(b"")


SigserveDeployment = serve.ingress()(SigserveReplica)


# -- building the application -----------------------------------------------------------------------


def build_app(
    options: ServerOptions | None = None, *, name: str = "sigserve", **deployment_options: Any
) -> Any:
    """A Ray Serve `Application` serving `options` (sigserve serve's flags) on every replica.

    `deployment_options` are `serve.deployment`'s: `num_replicas` (or "auto"), `autoscaling_config`,
    `ray_actor_options` (default one CPU per replica), `max_ongoing_requests`, ... Unless the flags
    set TensorFlow's thread counts, each replica uses as many as it has CPUs (Ray Serve's replicas
    share the machine; TensorFlow would otherwise start a pool per core in each)."""
    from sigserve.server import serve as serve_module

    options = options or ServerOptions()
    serve_module.validate(options)
    serve_module.build_model_config(options)  # an unreadable --model_config_file fails here, not per replica
    cpus = float((deployment_options.get("ray_actor_options") or {}).get("num_cpus", 1.0))
    if not (
        options.tensorflow_session_parallelism
        or options.tensorflow_intra_op_parallelism
        or options.tensorflow_inter_op_parallelism
    ):
        options = dataclasses.replace(options, tensorflow_session_parallelism=max(1, math.ceil(cpus)))
    deployment = serve.deployment(name=name)(SigserveDeployment)
    if deployment_options:
        deployment = deployment.options(**deployment_options)
    return deployment.bind(options)


def app(args: Mapping[str, Any]) -> Any:
    """`serve run sigserve.integrations.ray_serve:app key=value ...`: sigserve serve's flags (names as
    TF Serving's, with or without leading dashes), plus Ray Serve's `SERVE_OPTIONS`."""
    flags: dict[str, str] = {}
    serve_args: dict[str, str] = {}
    for key, value in args.items():
        name = str(key).lstrip("-")
        (serve_args if name in SERVE_OPTIONS else flags)[name] = str(value)
    return build_app(parse_flags(flags), **deployment_options(serve_args))


def parse_flags(flags: Mapping[str, str]) -> ServerOptions:
    """sigserve serve's flags, parsed by `sigserve serve`'s own parser (types, booleans, env vars,
    TF Serving's accepted-but-ignored flags)."""
    from sigserve.commands import serve as serve_command

    parser = argparse.ArgumentParser(prog="sigserve.integrations.ray_serve:app")
    serve_command.add_parser(parser.add_subparsers(dest="command"))
    argv = ["serve", *(f"--{k}={v}" for k, v in flags.items())]
    errors = io.StringIO()
    problem = ""
    try:
        with contextlib.redirect_stderr(errors):
            namespace, unknown = parser.parse_known_args(argv)
        if unknown:
            problem = "unknown " + ", ".join(u.split("=", 1)[0].lstrip("-") for u in unknown)
    except SystemExit:
        lines = errors.getvalue().strip().splitlines()
        problem = lines[-1] if lines else "cannot parse them"
    if problem:
        raise SigserveError(
            Code.INVALID_ARGUMENT,
            f"Bad application arguments ({problem}). Give sigserve serve's flags, e.g. "
            f"model_name=m model_base_path=/models/m, and Ray Serve's {', '.join(SERVE_OPTIONS)}",
        )
    return serve_command.options_from_args(namespace)


def deployment_options(args: Mapping[str, str]) -> dict[str, Any]:
    """Ray Serve's options from `app()`'s string arguments."""
    out: dict[str, Any] = {}
    try:
        if "num_replicas" in args:
            value = args["num_replicas"]
            out["num_replicas"] = value if value == "auto" else int(value)
        autoscaling = {k: int(args[k]) for k in ("min_replicas", "max_replicas") if k in args}
        if "target_ongoing_requests" in args:
            autoscaling["target_ongoing_requests"] = float(args["target_ongoing_requests"])  # type: ignore[assignment]
        if autoscaling:
            if "num_replicas" in out:
                raise SigserveError(
                    Code.INVALID_ARGUMENT,
                    "Give num_replicas (a fixed count) or min_replicas/max_replicas (autoscaling), not both",
                )
            out["autoscaling_config"] = autoscaling
        if "max_ongoing_requests" in args:
            out["max_ongoing_requests"] = int(args["max_ongoing_requests"])
        if "num_cpus" in args:
            out["ray_actor_options"] = {"num_cpus": float(args["num_cpus"])}
    except ValueError as e:
        raise SigserveError(Code.INVALID_ARGUMENT, f"Bad Ray Serve option: {e}") from None
    return out


def run(
    application: Any,
    *,
    http_host: str = "127.0.0.1",
    http_port: int = 8501,
    grpc_port: int = 8500,
    name: str = "sigserve",
    blocking: bool = False,
) -> DeploymentHandle:
    """Start Ray Serve with TF Serving's ports (REST `http_port`, gRPC `grpc_port`; 0 turns gRPC off)
    and deploy `application` at the root path. Serve's options apply only if Serve is not running."""
    grpc_options: dict[str, Any] = {}
    if grpc_port:
        grpc_options = {"port": grpc_port, "grpc_servicer_functions": GRPC_SERVICER_FUNCTIONS}
    serve.start(http_options={"host": http_host, "port": http_port}, grpc_options=grpc_options or None)
    return serve.run(application, name=name, route_prefix="/", blocking=blocking)
