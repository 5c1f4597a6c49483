"""gRPC server reflection and grpc.health.v1 on both transports (one implementation, served from the
method table): grpcio-reflection's own client lists and describes TF Serving's services under their
wire names and a request built from the reflected descriptors alone is answered (what grpcurl
does); the v1 reflection service answers too; health Watch streams the status as a reload adds a
model and as the server stops."""

from __future__ import annotations

import pathlib
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from sigserve.protos import INFERENCE_SERVICE, MODEL_SERVICE, PREDICTION_SERVICE
from tests.grpc_servers import grpc_target, serving, start_server, tf_stubs
from tests.servers import ServerProcess

HEALTH = "grpc.health.v1.Health"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
# What reflection lists: every service either transport serves.
SERVICES = {PREDICTION_SERVICE, MODEL_SERVICE, INFERENCE_SERVICE, HEALTH, V1ALPHA, V1}
# GRPCInferenceService as open_inference_grpc.proto declares it, in its order.
V2_METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")


@pytest.fixture(scope="module", params=["native", "grpcio"])
def server(
    request: pytest.FixtureRequest, fixtures_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("grpc_reflection")
    with serving(
        base / "models.config",
        [("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu", {})],
        ["--enable_grpc_healthcheck_service", f"--grpc_transport={request.param}"],
    ) as proc:
        yield proc


@pytest.fixture()
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(grpc_target(server)) as ch:
        yield ch


def test_reflection_lists_the_services_under_their_wire_names(channel: grpc.Channel) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    database = ProtoReflectionDescriptorDatabase(channel)
    assert set(database.get_services()) == SERVICES


def test_reflection_describes_tf_servings_services_and_messages(channel: grpc.Channel) -> None:
    from google.protobuf import descriptor_pool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2

    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service = pool.FindServiceByName(PREDICTION_SERVICE)
    # The same methods, in the same order, with the same types as TF Serving's own descriptors.
    theirs = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    assert [(m.name, m.input_type.full_name, m.output_type.full_name) for m in service.methods] == [
        (m.name, m.input_type.full_name, m.output_type.full_name) for m in theirs.methods
    ]
    assert service.file.name == "tensorflow_serving/apis/prediction_service.proto"
    # Messages carry TF's field numbers and types, down to TensorProto.
    ours, real = (
        pool.FindMessageTypeByName("tensorflow.serving.PredictRequest"),
        predict_pb2.PredictRequest.DESCRIPTOR,
    )
    for name in ("model_spec", "inputs", "output_filter"):
        assert ours.fields_by_name[name].number == real.fields_by_name[name].number
    tensor = ours.fields_by_name["inputs"].message_type.fields_by_name["value"].message_type
    assert tensor.full_name == "tensorflow.TensorProto"
    assert tensor.fields_by_name["float_val"].number == 5
    status = pool.FindServiceByName(MODEL_SERVICE)
    assert [m.name for m in status.methods] == ["GetModelStatus", "HandleReloadConfigRequest"]


def test_reflection_describes_the_open_inference_protocol(channel: grpc.Channel) -> None:
    """GRPCInferenceService and its messages under the protocol's own names (`inference.*`, in
    `open_inference_grpc.proto`), as a V2 client's grpcurl expects them."""
    from google.protobuf import descriptor_pool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service = pool.FindServiceByName(INFERENCE_SERVICE)
    assert service.file.name == "open_inference_grpc.proto"
    assert [(m.name, m.input_type.full_name, m.output_type.full_name) for m in service.methods] == [
        (name, f"inference.{name}Request", f"inference.{name}Response") for name in V2_METHODS
    ]
    infer = pool.FindMessageTypeByName("inference.ModelInferRequest")
    tensor = infer.fields_by_name["inputs"].message_type
    assert tensor.full_name == "inference.ModelInferRequest.InferInputTensor"
    assert infer.fields_by_name["raw_input_contents"].number == 7
    parameters = infer.fields_by_name["parameters"].message_type.fields_by_name["value"]
    assert parameters.message_type.full_name == "inference.InferParameter"


def test_a_request_built_from_reflection_alone_is_answered(channel: grpc.Channel) -> None:
    """What grpcurl does: descriptors from reflection, a message from them, the call by name."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    method = pool.FindServiceByName(PREDICTION_SERVICE).FindMethodByName("Predict")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    request = request_class()
    request.model_spec.name = "half_plus_two"
    x = request.inputs["x"]
    x.dtype = 1  # DT_FLOAT
    x.tensor_shape.dim.add(size=2)
    x.tensor_shape.dim.add(size=1)
    x.float_val.extend([1.0, 3.0])
    call = channel.unary_unary(
        f"/{PREDICTION_SERVICE}/Predict",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    response: Any = call(request, timeout=30)
    assert list(response.outputs["y"].float_val) == [2.5, 3.5]


def test_v1_reflection_answers_the_same(channel: grpc.Channel) -> None:
    from grpc_reflection.v1alpha import reflection_pb2

    # v1's messages have v1alpha's fields, so v1alpha's classes read and write them.
    info = channel.stream_stream(
        f"/{V1}/ServerReflectionInfo",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="tensorflow.serving.ModelService"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.Such"),
    ]
    listed, described, missing = list(info(iter(requests), timeout=30))
    assert {s.name for s in listed.list_services_response.service} == SERVICES
    from google.protobuf import descriptor_pb2

    names = {
        descriptor_pb2.FileDescriptorProto.FromString(raw).name
        for raw in described.file_descriptor_response.file_descriptor_proto
    }
    assert "tensorflow_serving/apis/model_service.proto" in names
    assert "tensorflow_serving/apis/model_management.proto" in names
    assert not any(name.startswith("sigserve/") for name in names)
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def _watch(channel: grpc.Channel, service: str, seen: queue.Queue[Any]) -> grpc.Future:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stream = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=service), timeout=120
    )

    def read() -> None:
        try:
            for response in stream:
                seen.put(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
        except grpc.RpcError as e:
            seen.put(e.code())

    threading.Thread(target=read, daemon=True).start()
    return stream


def _next(seen: queue.Queue[Any]) -> Any:
    return seen.get(timeout=60)


def test_health_watch_streams_status_changes_during_a_reload(
    server: ServerProcess, channel: grpc.Channel, fixtures_dir: pathlib.Path
) -> None:
    """A reload that adds a model: the server (and TF Serving's service names) go NOT_SERVING until
    it has loaded, as /readyz does; the new model's own name goes from unknown to SERVING."""
    from tests.test_grpc_reload import reload_request

    whole: queue.Queue[Any] = queue.Queue()
    model: queue.Queue[Any] = queue.Queue()
    watches = [_watch(channel, "PredictionService", whole), _watch(channel, "half_plus_three", model)]
    try:
        assert _next(whole) == "SERVING"
        assert _next(model) == "SERVICE_UNKNOWN"
        stubs = tf_stubs(grpc_target(server))
        try:
            stubs.model.HandleReloadConfigRequest(
                reload_request(
                    [
                        ("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu"),
                        ("half_plus_three", fixtures_dir / "saved_model_half_plus_three"),
                    ]
                ),
                timeout=120,
            )
        finally:
            stubs.close()
        assert [_next(whole), _next(whole)] == ["NOT_SERVING", "SERVING"]
        statuses = [_next(model)]
        while statuses[-1] != "SERVING":
            statuses.append(_next(model))
        assert statuses[0] in ("NOT_SERVING", "SERVING")
    finally:
        for watch in watches:
            watch.cancel()


def test_health_check_and_unknown_services(channel: grpc.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "PredictionService", MODEL_SERVICE, INFERENCE_SERVICE, "half_plus_two"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as e:
        health.Check(health_pb2.HealthCheckRequest(service="NoSuchService"), timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watch_sees_the_shutdown(fixtures_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """SIGTERM: every Watch gets NOT_SERVING, then ends UNAVAILABLE, without holding up the stop."""
    for transport in ("native", "grpcio"):
        proc = start_server(
            tmp_path / f"{transport}.config",
            [("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu", {})],
            [
                "--enable_grpc_healthcheck_service",
                f"--grpc_transport={transport}",
                "--shutdown_grace_seconds=30",
            ],
        )
        try:
            with grpc.insecure_channel(grpc_target(proc)) as ch:
                seen: queue.Queue[Any] = queue.Queue()
                _watch(ch, "", seen)
                assert _next(seen) == "SERVING"
                proc.proc.terminate()
                assert _next(seen) == "NOT_SERVING"
                assert _next(seen) == grpc.StatusCode.UNAVAILABLE
                assert proc.proc.wait(20) == 0
        finally:
            proc.stop()
            proc.cleanup()
