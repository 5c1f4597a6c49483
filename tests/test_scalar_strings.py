"""Rank-0 DT_STRING outputs on every protocol (issue 20 item 6).

A 0-d string fetched from TensorFlow comes back as Python `bytes`; it used to become a numpy
`bytes_` array, which the REST encoder refused ("string outputs must be object arrays of bytes")
and which drops trailing NULs. TF Serving writes the bare value: a JSON string, or `{"b64": ...}`
when the output alias ends in `_bytes` (json_tensor.cc, AddTensorValues on a rank-0 tensor).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import grpc
import httpx
import pytest

from sigserve.protos import open_inference_pb2 as pb
from tests.grpc_servers import CHANNEL_OPTIONS, grpc_target, serving_strings, tf_stubs
from tests.servers import ServerProcess

RAW = b"\xffa\x00"  # not UTF-8, and a trailing NUL that a numpy bytes_ array would drop


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving_strings(tmp_path_factory.mktemp("scalar_strings")) as proc:
        yield proc


def post(server: ServerProcess, path: str, doc: object) -> httpx.Response:
    return httpx.post(server.url + path, json=doc, timeout=60.0)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_rest_columnar_writes_scalar_strings_bare(server: ServerProcess) -> None:
    r = post(server, "/v1/models/strings:predict", {"inputs": "abc"})
    assert r.status_code == 200, r.text
    assert r.json() == {"outputs": {"joined": "abc", "text": "abc", "text_bytes": {"b64": b64(b"abc")}}}


def test_rest_columnar_scalar_bytes_keep_every_byte(server: ServerProcess) -> None:
    r = post(server, "/v1/models/strings:predict", {"inputs": {"b64": b64(RAW)}})
    assert r.status_code == 200, r.text
    # TF Serving writes string tensors unvalidated (raw bytes, control characters escaped) and
    # `_bytes` aliases as base64: the NUL survives both ways.
    assert b'"text":"\xffa\\u0000"' in r.content
    assert b'"text_bytes":{"b64":"' + base64.b64encode(RAW) + b'"}' in r.content


def test_rest_row_format_refuses_a_rank0_output_as_tf_serving(server: ServerProcess) -> None:
    # `joined` is rank 0 whatever the input: the row format has no batch to split it by.
    r = post(server, "/v1/models/strings:predict", {"instances": ["abc", "de"]})
    assert r.status_code == 400
    assert r.json() == {"error": "Tensor name: joined has no shape information "}


def test_grpc_predict_returns_a_rank0_string_tensor(server: ServerProcess) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    stubs = tf_stubs(grpc_target(server))
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "strings"
        request.inputs["s"].CopyFrom(tf.make_tensor_proto(RAW))
        response = stubs.prediction.Predict(request, timeout=60)
    finally:
        stubs.close()
    for name in ("text", "text_bytes", "joined"):
        tensor = response.outputs[name]
        assert tensor.dtype == tf.string.as_datatype_enum
        assert len(tensor.tensor_shape.dim) == 0 and not tensor.tensor_shape.unknown_rank
        assert tf.make_ndarray(tensor)[()] == RAW


def test_v2_rest_and_grpc_answer_a_bytes_scalar(server: ServerProcess) -> None:
    for data in (["abc"], "abc"):
        body = {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [], "data": data}]}
        r = post(server, "/v2/models/strings/infer", body)
        assert r.status_code == 200, r.text
        outputs = {o["name"]: o for o in r.json()["outputs"]}
        assert outputs["text"] == {"name": "text", "datatype": "BYTES", "shape": [], "data": ["abc"]}
        assert outputs["joined"]["data"] == ["abc"]

    request = pb.ModelInferRequest(model_name="strings")
    tensor = request.inputs.add(name="s", datatype="BYTES")
    tensor.contents.bytes_contents.append(RAW)
    with grpc.insecure_channel(grpc_target(server), options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        answer = call(request, timeout=60)
    assert {o.name for o in answer.outputs} == {"text", "text_bytes", "joined"}
    for out in answer.outputs:
        assert out.datatype == "BYTES" and list(out.shape) == []
        assert list(out.contents.bytes_contents) == [RAW]


def test_rest_scalar_string_body_is_valid_json_for_utf8(server: ServerProcess) -> None:
    r = post(server, "/v1/models/strings:predict", {"inputs": "snow ☃"})
    assert json.loads(r.content)["outputs"]["text"] == "snow ☃"
