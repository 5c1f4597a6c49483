"""End to end over gRPC with TF Serving's own Python stubs (tensorflow-serving-api) against
`sigserve serve`: every RPC of tfserving-api.md §2, its success path and each error class of §2.3
and §3, on TF Serving's test models."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from tests.grpc_servers import (
    Stubs,
    export_spin_model,
    fixture_models,
    grpc_target,
    metrics_text,
    rpc_error,
    start_server,
    tf_stubs,
    wait_for_metric,
)
from tests.servers import ServerProcess

TWO_VERSIONS = "saved_model_half_plus_two_2_versions"


@pytest.fixture(scope="module", params=["native", "grpcio"])
def server(
    request: pytest.FixtureRequest, fixtures_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Every test runs against both gRPC transports: sigserve's own HTTP/2 and grpcio's server."""
    base = tmp_path_factory.mktemp("grpc_api")
    spin = export_spin_model(base / "models")
    proc = start_server(
        base / "models.config",
        [*fixture_models(fixtures_dir), ("spin", spin, {})],
        [
            "--enable_grpc_healthcheck_service",
            "--grpc_channel_arguments=grpc.max_concurrent_streams=1000",
            f"--grpc_transport={request.param}",
        ],
    )
    try:
        yield proc
    finally:
        proc.stop()
        proc.cleanup()


@pytest.fixture(scope="module")
def stubs(server: ServerProcess) -> Iterator[Stubs]:
    s = tf_stubs(grpc_target(server))
    yield s
    s.close()


# -- request builders (TF Serving's own messages) --------------------------------------------------


def predict_request(model: str = "half_plus_two", **inputs: Any) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


def x_request(model: str = "half_plus_two", values: Any = ((1.0,), (2.0,), (5.0,))) -> Any:
    return predict_request(model, x=np.asarray(values, np.float32))


def outputs_of(response: Any) -> dict[str, np.ndarray]:
    import tensorflow as tf

    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def examples_input(message: Any, *values: float) -> None:
    for v in values:
        example = message.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(v)


def error_details(error: grpc.RpcError, code: grpc.StatusCode) -> str:
    call: Any = error
    assert call.code() == code, (call.code(), call.details())
    return str(call.details())


# -- Predict ---------------------------------------------------------------------------------------


def test_predict_half_plus_two(stubs: Stubs) -> None:
    response = stubs.prediction.Predict(x_request(), timeout=60)
    np.testing.assert_allclose(outputs_of(response)["y"], [[2.5], [3.0], [4.5]])
    assert outputs_of(response)["y"].dtype == np.float32
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 123


def test_predict_uses_typed_fields_by_default(stubs: Stubs) -> None:
    """Without --enable_serialization_as_tensor_content outputs use float_val (Tensor::AsProtoField)."""
    y = stubs.prediction.Predict(x_request(), timeout=60).outputs["y"]
    assert list(y.float_val) == [2.5, 3.0, 4.5]
    assert y.tensor_content == b""
    assert [d.size for d in y.tensor_shape.dim] == [3, 1]


def test_predict_accepts_tensor_content_and_a_single_value_fills_the_shape(stubs: Stubs) -> None:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    x = request.inputs["x"]
    x.dtype = 1  # DT_FLOAT
    x.tensor_shape.dim.add().size = 2
    x.tensor_shape.dim.add().size = 1
    x.tensor_content = np.asarray([4.0, 6.0], np.float32).tobytes()
    np.testing.assert_allclose(outputs_of(stubs.prediction.Predict(request, timeout=60))["y"], [[4.0], [5.0]])

    request.inputs["x"].ClearField("tensor_content")
    request.inputs["x"].float_val.append(2.0)  # one value, shape [2, 1]: repeated (Tensor::FromProto)
    np.testing.assert_allclose(outputs_of(stubs.prediction.Predict(request, timeout=60))["y"], [[3.0], [3.0]])


def test_predict_by_version_and_by_label(stubs: Stubs) -> None:
    request = x_request(TWO_VERSIONS, [[1.0]])
    assert stubs.prediction.Predict(request, timeout=60).model_spec.version.value == 124  # latest
    request.model_spec.version.value = 123
    assert stubs.prediction.Predict(request, timeout=60).model_spec.version.value == 123
    request.model_spec.version_label = "canary"
    response = stubs.prediction.Predict(request, timeout=60)
    assert response.model_spec.version.value == 124
    np.testing.assert_allclose(outputs_of(response)["y"], [[2.5]])
    request.model_spec.version_label = "stable"
    assert stubs.prediction.Predict(request, timeout=60).model_spec.version.value == 123


def test_predict_named_signature_and_output_filter(stubs: Stubs) -> None:
    request = predict_request(x=np.asarray([[1.0]], np.float32))
    request.model_spec.signature_name = "regress_x2_to_y3"
    request.inputs["inputs"].CopyFrom(request.inputs["x"])
    del request.inputs["x"]
    response = stubs.prediction.Predict(request, timeout=60)
    assert response.model_spec.signature_name == "regress_x2_to_y3"
    np.testing.assert_allclose(outputs_of(response)["outputs"], [[3.5]])

    request = x_request(values=[[2.0]])
    request.output_filter.append("y")
    assert list(stubs.prediction.Predict(request, timeout=60).outputs) == ["y"]


@pytest.mark.parametrize(
    ("mutate", "code", "message"),
    [
        (lambda r: r.ClearField("model_spec"), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
        (
            lambda r: setattr(r.model_spec, "name", ""),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ModelSpec has no name specified.",
        ),
        (
            lambda r: setattr(r.model_spec, "name", "nope"),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        (
            lambda r: r.model_spec.version.__setattr__("value", 999),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(half_plus_two, 999)",
        ),
        (
            lambda r: setattr(r.model_spec, "signature_name", "nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            lambda r: r.output_filter.append("nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "output tensor alias not found in signature: nope",
        ),
        (
            lambda r: r.output_filter.extend(["y", "y"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "duplicate output tensor alias: y",
        ),
        (lambda r: r.inputs.clear(), grpc.StatusCode.INVALID_ARGUMENT, ""),
        (
            lambda r: r.inputs["extra"].CopyFrom(r.inputs["x"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input size does not match signature: 2!=1",
        ),
    ],
    ids=[
        "missing_model_spec",
        "empty_name",
        "unknown_model",
        "unknown_version",
        "unknown_signature",
        "unknown_output_alias",
        "duplicate_output_alias",
        "empty_inputs",
        "extra_input",
    ],
)
def test_predict_errors(stubs: Stubs, mutate: Any, code: grpc.StatusCode, message: str) -> None:
    request = x_request()
    mutate(request)
    details = error_details(rpc_error(stubs.prediction.Predict, request), code)
    assert details.startswith(message), details


def test_predict_unknown_label(stubs: Stubs) -> None:
    request = x_request(TWO_VERSIONS)
    request.model_spec.version_label = "nope"
    details = error_details(rpc_error(stubs.prediction.Predict, request), grpc.StatusCode.INVALID_ARGUMENT)
    assert details == "Unrecognized servable version label: nope"


def test_predict_tensor_parsing_error(stubs: Stubs) -> None:
    request = x_request()
    x = request.inputs["x"]
    x.ClearField("float_val")
    x.tensor_content = b"\x00" * 5  # not 3 floats
    details = error_details(rpc_error(stubs.prediction.Predict, request), grpc.StatusCode.INVALID_ARGUMENT)
    assert details == "tensor parsing error: x"


def test_predict_wrong_dtype_is_reported_by_the_runtime(stubs: Stubs) -> None:
    request = predict_request(x=np.asarray([[b"a"]], dtype=object))
    details = error_details(rpc_error(stubs.prediction.Predict, request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "float" in details and "string" in details, details


def test_long_error_messages_are_truncated_at_1024_characters(stubs: Stubs) -> None:
    request = x_request("m" * 3000)
    details = error_details(rpc_error(stubs.prediction.Predict, request), grpc.StatusCode.NOT_FOUND)
    full = "Servable not found for request: Latest(" + "m" * 3000 + ")"
    assert details == full[:1024] + "...TRUNCATED"


def test_client_deadline_becomes_the_run_timeout(server: ServerProcess, stubs: Stubs) -> None:
    """A run that would take hours is cut at the client's deadline on the server too: the server
    records DEADLINE_EXCEEDED for it within seconds and keeps serving."""
    request = predict_request("spin", n=np.asarray(10**13, np.int64))
    error = rpc_error(stubs.prediction.Predict, request, timeout=1.0)
    error_details(error, grpc.StatusCode.DEADLINE_EXCEEDED)
    wait_for_metric(server, 'model_name="spin",status="DEADLINE_EXCEEDED"', timeout=30)
    quick = predict_request("spin", n=np.asarray(1000, np.int64))
    assert outputs_of(stubs.prediction.Predict(quick, timeout=60))["i"] == 1000


def test_grpc_requests_are_counted_with_tf_servings_metric_names(server: ServerProcess, stubs: Stubs) -> None:
    stubs.prediction.Predict(x_request(), timeout=60)
    rpc_error(stubs.prediction.Predict, x_request("no_such_model"))
    text = metrics_text(server)
    assert (
        ':tensorflow:serving:request_count{model_name="half_plus_two",status="OK",signature="serving_default",'
        'protocol="tfserving"}' in text
    )
    assert 'model_name="no_such_model",status="NOT_FOUND"' in text
    assert 'API="Predict",entrypoint="GRPC"' in text


# -- Classify / Regress ----------------------------------------------------------------------------


def test_classify(stubs: Stubs) -> None:
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    examples_input(request.input, 20.0, 2.0)
    response = stubs.prediction.Classify(request, timeout=60)
    got = [[(c.label, c.score) for c in item.classes] for item in response.result.classifications]
    assert got == [[("", 12.0)], [("", 3.0)]]
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.signature_name == "classify_x_to_y"
    assert response.model_spec.version.value == 123


def test_regress(stubs: Stubs) -> None:
    from tensorflow_serving.apis import regression_pb2

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    examples_input(request.input, 80.0, 2.0)
    response = stubs.prediction.Regress(request, timeout=60)
    assert [r.value for r in response.result.regressions] == [42.0, 3.0]
    assert response.model_spec.signature_name == "regress_x_to_y"
    assert response.model_spec.version.value == 123


def test_regress_with_context(stubs: Stubs) -> None:
    from tensorflow_serving.apis import regression_pb2

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_three"
    request.model_spec.signature_name = "tensorflow/serving/regress"
    lst = request.input.example_list_with_context
    lst.context.features.feature["x"].float_list.value.append(1.0)
    lst.examples.add().features.feature["x"].float_list.value.append(2.0)
    lst.examples.add()  # only the context's x
    response = stubs.prediction.Regress(request, timeout=60)
    assert [r.value for r in response.result.regressions] == [4.0, 3.5]


@pytest.mark.parametrize("rpc", ["Classify", "Regress"])
@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("missing_model_spec", grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
        ("unknown_model", grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
        ("unknown_signature", grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the name: nope"),
        ("empty_input", grpc.StatusCode.INVALID_ARGUMENT, "Input is empty."),
        ("predict_signature", grpc.StatusCode.INVALID_ARGUMENT, "No "),
    ],
)
def test_classify_and_regress_errors(
    stubs: Stubs, rpc: str, case: str, code: grpc.StatusCode, message: str
) -> None:
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    cls = classification_pb2.ClassificationRequest if rpc == "Classify" else regression_pb2.RegressionRequest
    request = cls()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y" if rpc == "Classify" else "regress_x_to_y"
    examples_input(request.input, 1.0)
    if case == "missing_model_spec":
        request.ClearField("model_spec")
    elif case == "unknown_model":
        request.model_spec.name = "nope"
    elif case == "unknown_signature":
        request.model_spec.signature_name = "nope"
    elif case == "empty_input":
        request.ClearField("input")
    elif case == "predict_signature":
        request.model_spec.signature_name = "serving_default"
    details = error_details(rpc_error(getattr(stubs.prediction, rpc), request), code)
    assert details.startswith(message), details
    if case == "predict_signature":
        kind = "classification" if rpc == "Classify" else "regression"
        assert f"No {kind} inputs found in SignatureDef" in details


# -- MultiInference --------------------------------------------------------------------------------


def multi_request(tasks: list[tuple[str, str, str]], *values: float) -> Any:
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    examples_input(request.input, *values)
    return request


CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def test_multi_inference(stubs: Stubs) -> None:
    request = multi_request(
        [("half_plus_two", "regress_x_to_y", REGRESS), ("half_plus_two", "classify_x_to_y", CLASSIFY)],
        80.0,
        2.0,
    )
    response = stubs.prediction.MultiInference(request, timeout=60)
    assert len(response.results) == 2
    regress, classify = response.results
    assert [r.value for r in regress.regression_result.regressions] == [42.0, 3.0]
    got = [
        [(c.label, c.score) for c in item.classes] for item in classify.classification_result.classifications
    ]
    assert got == [[("", 42.0)], [("", 3.0)]]
    for result, signature in zip(response.results, ["regress_x_to_y", "classify_x_to_y"], strict=True):
        assert result.model_spec.name == "half_plus_two"
        assert result.model_spec.signature_name == signature
        assert result.model_spec.version.value == 123


@pytest.mark.parametrize(
    ("tasks", "code", "message"),
    [
        (
            [("half_plus_two", "regress_x_to_y", REGRESS), ("half_plus_three", "regress_x_to_y", REGRESS)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            [("half_plus_two", "regress_x_to_y", REGRESS), ("", "regress_x_to_y2", REGRESS)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "Found ModelSpec with an empty model name.",
        ),
        ([], grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
        (
            [("half_plus_two", "regress_x_to_y", REGRESS), ("half_plus_two", "regress_x_to_y", REGRESS)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            [("half_plus_two", "nope", REGRESS)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "Requested signature not found in model graph: nope",
        ),
        (
            [("half_plus_two", "serving_default", "tensorflow/serving/predict")],
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        ([("nope", "regress_x_to_y", REGRESS)], grpc.StatusCode.NOT_FOUND, "Servable not found for request"),
    ],
    ids=[
        "two_models",
        "empty_name",
        "no_tasks",
        "duplicate",
        "unknown_signature",
        "predict_method",
        "no_model",
    ],
)
def test_multi_inference_errors(
    stubs: Stubs, tasks: list[tuple[str, str, str]], code: grpc.StatusCode, message: str
) -> None:
    details = error_details(rpc_error(stubs.prediction.MultiInference, multi_request(tasks, 1.0)), code)
    assert details.startswith(message), details


# -- GetModelMetadata ------------------------------------------------------------------------------


def metadata_request(model: str, *fields: str) -> Any:
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.extend(fields)
    return request


def test_get_model_metadata_matches_tf_servings_fixture(stubs: Stubs, fixtures_dir: pathlib.Path) -> None:
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = metadata_request(TWO_VERSIONS, "signature_def")
    request.model_spec.version.value = 123
    response = stubs.prediction.GetModelMetadata(request, timeout=60)
    assert response.model_spec.name == TWO_VERSIONS
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == ""
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signature_map)  # TF Serving's own message class accepts the type URL
    got = json_format.MessageToDict(
        signature_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    expected = json.loads((fixtures_dir / "saved_model_half_plus_two_2_versions_metadata.json").read_text())
    assert got == expected["metadata"]["signature_def"]


@pytest.mark.parametrize(
    ("request_args", "code", "message"),
    [
        (
            ("half_plus_two",),
            grpc.StatusCode.INVALID_ARGUMENT,
            "GetModelMetadataRequest must specify at least one metadata_field",
        ),
        (
            ("half_plus_two", "signature_def", "foo"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Metadata field foo is not supported",
        ),
        (
            ("nope", "signature_def"),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        (("", "signature_def"), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
    ],
    ids=["no_field", "unsupported_field", "unknown_model", "empty_name"],
)
def test_get_model_metadata_errors(
    stubs: Stubs, request_args: tuple[str, ...], code: grpc.StatusCode, message: str
) -> None:
    details = error_details(
        rpc_error(stubs.prediction.GetModelMetadata, metadata_request(*request_args)), code
    )
    assert details == message


def test_get_model_metadata_without_model_spec(stubs: Stubs) -> None:
    request = metadata_request("x", "signature_def")
    request.ClearField("model_spec")
    details = error_details(
        rpc_error(stubs.prediction.GetModelMetadata, request), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details == "Missing ModelSpec"


# -- GetModelStatus --------------------------------------------------------------------------------


def status_request(model: str, version: int | None = None) -> Any:
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    return request


def test_get_model_status(stubs: Stubs) -> None:
    from tensorflow_serving.apis import get_model_status_pb2

    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    response = stubs.model.GetModelStatus(status_request(TWO_VERSIONS), timeout=60)
    got = [
        (s.version, s.state, s.status.error_code, s.status.error_message)
        for s in response.model_version_status
    ]
    assert got == [(124, available, 0, ""), (123, available, 0, "")]  # newest first

    response = stubs.model.GetModelStatus(status_request(TWO_VERSIONS, 123), timeout=60)
    assert [(s.version, s.state) for s in response.model_version_status] == [(123, available)]


def test_get_model_status_ignores_the_label(stubs: Stubs) -> None:
    request = status_request(TWO_VERSIONS)
    request.model_spec.version_label = "stable"
    response = stubs.model.GetModelStatus(request, timeout=60)
    assert [s.version for s in response.model_version_status] == [124, 123]


@pytest.mark.parametrize(
    ("model", "version", "code", "message"),
    [
        ("nope", None, grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope"),
        ("half_plus_two", 7, grpc.StatusCode.NOT_FOUND, "Could not find version 7 of model half_plus_two"),
    ],
)
def test_get_model_status_errors(
    stubs: Stubs, model: str, version: int | None, code: grpc.StatusCode, message: str
) -> None:
    details = error_details(rpc_error(stubs.model.GetModelStatus, status_request(model, version)), code)
    assert details == message


def test_get_model_status_without_model_spec(stubs: Stubs) -> None:
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    details = error_details(rpc_error(stubs.model.GetModelStatus, request), grpc.StatusCode.INVALID_ARGUMENT)
    assert details == "Missing ModelSpec"


# -- transport -------------------------------------------------------------------------------------


def test_health_service_reports_tf_servings_service_names(stubs: Stubs) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(stubs.channel)
    for service in ("", "ModelService", "PredictionService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    error = rpc_error(health.Check, health_pb2.HealthCheckRequest(service="NoSuchService"))
    error_details(error, grpc.StatusCode.NOT_FOUND)


def test_unknown_method_is_unimplemented(stubs: Stubs) -> None:
    call = stubs.channel.unary_unary("/tensorflow.serving.SessionService/SessionRun")
    error = rpc_error(call, b"")
    error_details(error, grpc.StatusCode.UNIMPLEMENTED)


def test_garbage_request_bytes_are_invalid_argument(stubs: Stubs) -> None:
    call = stubs.channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    details = error_details(rpc_error(call, b"\xff\xff\xff\xff"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "PredictRequest" in details
    # ... and the server keeps serving.
    assert stubs.prediction.Predict(x_request(), timeout=60).model_spec.version.value == 123


def test_concurrent_predicts_from_many_threads(stubs: Stubs) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> float:
        response = stubs.prediction.Predict(x_request(values=[[float(i)]]), timeout=60)
        return float(outputs_of(response)["y"][0, 0])

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, range(64)))
    assert got == [0.5 * i + 2 for i in range(64)]
