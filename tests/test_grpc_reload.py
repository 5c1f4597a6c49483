"""HandleReloadConfigRequest (tfserving-api.md §2.3) with metric_names reporting, plus the transport
options of this server: a unix socket (--grpc_socket_path) and --enable_serialization_as_tensor_content,
all with TF Serving's own stubs against `sigserve serve`."""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from tests.grpc_servers import Stubs, fixture_models, grpc_target, rpc_error, start_server, tf_stubs
from tests.servers import ServerProcess


@pytest.fixture(scope="module")
def socket_path() -> Iterator[str]:
    # A short path: unix socket paths are limited to ~107 bytes, pytest's tmp paths can be longer.
    d = tempfile.mkdtemp(prefix="sigserve-")
    path = os.path.join(d, "grpc.sock")
    yield path
    if os.path.exists(path):
        os.unlink(path)
    os.rmdir(d)


@pytest.fixture(scope="module")
def server(
    fixtures_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory, socket_path: str
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("grpc_reload")
    proc = start_server(
        base / "models.config",
        fixture_models(fixtures_dir)[:1],
        [f"--grpc_socket_path={socket_path}", "--enable_serialization_as_tensor_content"],
    )
    try:
        yield proc
        assert proc.stop() == 0, proc.output()[-3000:]  # SIGTERM stops the gRPC front end cleanly
        assert not os.path.exists(socket_path) or os.path.getsize(socket_path) == 0
    finally:
        proc.stop()
        proc.cleanup()


@pytest.fixture(scope="module")
def stubs(server: ServerProcess) -> Iterator[Stubs]:
    s = tf_stubs(grpc_target(server))
    yield s
    s.close()


def predict(stubs: Stubs, model: str, x: float) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray([[x]], np.float32)))
    return stubs.prediction.Predict(request, timeout=60)


def reload_request(models: list[tuple[str, pathlib.Path]], metric_names: tuple[str, ...] = ()) -> Any:
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    for name, base in models:
        config = request.config.model_config_list.config.add()
        config.name = name
        config.base_path = str(base)
        config.model_platform = "tensorflow"
    request.metric_names.extend(metric_names)
    return request


def test_outputs_use_tensor_content_with_the_flag(stubs: Stubs) -> None:
    import tensorflow as tf

    y = predict(stubs, "half_plus_two", 1.0).outputs["y"]
    assert len(y.float_val) == 0
    assert y.tensor_content == np.asarray([[2.5]], np.float32).tobytes()
    np.testing.assert_allclose(tf.make_ndarray(y), [[2.5]])


def test_unix_socket(socket_path: str, server: ServerProcess) -> None:
    assert os.path.exists(socket_path)
    s = tf_stubs("unix:" + socket_path)
    try:
        response = predict(s, "half_plus_two", 3.0)
        assert response.model_spec.version.value == 123
        assert len(response.outputs["y"].tensor_content) == 4
    finally:
        s.close()


def test_reload_rejects_configs_other_than_a_model_config_list(stubs: Stubs) -> None:
    from tensorflow_serving.apis import model_management_pb2

    expected = (
        "ServerModelConfig type not supported by HandleReloadConfigRequest. "
        "Only ModelConfigList is currently supported"
    )
    empty = model_management_pb2.ReloadConfigRequest()
    custom = model_management_pb2.ReloadConfigRequest()
    custom.config.custom_model_config.type_url = "type.googleapis.com/x.Y"
    for request in (empty, custom):
        error: Any = rpc_error(stubs.model.HandleReloadConfigRequest, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == expected
    # Nothing changed.
    assert predict(stubs, "half_plus_two", 1.0).model_spec.version.value == 123


def test_reload_replaces_the_served_models_and_reports_metrics(
    stubs: Stubs, fixtures_dir: pathlib.Path, server: ServerProcess
) -> None:
    """The new list replaces the old one: half_plus_three comes, half_plus_two goes."""
    request = reload_request(
        [("half_plus_three", fixtures_dir / "saved_model_half_plus_three")],
        metric_names=("/tensorflow/serving/request_count", "/no/such/metric"),
    )
    response = stubs.model.HandleReloadConfigRequest(request, timeout=300)
    assert response.status.error_code == 0
    assert response.status.error_message == ""
    assert [(m.name, m.WhichOneof("value_increase")) for m in response.metric] == [
        ("/tensorflow/serving/request_count", "int64_value_increase"),
        ("/no/such/metric", "int64_value_increase"),
    ]
    assert all(m.int64_value_increase == 0 for m in response.metric)  # no request ran during the reload

    from tensorflow_serving.apis import regression_pb2

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "half_plus_three"
    regress.model_spec.signature_name = "tensorflow/serving/regress"
    regress.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    assert [r.value for r in stubs.prediction.Regress(regress, timeout=60).result.regressions] == [3.5]

    error: Any = rpc_error(stubs.prediction.Predict, _predict_request("half_plus_two"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(half_plus_two)"

    # /readyz reports the models the manager serves now, not the start-up list.
    ready = httpx.get(server.url + "/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["models"] == {"half_plus_three": "AVAILABLE"}

    # And back.
    request = reload_request([("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu")])
    assert stubs.model.HandleReloadConfigRequest(request, timeout=300).status.error_code == 0
    assert predict(stubs, "half_plus_two", 1.0).model_spec.version.value == 123


def _predict_request(model: str) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray([[1.0]], np.float32)))
    return request
