"""gRPC server reflection (grpc.reflection.v1alpha and v1) for both gRPC transports, so that
`grpcurl list`, `grpcurl describe` and grpcio-reflection's client see TF Serving's services.

sigserve's messages live in the proto package `sigserve.tensorflow[.serving]` (so that sigserve,
TensorFlow and tensorflow-serving-api share one process), but on the wire they are TF Serving's
`tensorflow.serving.*` messages: same field numbers, only the names differ (and the Open Inference
Protocol's `sigserve.inference.*` are its `inference.*`). Reflection must describe
the wire, so the descriptors it serves are ours renamed: package `sigserve.tensorflow...` ->
`tensorflow...`, file `sigserve/protos/predict.proto` -> `tensorflow_serving/apis/predict.proto`
(TF Serving's own paths), `sigserve/protos/open_inference.proto` -> `open_inference_grpc.proto` (the
protocol's), every type reference likewise. They go into a pool of their own, never the
default one, where tensorflow-serving-api may have registered the same names. The services
themselves (`prediction_service.proto`, `model_service.proto`, `GRPCInferenceService`) are declared
here, as TF Serving and the protocol declare them; sigserve routes by method path and has no
generated service code.

The answering is grpcio-reflection's own servicer (`ReflectionServicer`), fed one request at a
time; v1 and v1alpha messages have the same fields, so one servicer answers both.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import AsyncIterator, Iterable

from google.protobuf import descriptor_pb2, descriptor_pool

from sigserve.errors import invalid_argument
from sigserve.protos import INFERENCE_SERVICE, MODEL_SERVICE, PREDICTION_SERVICE
from sigserve.server.grpc_methods import StreamMethod
from sigserve.service import CallContext

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
SERVICES = (V1ALPHA, V1)

_OUR_PREFIX = "sigserve."
_OUR_DIR = "sigserve/protos/"
# Where TF Serving and TensorFlow keep each file (by our file's base name); others go to apis/.
_TF_DIRS = {
    "tensorflow/core/example/": ("example", "feature"),
    "tensorflow/core/framework/": ("graph", "resource_handle", "tensor", "tensor_shape", "types"),
    "tensorflow/core/protobuf/": (
        "error_codes",
        "meta_graph",
        "saved_object_graph",
        "saver",
        "struct",
        "saved_model",
        "fingerprint",
    ),
    "tensorflow_serving/config/": (
        "file_system_storage_path_source",
        "logging_config",
        "model_server_config",
        "monitoring_config",
        "ssl_config",
    ),
}
_TF_PATH = {base: directory + base + ".proto" for directory, bases in _TF_DIRS.items() for base in bases}
# The Open Inference Protocol declares its messages and service in one file of that name.
_TF_PATH["open_inference"] = "open_inference_grpc.proto"

# The two services as TF Serving declares them: (method, request, response), in its order.
_SERVICE_FILES = {
    PREDICTION_SERVICE: (
        "tensorflow_serving/apis/prediction_service.proto",
        ["classification", "get_model_metadata", "inference", "predict", "regression"],
        [
            ("Classify", "ClassificationRequest", "ClassificationResponse"),
            ("Regress", "RegressionRequest", "RegressionResponse"),
            ("Predict", "PredictRequest", "PredictResponse"),
            ("MultiInference", "MultiInferenceRequest", "MultiInferenceResponse"),
            ("GetModelMetadata", "GetModelMetadataRequest", "GetModelMetadataResponse"),
        ],
    ),
    MODEL_SERVICE: (
        "tensorflow_serving/apis/model_service.proto",
        ["get_model_status", "model_management"],
        [
            ("GetModelStatus", "GetModelStatusRequest", "GetModelStatusResponse"),
            ("HandleReloadConfigRequest", "ReloadConfigRequest", "ReloadConfigResponse"),
        ],
    ),
}

# GRPCInferenceService's methods in the protocol's order; each takes <name>Request, answers <name>Response.
_V2_METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")

# The files that declare the services' messages; their imports come with them.
_MESSAGE_FILES = (
    "classification",
    "get_model_metadata",
    "get_model_status",
    "inference",
    "model_management",
    "predict",
    "regression",
)


def wire_file_name(name: str) -> str:
    """`sigserve/protos/predict.proto` -> `tensorflow_serving/apis/predict.proto`."""
    if not name.startswith(_OUR_DIR):
        return name
    base = name[len(_OUR_DIR) : -len(".proto")]
    return _TF_PATH.get(base, f"tensorflow_serving/apis/{base}.proto")


def _wire_name(name: str) -> str:
    """A package or a type reference (`.sigserve.tensorflow.X`) under TF's name."""
    if name.startswith("." + _OUR_PREFIX):
        return "." + name[len(_OUR_PREFIX) + 1 :]
    if name.startswith(_OUR_PREFIX):
        return name[len(_OUR_PREFIX) :]
    return name


def _rename_message(message: descriptor_pb2.DescriptorProto) -> None:
    for field in [*message.field, *message.extension]:
        if field.type_name:
            field.type_name = _wire_name(field.type_name)
        if field.extendee:
            field.extendee = _wire_name(field.extendee)
    for nested in message.nested_type:
        _rename_message(nested)


def wire_file(proto: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """One of our files as TF Serving's: names, package, imports and type references."""
    out = descriptor_pb2.FileDescriptorProto()
    out.CopyFrom(proto)
    out.name = wire_file_name(proto.name)
    out.package = _wire_name(proto.package)
    out.dependency[:] = [wire_file_name(name) for name in proto.dependency]
    for message in out.message_type:
        _rename_message(message)
    for field in out.extension:
        field.type_name = _wire_name(field.type_name)
        field.extendee = _wire_name(field.extendee)
    return out


def _declare_service(
    proto: descriptor_pb2.FileDescriptorProto, service: str, methods: Iterable[tuple[str, str, str]]
) -> None:
    """Add `service` (a full name in `proto`'s package) with its (method, request, response)s."""
    package, _, name = service.rpartition(".")
    declared = proto.service.add(name=name)
    for method, request, response in methods:
        declared.method.add(
            name=method, input_type=f".{package}.{request}", output_type=f".{package}.{response}"
        )


def _service_file(service: str) -> descriptor_pb2.FileDescriptorProto:
    path, imports, methods = _SERVICE_FILES[service]
    proto = descriptor_pb2.FileDescriptorProto(name=path, package=service.rpartition(".")[0], syntax="proto3")
    proto.dependency.extend(_TF_PATH.get(base, f"tensorflow_serving/apis/{base}.proto") for base in imports)
    _declare_service(proto, service, methods)
    return proto


def _inference_file() -> descriptor_pb2.FileDescriptorProto:
    """The Open Inference Protocol's file as the protocol publishes it: its messages and the service."""
    from sigserve.protos import open_inference_pb2

    proto = descriptor_pb2.FileDescriptorProto()
    open_inference_pb2.DESCRIPTOR.CopyToProto(proto)
    proto = wire_file(proto)
    _declare_service(proto, INFERENCE_SERVICE, [(m, m + "Request", m + "Response") for m in _V2_METHODS])
    return proto


def _add_with_dependencies(
    pool: descriptor_pool.DescriptorPool, file: object, added: set[str], rename: bool
) -> None:
    """Add `file` (a FileDescriptor) after its imports, each once."""
    for dependency in file.dependencies:  # type: ignore[attr-defined]
        _add_with_dependencies(pool, dependency, added, rename)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)  # type: ignore[attr-defined]
    if rename:
        proto = wire_file(proto)
    if proto.name not in added:
        added.add(proto.name)
        pool.Add(proto)


@functools.cache
def wire_pool() -> descriptor_pool.DescriptorPool:
    """TF Serving's services and messages and the Open Inference Protocol's (renamed from ours), gRPC
    health, and reflection itself (v1alpha, and v1 as its copy under the v1 package)."""
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    for name in _MESSAGE_FILES:
        module = importlib.import_module(f"sigserve.protos.{name}_pb2")
        _add_with_dependencies(pool, module.DESCRIPTOR, added, rename=True)
    for service in _SERVICE_FILES:
        pool.Add(_service_file(service))
    pool.Add(_inference_file())
    _add_with_dependencies(pool, health_pb2.DESCRIPTOR, added, rename=False)
    _add_with_dependencies(pool, reflection_pb2.DESCRIPTOR, added, rename=False)
    v1 = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(v1)
    v1.name = "grpc/reflection/v1/reflection.proto"
    v1.package = "grpc.reflection.v1"
    for message in v1.message_type:
        for field in message.field:
            if field.type_name.startswith(".grpc.reflection.v1alpha."):
                field.type_name = ".grpc.reflection.v1." + field.type_name.rsplit(".", 1)[1]
    for service_proto in v1.service:
        for method in service_proto.method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
    pool.Add(v1)
    return pool


def reflection_method(service_names: Iterable[str]) -> StreamMethod:
    """ServerReflectionInfo listing `service_names` (those the pool describes are described)."""
    from grpc_reflection.v1alpha import reflection_pb2
    from grpc_reflection.v1alpha.reflection import ReflectionServicer

    names = sorted(set(service_names))
    servicer: ReflectionServicer | None = None

    def answer(data: bytes) -> bytes:
        nonlocal servicer
        if servicer is None:  # the pool is built on first use, not at start-up
            servicer = ReflectionServicer(names, pool=wire_pool())
        try:
            request = reflection_pb2.ServerReflectionRequest.FromString(data)
        except Exception as e:  # google.protobuf.message.DecodeError and friends
            raise invalid_argument(f"Could not parse a ServerReflectionRequest: {e}") from None
        response = next(iter(servicer.ServerReflectionInfo(iter((request,)), None)))
        return bytes(response.SerializeToString())

    async def info(requests: AsyncIterator[bytes], ctx: CallContext) -> AsyncIterator[bytes]:
        async for data in requests:
            yield answer(data)

    return StreamMethod(info, client_streaming=True, api="ServerReflectionInfo")
