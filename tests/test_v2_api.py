"""The Open Inference Protocol on a running `sigserve serve`, as its wire formats say: /v2 over REST with
httpx (JSON, binary tensor data, gzip, errors) and GRPCInferenceService over gRPC with sigserve's own
V2 messages (typed and raw contents, metadata properties), metrics with the `protocol` label,
deadlines, batching shared with the TF Serving API, and hot reload. The real clients' view is
tests/test_v2_clients.py."""

from __future__ import annotations

import gzip
import json
import pathlib
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from sigserve.protos import open_inference_pb2 as pb
from tests.grpc_servers import (
    CHANNEL_OPTIONS,
    export_spin_model,
    fixture_models,
    grpc_target,
    metrics_text,
    serving,
)
from tests.models import export_dtypes
from tests.servers import ServerProcess

TWO = "saved_model_half_plus_two_2_versions"
MAX_BODY = 1 << 20


@pytest.fixture(scope="module")
def server(
    fixtures_dir: pathlib.Path,
    exported_models: dict[str, pathlib.Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("v2_api")
    models = [
        *fixture_models(fixtures_dir),
        ("tf1", exported_models["tf1"].parent, {}),
        ("estimator", exported_models["estimator"].parent, {}),
        ("dtypes", export_dtypes(base / "models").parent, {}),
        ("spin", export_spin_model(base / "models"), {}),
    ]
    with serving(base / "models.config", models, [f"--max_request_body_bytes={MAX_BODY}"]) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        yield c


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(grpc_target(server), options=CHANNEL_OPTIONS) as c:
        yield c


def rpc(channel: grpc.Channel, method: str, request: Any, response_class: Any, timeout: float = 60.0) -> Any:
    call = channel.unary_unary(
        f"/inference.GRPCInferenceService/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    return call(request, timeout=timeout)


def rpc_error(channel: grpc.Channel, method: str, request: Any, timeout: float = 60.0) -> Any:
    with pytest.raises(grpc.RpcError) as e:
        rpc(channel, method, request, pb.ModelInferResponse, timeout)
    return e.value


def x_input(values: list[list[float]]) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": [len(values), 1], "data": values}


# -- REST --------------------------------------------------------------------------------------------


def test_server_metadata_and_health(client: httpx.Client) -> None:
    r = client.get("/v2")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {
        "name": "sigserve",
        "version": r.json()["version"],
        "extensions": ["binary_tensor_data", "classification"],
    }
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_model_metadata_and_readiness(client: httpx.Client) -> None:
    meta = client.get(f"/v2/models/{TWO}/versions/stable").json()
    assert meta["name"] == TWO and meta["versions"] == ["123", "124"]
    assert meta["platform"] == "tensorflow_savedmodel"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]
    assert meta["parameters"]["signature_name"] == "serving_default"
    assert client.get(f"/v2/models/{TWO}/versions/123").json()["versions"] == ["123", "124"]
    assert client.get(f"/v2/models/{TWO}/versions/canary/ready").json() == {"name": TWO, "ready": True}
    not_ready = client.get(f"/v2/models/{TWO}/versions/7/ready")
    assert (not_ready.status_code, not_ready.json()) == (503, {"name": TWO, "ready": False})
    missing = client.get("/v2/models/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_infer_json_nested_flat_id_and_outputs(client: httpx.Client) -> None:
    body = {
        "id": "req-1",
        "parameters": {"signature_name": "multi"},
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2], "data": [1.5, 2.5]},
            {"name": "b", "datatype": "INT64", "shape": [2], "data": [[3], [4]]},  # nested any way
        ],
        "outputs": [{"name": "label_bytes"}, {"name": "sum"}],
    }
    r = client.post("/v2/models/tf1/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "model_name": "tf1",
        "model_version": "1",
        "id": "req-1",
        "outputs": [
            {"name": "label_bytes", "datatype": "BYTES", "shape": [2], "data": ["v3", "v4"]},
            {"name": "sum", "datatype": "FP32", "shape": [2], "data": [4.5, 6.5]},
        ],
    }
    nested = client.post("/v2/models/half_plus_two/infer", json={"inputs": [x_input([[1.0], [2.0]])]})
    assert nested.json()["outputs"][0]["data"] == [2.5, 3.0]


def test_infer_binary_request_and_response(client: httpx.Client) -> None:
    header = json.dumps(
        {
            "parameters": {"signature_name": "multi", "binary_data_output": True},
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 12}},
                {"name": "b", "datatype": "INT64", "shape": [3], "parameters": {"binary_data_size": 24}},
            ],
            "outputs": [{"name": "count", "parameters": {"binary_data": False}}, {"name": "label_bytes"}],
        }
    ).encode()
    blob = np.array([1, 2, 3], "<f4").tobytes() + np.array([7, 8, 90], "<i8").tobytes()
    r = client.post(
        "/v2/models/tf1/infer",
        content=header + blob,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    length = int(r.headers["inference-header-content-length"])
    doc = json.loads(r.content[:length])
    assert doc["outputs"][0] == {"name": "count", "datatype": "INT64", "shape": [], "data": [3]}
    assert doc["outputs"][1]["parameters"] == {"binary_data_size": 4 * 3 + 2 + 2 + 3}
    tail = r.content[length:]
    labels, i = [], 0
    while i < len(tail):
        (n,) = struct.unpack_from("<I", tail, i)
        labels.append(tail[i + 4 : i + 4 + n])
        i += 4 + n
    assert labels == [b"v7", b"v8", b"v90"]


def test_gzip_body(client: httpx.Client) -> None:
    body = gzip.compress(json.dumps({"inputs": [x_input([[4.0]])]}).encode())
    r = client.post("/v2/models/half_plus_two/infer", content=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [4.0]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/v2/nothing", None, 404, "Not found: /v2/nothing"),
        ("GET", "/v2/models/half_plus_two/infer", None, 400, "takes POST, not GET"),
        ("POST", "/v2/models/half_plus_two", b"{}", 400, "takes GET, not POST"),
        ("POST", "/v2/models/nope/infer", json.dumps({"inputs": [x_input([[1.0]])]}).encode(), 404, "nope"),
        (
            "POST",
            "/v2/models/half_plus_two/infer",
            json.dumps({"parameters": {"signature_name": "nah"}, "inputs": [x_input([[1.0]])]}).encode(),
            400,
            "has no signature 'nah'; its signatures: classify_x_to_y, regress_x2_to_y3",
        ),
        (
            "POST",
            "/v2/models/half_plus_two/infer",
            json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [1]}]}).encode(),
            400,
            "unknown input 'y': signature 'serving_default' takes x",
        ),
        (
            "POST",
            "/v2/models/half_plus_two/infer",
            json.dumps(
                {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2**60], "data": [1]}]}
            ).encode(),
            400,
            "the shape holds 1152921504606846976 elements, but 'data' has 1",
        ),
        (
            "POST",
            "/v2/models/half_plus_two/infer",
            json.dumps(
                {
                    "inputs": [
                        {"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}
                    ]
                }
            ).encode()
            + b"\0\0\0\0",
            400,
            "no Inference-Header-Content-Length header",
        ),
        ("POST", "/v2/models/half_plus_two/infer", b"x" * (MAX_BODY + 1), 413, "larger than the limit"),
    ],
)
def test_rest_errors(
    client: httpx.Client, method: str, path: str, body: bytes | None, status: int, message: str
) -> None:
    r = client.request(method, path, content=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"]


def test_classify_and_regress_signatures_from_named_features(client: httpx.Client) -> None:
    classify = client.post(
        "/v2/models/estimator/infer",
        json={
            "parameters": {"signature_name": "classification"},
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [0.0, 1.0]}],
            "outputs": [{"name": "scores", "parameters": {"classification": 1}}, {"name": "classes"}],
        },
    )
    assert classify.status_code == 200, classify.text
    scores, classes = classify.json()["outputs"]
    assert scores == {"name": "scores", "datatype": "BYTES", "shape": [2, 1], "data": ["0.5:0", "0.880797:1"]}
    assert classes["data"] == ["0", "1", "0", "1"]
    regress = client.post(
        "/v2/models/half_plus_three/infer",
        json={
            "parameters": {"signature_name": "tensorflow/serving/regress"},
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}],
        },
    )
    assert regress.json()["outputs"][0]["data"] == [3.5, 4.0]


def test_timeout_parameter_is_the_deadline(client: httpx.Client) -> None:
    started = time.monotonic()
    r = client.post(
        "/v2/models/spin/infer",
        json={
            "parameters": {"timeout": 200_000},
            "inputs": [{"name": "n", "datatype": "INT64", "shape": [], "data": 10**13}],
        },
    )
    assert r.status_code == 504, r.text
    assert time.monotonic() - started < 30
    quick = client.post(
        "/v2/models/spin/infer", json={"inputs": [{"name": "n", "datatype": "INT64", "shape": [], "data": 5}]}
    )
    assert quick.json()["outputs"][0]["data"] == [5]


# -- gRPC --------------------------------------------------------------------------------------------


def test_grpc_health_and_metadata(channel: grpc.Channel) -> None:
    assert rpc(channel, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
    assert rpc(channel, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
    ready = rpc(
        channel, "ModelReady", pb.ModelReadyRequest(name=TWO, version="stable"), pb.ModelReadyResponse
    )
    assert ready.ready
    gone = rpc(channel, "ModelReady", pb.ModelReadyRequest(name="nope"), pb.ModelReadyResponse)
    assert not gone.ready
    server = rpc(channel, "ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse)
    assert server.name == "sigserve" and list(server.extensions) == ["binary_tensor_data", "classification"]
    meta = rpc(channel, "ModelMetadata", pb.ModelMetadataRequest(name="dtypes"), pb.ModelMetadataResponse)
    assert (meta.platform, list(meta.versions)) == ("tensorflow_savedmodel", ["1"])
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("h", "FP16", [-1, 2])]
    assert meta.properties["signatures"] == "identity,scores,serving_default"
    assert meta.properties["signature_name"] == "serving_default"
    error = rpc_error(channel, "ModelMetadata", pb.ModelMetadataRequest(name="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_typed_contents_answer_typed_and_raw_answer_raw(channel: grpc.Channel) -> None:
    typed = pb.ModelInferRequest(model_name="half_plus_two", id="t")
    typed.inputs.add(name="x", datatype="FP32", shape=[2, 1]).contents.fp32_contents.extend([1.0, 3.0])
    answer = rpc(channel, "ModelInfer", typed, pb.ModelInferResponse)
    assert (answer.model_version, answer.id) == ("123", "t")
    assert not answer.raw_output_contents
    assert list(answer.outputs[0].contents.fp32_contents) == [2.5, 3.5]

    raw = pb.ModelInferRequest(model_name=TWO, model_version="canary")
    raw.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    raw.raw_input_contents.append(np.array([2.0], "<f4").tobytes())
    answer = rpc(channel, "ModelInfer", raw, pb.ModelInferResponse)
    assert answer.model_version == "124" and not answer.outputs[0].HasField("contents")
    assert np.frombuffer(answer.raw_output_contents[0], "<f4").tolist() == [3.0]

    half = pb.ModelInferRequest(model_name="dtypes")
    half.inputs.add(name="h", datatype="FP16", shape=[1, 2])
    half.raw_input_contents.append(np.array([1.5, 2.0], "<f2").tobytes())
    half.outputs.add(name="total")  # FP32: raw, because the request was raw
    answer = rpc(channel, "ModelInfer", half, pb.ModelInferResponse)
    assert [o.name for o in answer.outputs] == ["total"]
    assert np.frombuffer(answer.raw_output_contents[0], "<f4").tolist() == [3.5]

    typed_half = pb.ModelInferRequest(model_name="dtypes")
    typed_half.inputs.add(name="h", datatype="FP16", shape=[1, 2]).contents.fp32_contents.extend([1, 2])
    error = rpc_error(channel, "ModelInfer", typed_half)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FP16 has no typed contents field; send it in raw_input_contents" in error.details()


def test_grpc_deadline_and_bad_requests(channel: grpc.Channel) -> None:
    slow = pb.ModelInferRequest(model_name="spin")
    slow.inputs.add(name="n", datatype="INT64", shape=[]).contents.int64_contents.append(10**13)
    assert rpc_error(channel, "ModelInfer", slow, timeout=0.5).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    slow.parameters["timeout"].int64_param = 200_000
    assert rpc_error(channel, "ModelInfer", slow).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    error = rpc_error(channel, "ModelInfer", pb.ModelInferRequest(model_name="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    nameless = rpc_error(channel, "ModelInfer", pb.ModelInferRequest())
    assert nameless.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_v2_requests_are_counted_under_protocol_v2(
    client: httpx.Client, channel: grpc.Channel, server: ServerProcess
) -> None:
    client.post("/v2/models/half_plus_two/infer", json={"inputs": [x_input([[1.0]])]})
    request = pb.ModelInferRequest(model_name="half_plus_two")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(1.0)
    rpc(channel, "ModelInfer", request, pb.ModelInferResponse)
    client.post(
        "/v2/models/half_plus_two/infer",
        json={"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1]}]},
    )
    text = metrics_text(server)
    labels = (
        'model_name="half_plus_two",API="infer",entrypoint="REST",signature="serving_default",protocol="v2"'
    )
    assert f":tensorflow:serving:request_latency_count{{{labels}}}" in text
    labels = (
        'model_name="half_plus_two",API="ModelInfer",entrypoint="GRPC",signature="serving_default",'
        'protocol="v2"'
    )
    assert f":tensorflow:serving:request_latency_count{{{labels}}}" in text
    assert (
        'request_count{model_name="half_plus_two",status="INVALID_ARGUMENT",signature="serving_default",protocol="v2"}'
        in text
    )


def _counter(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_repeated_small_infers_answer_alike_on_the_short_path(
    client: httpx.Client, server: ServerProcess
) -> None:
    """Once a route has run fast a few times, a small infer is answered on the event loop without
    ASGI (`V2Routes.respond_now`): its answers, errors and counts must be those of the first calls."""
    ok = (
        ':tensorflow:serving:request_count{model_name="half_plus_two",status="OK",'
        'signature="serving_default",protocol="v2"}'
    )
    # (the shape check fails before a signature is resolved: its label is empty, on either path)
    bad = ok.replace('status="OK"', 'status="INVALID_ARGUMENT"').replace("serving_default", "")
    before = metrics_text(server)
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 1], "parameters": {"binary_data_size": 8}}
            ]
        }
    ).encode()
    blob = np.array([1.0, 6.0], "<f4").tobytes()
    n = 60
    for i in range(n):
        r = client.post(
            "/v2/models/half_plus_two/infer", json={"id": str(i), "inputs": [x_input([[float(i)]])]}
        )
        assert (
            r.status_code == 200
            and r.json()["outputs"][0]["data"] == [i / 2 + 2]
            and r.json()["id"] == str(i)
        )
        r = client.post(
            "/v2/models/half_plus_two/infer",
            content=header + blob,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2.5, 5.0]
        r = client.post(
            "/v2/models/half_plus_two/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1.0]}]},
        )
        assert r.status_code == 400 and list(r.json()) == ["error"], r.text
        if i == 0:
            first_error = r.json()["error"]
        assert r.json()["error"] == first_error
    after = metrics_text(server)
    assert _counter(after, ok) - _counter(before, ok) == 2 * n
    assert _counter(after, bad) - _counter(before, bad) == n


def test_short_path_errors_on_v1_are_counted_under_the_model(
    client: httpx.Client, server: ServerProcess
) -> None:
    """A bad body on a /v1 predict URL answered on the event loop is counted under its model, as the
    ASGI path counts it (not under an empty model name)."""

    def invalid(text: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(":tensorflow:serving:request_count{")
            and 'model_name="half_plus_two"' in line
            and 'status="INVALID_ARGUMENT"' in line
            and 'protocol="v2"' not in line
        )

    url = "/v1/models/half_plus_two:predict"
    for _ in range(40):  # a fast route: the short path takes it from here on
        assert client.post(url, json={"instances": [1.0]}).status_code == 200
    before = invalid(metrics_text(server))
    for _ in range(40):
        r = client.post(url, content=b'{"instances": [1.0,]}')
        assert r.status_code == 400 and "JSON Parse error" in r.json()["error"]
    assert invalid(metrics_text(server)) - before == 40


# -- batching with the TF Serving API, hot reload ----------------------------------------------------


@pytest.fixture(scope="module")
def batching_server(
    fixtures_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, pathlib.Path]]:
    base = tmp_path_factory.mktemp("v2_batching")
    model = base / "hp2"
    shutil.copytree(fixtures_dir / "saved_model_half_plus_two_cpu" / "00000123", model / "1")
    params = base / "batching.txt"
    # Two rows make a batch; one row alone waits up to 5 s for a partner.
    params.write_text(
        "max_batch_size { value: 2 }\nbatch_timeout_micros { value: 5000000 }\n"
        "num_batch_threads { value: 1 }\n"
    )
    proc = ServerProcess(
        [
            "--model_name=hp2",
            f"--model_base_path={model}",
            "--enable_batching",
            f"--batching_parameters_file={params}",
            "--file_system_poll_wait_seconds=1",
        ]
    )
    try:
        proc.wait_ready()
        yield proc, model
    finally:
        proc.stop()
        proc.cleanup()


def test_v2_and_tf_serving_requests_share_a_batch(
    batching_server: tuple[ServerProcess, pathlib.Path],
) -> None:
    server, _ = batching_server
    answers: dict[str, Any] = {}

    def v1() -> None:
        answers["v1"] = httpx.post(
            server.url + "/v1/models/hp2:predict", json={"instances": [[1.0]]}, timeout=60
        ).json()

    def v2() -> None:
        r = httpx.post(server.url + "/v2/models/hp2/infer", json={"inputs": [x_input([[3.0]])]}, timeout=60)
        answers["v2"] = r.json()

    started = time.monotonic()
    threads = [threading.Thread(target=v1), threading.Thread(target=v2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers["v1"] == {"predictions": [[2.5]]}
    assert answers["v2"]["outputs"][0]["data"] == [3.5]
    assert time.monotonic() - started < 4.5  # the pair filled the batch: neither waited the 5 s timeout
    text = metrics_text(server)
    assert ":tensorflow:serving:batching_session:processed_batch_size_count 1" in text
    assert ":tensorflow:serving:batching_session:processed_batch_size_sum 2" in text


def test_hot_reload_serves_a_new_version_over_v2(
    fixtures_dir: pathlib.Path, batching_server: tuple[ServerProcess, pathlib.Path]
) -> None:
    server, model = batching_server
    shutil.copytree(fixtures_dir / "saved_model_half_plus_two_cpu" / "00000123", model / "2")
    deadline = time.monotonic() + 60
    meta: dict[str, Any] = {}
    while time.monotonic() < deadline:
        meta = httpx.get(server.url + "/v2/models/hp2", timeout=30).json()
        if meta.get("versions") == ["2"]:
            break
        time.sleep(0.2)
    assert meta.get("versions") == ["2"], meta
    r = httpx.post(server.url + "/v2/models/hp2/infer", json={"inputs": [x_input([[1.0]])]}, timeout=60)
    assert r.json()["model_version"] == "2"
    assert httpx.get(server.url + "/v2/models/hp2/versions/1/ready", timeout=30).status_code == 503
