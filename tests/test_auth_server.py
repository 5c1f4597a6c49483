"""`--auth_token_file` on a live server: every REST route and every gRPC method, on both gRPC
transports, with no token, a wrong one, a right one, and after the token file is rotated; the probes
stay open; no token ever reaches the log or the metrics."""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest

from sigserve.client import Client, RestClient
from sigserve.errors import Code, SigserveError
from sigserve.protos import (
    MODEL_SERVICE,
    PREDICTION_SERVICE,
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)
from sigserve.server import auth
from tests.grpc_servers import fixture_models, grpc_target, start_server
from tests.servers import ServerProcess

OLD = "old-token-4f1c9e"
NEW = "new-token-9b27d0"
WRONG = "not-a-token-77"


def write_tokens(path: pathlib.Path, *tokens: str) -> None:
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text("# sigserve tokens\n" + "\n".join(tokens) + "\n")
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a change even within one mtime tick


@pytest.fixture(scope="module", params=["native", "grpcio"])
def server(
    request: pytest.FixtureRequest, fixtures_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, pathlib.Path, str]]:
    """A server per gRPC transport; the grpcio one also runs with --public_metrics."""
    transport = str(request.param)
    base = tmp_path_factory.mktemp(f"auth_{transport}")
    tokens = base / "tokens"
    write_tokens(tokens, OLD)
    args = [
        f"--auth_token_file={tokens}",
        f"--grpc_transport={transport}",
        "--enable_grpc_healthcheck_service",
        "--rest_api_enable_cors_support",
    ]
    if transport == "grpcio":
        args.append("--public_metrics")
    proc = start_server(base / "models.config", fixture_models(fixtures_dir), args)
    try:
        yield proc, tokens, transport
    finally:
        proc.stop()
        proc.cleanup()


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


PREDICT = ("POST", "/v1/models/half_plus_two:predict", b'{"instances": [1.0, 2.0, 5.0]}')
REST_ROUTES = [
    ("GET", "/v1/models/half_plus_two", b""),
    ("GET", "/v1/models/half_plus_two/versions/123", b""),
    ("GET", "/v1/models/half_plus_two/metadata", b""),
    ("GET", "/v1/models/half_plus_two/openapi.json", b""),
    ("GET", "/v1/models/half_plus_two/versions/123/openapi.json", b""),
    ("GET", "/openapi.json", b""),
    PREDICT,
    (
        "POST",
        "/v1/models/half_plus_three:regress",
        b'{"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}]}',
    ),
    (
        "POST",
        "/v1/models/half_plus_two:classify",
        b'{"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}',
    ),
]


def rest_call(client: httpx.Client, route: tuple[str, str, bytes], token: str | None) -> httpx.Response:
    method, path, body = route
    return client.request(method, path, content=body or None, headers=bearer(token))


def assert_refused(r: httpx.Response, message: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == 'Bearer realm="sigserve"'
    assert r.json() == {"error": message}


def wait_until_accepted(client: httpx.Client, token: str) -> None:
    """The file is looked at once a second: bounded wait for the new token to be taken."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if rest_call(client, PREDICT, token).status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("the rotated token file was not picked up")


# -- gRPC: every method -----------------------------------------------------------------------------


def grpc_requests() -> dict[str, tuple[str, bytes]]:
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "half_plus_two"
    predict.inputs["x"].dtype = 1
    predict.inputs["x"].tensor_shape.dim.add(size=1)
    predict.inputs["x"].float_val.append(1.0)
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "half_plus_two"
    classify.model_spec.signature_name = "classify_x_to_y"
    classify.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "half_plus_three"
    regress.model_spec.signature_name = "tensorflow/serving/regress"
    regress.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add()
    task.model_spec.name = "half_plus_three"
    task.model_spec.signature_name = "tensorflow/serving/regress"
    task.method_name = "tensorflow/serving/regress"
    multi.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = "half_plus_two"
    metadata.metadata_field.append("signature_def")
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "half_plus_two"
    reload = model_management_pb2.ReloadConfigRequest()  # refused before it is looked at
    return {
        f"/{PREDICTION_SERVICE}/Predict": ("ok", predict.SerializeToString()),
        f"/{PREDICTION_SERVICE}/Classify": ("ok", classify.SerializeToString()),
        f"/{PREDICTION_SERVICE}/Regress": ("ok", regress.SerializeToString()),
        f"/{PREDICTION_SERVICE}/MultiInference": ("ok", multi.SerializeToString()),
        f"/{PREDICTION_SERVICE}/GetModelMetadata": ("ok", metadata.SerializeToString()),
        f"/{MODEL_SERVICE}/GetModelStatus": ("ok", status.SerializeToString()),
        # With a valid token an empty config is INVALID_ARGUMENT: past the check, changing nothing.
        f"/{MODEL_SERVICE}/HandleReloadConfigRequest": ("invalid", reload.SerializeToString()),
    }


def grpc_code(
    channel: grpc.Channel, path: str, data: bytes, token: str | None
) -> tuple[grpc.StatusCode, str]:
    call = channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    try:
        call(data, timeout=60, metadata=metadata)
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


# -- the tests ----------------------------------------------------------------------------------------


def test_rest_routes(server: tuple[ServerProcess, pathlib.Path, str]) -> None:
    proc, _, transport = server
    with httpx.Client(base_url=proc.url, timeout=60) as client:
        for route in REST_ROUTES:
            assert_refused(rest_call(client, route, None), auth.MISSING)
            assert_refused(rest_call(client, route, WRONG), auth.INVALID)
            r = client.request(route[0], route[1], content=route[2] or None, headers={"Authorization": OLD})
            assert_refused(r, auth.MALFORMED)
            r = rest_call(client, route, OLD)
            assert r.status_code == 200, (route, r.text)
        assert rest_call(client, PREDICT, OLD).json() == {"predictions": [2.5, 3.0, 4.5]}
        # Open: probes, the console's static files, CORS preflights (browsers send no token there).
        for path in ("/healthz", "/readyz", "/", "/ui", "/ui/console.js", "/ui/console.css"):
            assert client.get(path).status_code == 200, path
        r = client.options(PREDICT[1], headers={"Origin": "http://example.test"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-headers"] == "Content-Type, Authorization"
        # The document says what it takes.
        doc = rest_call(client, ("GET", "/openapi.json", b""), OLD).json()
        assert doc["security"] == [{"bearerAuth": []}]
        # Metrics: closed, unless --public_metrics (the grpcio server here).
        metrics = client.get("/monitoring/prometheus/metrics")
        if transport == "grpcio":
            assert metrics.status_code == 200
            assert doc["paths"]["/monitoring/prometheus/metrics"]["get"]["security"] == []
        else:
            assert metrics.status_code == 401 and metrics.text == auth.MISSING
            assert rest_call(client, ("GET", "/monitoring/prometheus/metrics", b""), OLD).status_code == 200


def test_grpc_methods(server: tuple[ServerProcess, pathlib.Path, str]) -> None:
    proc, _, _ = server
    with grpc.insecure_channel(grpc_target(proc)) as channel:
        for path, (expect, data) in grpc_requests().items():
            assert grpc_code(channel, path, data, None) == (grpc.StatusCode.UNAUTHENTICATED, auth.MISSING), (
                path
            )
            assert grpc_code(channel, path, data, WRONG) == (grpc.StatusCode.UNAUTHENTICATED, auth.INVALID), (
                path
            )
            code, details = grpc_code(channel, path, data, OLD)
            wanted = grpc.StatusCode.OK if expect == "ok" else grpc.StatusCode.INVALID_ARGUMENT
            assert code == wanted, (path, code, details)
        # Health stays open for probes.
        health = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        assert health(b"", timeout=30) == b"\x08\x01"  # status: SERVING
    # The client library and its token= (gRPC and REST).
    with Client(grpc_target(proc), token=OLD) as c:
        assert c.predict("half_plus_two", {"x": np.array([[1.0]], np.float32)})["y"].tolist() == [[2.5]]
    with Client(grpc_target(proc)) as c, pytest.raises(SigserveError) as info:
        c.predict("half_plus_two", {"x": np.array([[1.0]], np.float32)})
    assert info.value.code == Code.UNAUTHENTICATED
    with RestClient(proc.url, token=OLD) as rc:
        assert rc.predict("half_plus_two", {"x": np.array([[1.0]], np.float32)})["y"].tolist() == [[2.5]]
    with RestClient(proc.url) as rc, pytest.raises(SigserveError) as info:
        rc.predict("half_plus_two", {"x": np.array([[1.0]], np.float32)})
    assert info.value.code == Code.UNAUTHENTICATED and info.value.message == auth.MISSING


def test_rotation_and_no_token_leaks(server: tuple[ServerProcess, pathlib.Path, str]) -> None:
    """Add the new token, move to it, drop the old one; then nothing ever wrote a token anywhere."""
    proc, tokens, _ = server
    with (
        httpx.Client(base_url=proc.url, timeout=60) as client,
        grpc.insecure_channel(grpc_target(proc)) as ch,
    ):
        path, (_, data) = next(iter(grpc_requests().items()))
        write_tokens(tokens, OLD, NEW)
        wait_until_accepted(client, NEW)
        assert rest_call(client, PREDICT, OLD).status_code == 200
        assert grpc_code(ch, path, data, NEW)[0] == grpc.StatusCode.OK
        write_tokens(tokens, NEW)
        deadline = time.monotonic() + 20
        while rest_call(client, PREDICT, OLD).status_code != 401 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert_refused(rest_call(client, PREDICT, OLD), auth.INVALID)
        assert grpc_code(ch, path, data, OLD) == (grpc.StatusCode.UNAUTHENTICATED, auth.INVALID)
        assert grpc_code(ch, path, data, NEW)[0] == grpc.StatusCode.OK
        # A half-written file keeps the tokens it had.
        write_tokens(tokens)
        time.sleep(1.5)
        assert rest_call(client, PREDICT, NEW).status_code == 200
        write_tokens(tokens, OLD)  # back as the module started, for the other tests' order
        wait_until_accepted(client, OLD)
        metrics = rest_call(client, ("GET", "/monitoring/prometheus/metrics", b""), OLD).text
    log = proc.output()
    assert "reloaded: 2 token(s)" in log
    assert "changed but holds no token" in log and "keeping the 1 token(s) read before" in log
    for token in (OLD, NEW, WRONG):
        assert token not in log
        assert token not in metrics
    assert 'model_name="half_plus_two"' in metrics
