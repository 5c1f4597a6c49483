"""The V2 codec without a server: round trips of every datatype through every framing (REST JSON,
REST binary, gRPC typed and raw contents, both ways), each checked against an encoder/decoder
written here from the spec, the errors the issue lists, and over 2,000 hostile requests that must
each be a clean INVALID_ARGUMENT or a request no bigger than the bytes that carried it."""

from __future__ import annotations

import json
import math
import pathlib
import struct
from typing import Any

import ml_dtypes
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sigserve.codec.v2 import datatypes, examples, grpc, metadata, request, rest, tensors
from sigserve.errors import Code, SigserveError
from sigserve.protos import example_pb2
from sigserve.protos import open_inference_pb2 as pb
from sigserve.protos import types_pb2 as T

SETTINGS = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))

WIRE = {
    "BOOL": "?",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
ALL = [*WIRE, "BYTES", "BF16"]


# -- independent encoders/decoders, from the spec's text ---------------------------------------------


def spec_binary(array: np.ndarray, datatype: str) -> bytes:
    """Binary tensor data as extension_binary_data.md describes it."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in array.reshape(-1).tolist())
    if datatype == "BF16":
        return array.astype(ml_dtypes.bfloat16).view("<u2").tobytes()
    return array.astype(WIRE[datatype]).tobytes()


def spec_unbinary(data: bytes, datatype: str, shape: list[int]) -> np.ndarray:
    if datatype == "BYTES":
        out, i = [], 0
        while i < len(data):
            (n,) = struct.unpack_from("<I", data, i)
            out.append(data[i + 4 : i + 4 + n])
            i += 4 + n
        return np.array(out, dtype=object).reshape(shape)
    if datatype == "BF16":
        return np.frombuffer(data, "<u2").view(ml_dtypes.bfloat16).reshape(shape)
    return np.frombuffer(data, WIRE[datatype]).reshape(shape)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shape and values; floats bit for bit except that any NaN equals any NaN."""
    if a.shape != b.shape:
        return False
    if a.dtype == object or b.dtype == object:
        return a.reshape(-1).tolist() == b.reshape(-1).tolist()
    if a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fV":
        fa, fb = a.astype(np.float64), b.astype(np.float64)
        return bool(np.array_equal(fa, fb, equal_nan=True)) and bool(
            (np.signbit(fa) == np.signbit(fb))[~np.isnan(fa)].all()
        )
    return bool(np.array_equal(a, b))


SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def tensors_of(draw: Any, datatype: str, text_only: bool = False) -> np.ndarray:
    shape = draw(SHAPES)
    if datatype == "BYTES":
        element = st.text(max_size=6).map(str.encode) if text_only else st.binary(max_size=6)
        values = draw(st.lists(element, min_size=math.prod(shape), max_size=math.prod(shape)))
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    if datatype == "BF16":
        wide = draw(hnp.arrays(np.float32, shape, elements=st.floats(width=32, allow_subnormal=False)))
        return wide.astype(ml_dtypes.bfloat16)
    return draw(hnp.arrays(np.dtype(WIRE[datatype]).newbyteorder("="), shape))


TENSORS = st.sampled_from(ALL).flatmap(lambda d: st.tuples(st.just(d), tensors_of(d)))
JSON_TENSORS = st.sampled_from(ALL).flatmap(lambda d: st.tuples(st.just(d), tensors_of(d, text_only=True)))


def json_data(array: np.ndarray, datatype: str, nested: bool) -> Any:
    if datatype == "BYTES":
        values = [v.decode() for v in array.reshape(-1).tolist()]
        return np.array(values, dtype=object).reshape(array.shape).tolist() if nested else values
    if datatype in ("FP16", "BF16"):
        array = array.astype(np.float64)
    return array.tolist() if nested else array.reshape(-1).tolist()


def body_of(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


# -- datatypes ---------------------------------------------------------------------------------------


def test_datatype_table_is_the_issues() -> None:
    assert datatypes.from_tf(T.DT_STRING) == "BYTES"
    assert datatypes.from_tf(T.DT_HALF) == "FP16"
    assert datatypes.from_tf(T.DT_BFLOAT16) == "BF16"
    assert datatypes.from_tf(T.DT_FLOAT) == "FP32"
    assert datatypes.from_tf(T.DT_FLOAT_REF) == "FP32"  # an old graph's ref type
    assert datatypes.from_tf(T.DT_COMPLEX64) is None
    for name in ALL:
        assert datatypes.from_tf(datatypes.to_tf(name)) == name
        assert datatypes.from_numpy(datatypes.numpy_dtype(name)) == name
    with pytest.raises(SigserveError, match="unknown datatype 'fp32'"):
        datatypes.to_tf("fp32")  # case-sensitive, as the spec says


# -- round trips -------------------------------------------------------------------------------------


@settings(SETTINGS, max_examples=300)
@given(TENSORS)
def test_rest_binary_request_round_trip(case: tuple[str, np.ndarray]) -> None:
    datatype, array = case
    blob = spec_binary(array, datatype)
    header = body_of(
        {
            "id": "r1",
            "inputs": [
                {"name": "a", "datatype": "INT32", "shape": [1], "data": [7]},
                {
                    "name": "t",
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": len(blob)},
                },
            ],
        }
    )
    parsed = rest.parse_infer(header + blob, str(len(header)))
    assert parsed.id == "r1"
    got = parsed.inputs[1].array
    assert got.dtype == datatypes.numpy_dtype(datatype)
    assert same(got, array)
    assert parsed.inputs[0].array.tolist() == [7]


@settings(SETTINGS, max_examples=300)
@given(JSON_TENSORS, st.booleans())
def test_rest_json_request_round_trip(case: tuple[str, np.ndarray], nested: bool) -> None:
    datatype, array = case
    doc = {"inputs": [{"name": "t", "datatype": datatype, "shape": list(array.shape)}]}
    doc["inputs"][0]["data"] = json_data(array, datatype, nested)
    got = rest.parse_infer(body_of(doc), None).inputs[0].array
    assert same(got, array)


@settings(SETTINGS, max_examples=300)
@given(TENSORS, st.booleans())
def test_grpc_request_round_trip(case: tuple[str, np.ndarray], raw: bool) -> None:
    datatype, array = case
    message = pb.ModelInferRequest(model_name="m", model_version="3")
    tensor = message.inputs.add(name="t", datatype=datatype, shape=array.shape)
    if raw or datatype in ("FP16", "BF16"):
        message.raw_input_contents.append(spec_binary(array, datatype))
    else:
        field = grpc._CONTENTS[datatype][0]
        values = array.reshape(-1).tolist()
        getattr(tensor.contents, field).extend(values)
    parsed = grpc.parse_infer(message.SerializeToString())
    assert (parsed.model_name, parsed.model_version) == ("m", "3")
    assert parsed.raw == bool(message.raw_input_contents)
    assert same(parsed.inputs[0].array, array)


@settings(SETTINGS, max_examples=300)
@given(TENSORS, st.booleans(), st.booleans())
def test_rest_response_round_trip(case: tuple[str, np.ndarray], binary: bool, text_ok: bool) -> None:
    datatype, array = case
    if not binary and datatype == "BYTES":
        text_ok = all(_utf8(v) for v in array.reshape(-1).tolist())
        if not text_ok:
            return
    req = request.InferRequest(inputs=[], id="7", parameters={"binary_data_output": binary})
    answer = request.response(req, {"t": array}, "m", "2")
    parts, header_length = rest.encode_infer(answer)
    body = b"".join(bytes(p) for p in parts)
    header = body if header_length is None else body[:header_length]
    doc = json.loads(header)
    assert doc["model_name"] == "m" and doc["model_version"] == "2" and doc["id"] == "7"
    (out,) = doc["outputs"]
    assert out["datatype"] == datatype and out["shape"] == list(array.shape)
    if binary:
        assert header_length is not None
        size = out["parameters"]["binary_data_size"]
        assert len(body) == header_length + size
        got = spec_unbinary(body[header_length:], datatype, out["shape"])
    else:
        assert header_length is None
        values = out["data"]
        if datatype == "BYTES":
            got = np.array([v.encode() for v in values], dtype=object).reshape(out["shape"])
        else:
            wide = np.float64 if datatype in ("FP16", "BF16") else datatypes.numpy_dtype(datatype)
            got = np.array(values, dtype=wide).astype(datatypes.numpy_dtype(datatype))
            got = got.reshape(out["shape"])
            if datatype in ("FP16", "FP32", "FP64", "BF16"):  # JSON has no ±Infinity: null, read as NaN
                array = np.where(np.isfinite(array.astype(np.float64)), array, np.nan).astype(array.dtype)
    assert same(got, array)


def _utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


@settings(SETTINGS, max_examples=300)
@given(TENSORS, st.booleans())
def test_grpc_response_round_trip(case: tuple[str, np.ndarray], raw: bool) -> None:
    datatype, array = case
    answer = request.response(request.InferRequest(inputs=[], id="x"), {"t": array}, "m", "1")
    message = pb.ModelInferResponse.FromString(grpc.encode_infer(answer, raw))
    (out,) = message.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("t", datatype, list(array.shape))
    if raw or datatype in ("FP16", "BF16"):
        assert not out.HasField("contents")
        got = spec_unbinary(message.raw_output_contents[0], datatype, list(out.shape))
    else:
        assert not message.raw_output_contents
        values = list(getattr(out.contents, grpc._CONTENTS[datatype][0]))
        got = np.array(values, dtype=object if datatype == "BYTES" else datatypes.numpy_dtype(datatype))
        got = got.reshape(list(out.shape))
    assert same(got, array)


# -- requests: parameters, outputs, feeds --------------------------------------------------------------


def test_parameters_signature_timeout_and_outputs() -> None:
    body = body_of(
        {
            "id": "42",
            "parameters": {"signature_name": "multi", "timeout": 250000, "custom": "kept"},
            "inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1, 2.5]}],
            "outputs": [
                {"name": "sum", "parameters": {"binary_data": True}},
                {"name": "label_bytes"},
                {"name": "scores", "parameters": {"classification": 3}},
            ],
        }
    )
    req = rest.parse_infer(body, None, "tf1", "stable")
    assert (req.signature_name, req.timeout, req.model_name, req.model_version) == (
        "multi",
        0.25,
        "tf1",
        "stable",
    )
    assert req.parameters["custom"] == "kept"
    assert req.output_filter() == ["sum", "label_bytes", "scores"]
    assert [(o.binary, o.classification) for o in req.outputs] == [(True, 0), (None, 0), (None, 3)]
    feeds = req.feeds({"a": T.DT_FLOAT, "b": T.DT_INT64}, "multi")
    assert feeds["a"].tolist() == [1.0, 2.5] and feeds["a"].dtype == np.float32


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"signature_name": 3}, "parameter 'signature_name' must be a string"),
        ({"timeout": -1}, "parameter 'timeout' must be an integer of at least 0"),
        ({"timeout": "1s"}, "parameter 'timeout' must be an integer"),
        ({"binary_data_output": "yes"}, "parameter 'binary_data_output' must be true or false"),
    ],
)
def test_bad_request_parameters(parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(SigserveError, match=message) as e:
        request.InferRequest(inputs=[], parameters=parameters)
    assert e.value.code == Code.INVALID_ARGUMENT


def test_feeds_check_names_and_datatypes_against_the_signature() -> None:
    req = rest.parse_infer(
        body_of({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1]}]}), None
    )
    with pytest.raises(
        SigserveError, match=r"input 'x' is FP64, but signature 'serving_default' takes FP32 \(DT_FLOAT\)"
    ):
        req.feeds({"x": T.DT_FLOAT}, "serving_default")
    with pytest.raises(SigserveError, match="unknown input 'x': signature 'multi' takes a, b; pick another"):
        req.feeds({"a": T.DT_FLOAT, "b": T.DT_INT64}, "multi")
    with pytest.raises(SigserveError, match="DT_COMPLEX64, which the Open Inference Protocol cannot carry"):
        req.feeds({"x": T.DT_COMPLEX64}, "c")
    twice = rest.parse_infer(
        body_of({"inputs": [{"name": "x", "datatype": "FP32", "shape": [], "data": 1}] * 2}), None
    )
    with pytest.raises(SigserveError, match="input 'x' is given twice"):
        twice.feeds({"x": T.DT_FLOAT}, "s")


def test_response_orders_filters_and_classifies() -> None:
    results = {
        "scores": np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0]], np.float32),
        "a": np.array([1, 2], np.int64),
    }
    req = request.InferRequest(
        inputs=[],
        outputs=[request.RequestedOutput("scores", {"classification": 2}), request.RequestedOutput("a")],
    )
    answer = request.response(req, results, "m", "1")
    assert [o.name for o in answer.outputs] == ["scores", "a"]
    assert answer.outputs[0].datatype == "BYTES" and answer.outputs[0].shape == (2, 2)
    assert answer.outputs[0].array.tolist() == [[b"0.7:1", b"0.2:2"], [b"0.5:0", b"0.5:1"]]
    every = request.response(request.InferRequest(inputs=[]), results, "m", "1")
    assert [o.name for o in every.outputs] == ["a", "scores"]
    with pytest.raises(SigserveError, match="complex64, which the Open Inference Protocol cannot carry"):
        request.response(request.InferRequest(inputs=[]), {"c": np.zeros(1, np.complex64)}, "m", "1")


def test_classification_extension_matches_tritons_examples() -> None:
    # extension_classification.md: [1, 5, 10, 4] top 2 -> "10:2", "5:1";
    # [1.1, 3.3, 0.5, 2.4] -> "3.3:1", "2.4:3"
    assert tensors.classify(np.array([1, 5, 10, 4], np.int32), 2, "o").tolist() == [b"10:2", b"5:1"]
    assert tensors.classify(np.array([1.1, 3.3, 0.5, 2.4], np.float32), 2, "o").tolist() == [
        b"3.3:1",
        b"2.4:3",
    ]
    assert tensors.classify(np.array([[3, 1]], np.uint64), 5, "o").tolist() == [[b"3:0", b"1:1"]]  # clamped
    with pytest.raises(SigserveError, match="needs a numeric output"):
        tensors.classify(np.array([b"a"], object), 1, "output 'c'")
    with pytest.raises(SigserveError, match="must be an integer of at least 1"):
        request.RequestedOutput("o", {"classification": 0})


def test_parse_version() -> None:
    assert request.parse_version("") == (None, None)
    assert request.parse_version("-1") == (None, None)
    assert request.parse_version("123") == (123, None)
    assert request.parse_version("stable") == (None, "stable")
    with pytest.raises(SigserveError, match="out of range"):
        request.parse_version("9" * 30)


# -- the bad inputs the issue lists ---------------------------------------------------------------------


def _input(**fields: Any) -> dict[str, Any]:
    item = {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}
    item.update(fields)
    return {key: value for key, value in item.items() if value is not None}


BAD_JSON = [
    (_input(shape=[3]), "input 'x': the shape holds 3 elements, but 'data' has 2"),
    (_input(datatype="FLOAT"), "unknown datatype 'FLOAT'"),
    (_input(shape=[2**60], data=[1.0]), "the shape holds 1152921504606846976 elements, but 'data' has 1"),
    (_input(shape=[2**40, 2**40], data=[1.0]), r"shape \[1099511627776, 1099511627776\] has more elements"),
    (_input(shape=[-2]), r"shape \[-2\] has a negative dimension"),
    (_input(shape="2"), "'shape' must be a list of dimensions"),
    (_input(shape=[1.5]), "holds 1.5, not an integer"),
    (_input(shape=[1] * 65, data=[1.0]), "shape has 65 dimensions; at most 64"),
    (_input(datatype="INT32", data=[1, 2.5]), "INT32 'data' must hold integers, not 2.5"),
    (_input(datatype="UINT8", data=[1, -1]), "-1 is outside the range of UINT8"),
    (_input(datatype="BOOL", data=[1, 0]), "BOOL 'data' must hold true or false, not 1"),
    (_input(datatype="BYTES", data=["a", 1]), "BYTES 'data' must hold strings, not 1"),
    (_input(data=[1.0, "2"]), "FP32 'data' must hold numbers"),
    (_input(data=None), "input 'x' has neither 'data' nor a binary_data_size parameter"),
    (_input(shape=None), "'shape' is missing"),
    (_input(name=None), r"inputs\[0\]: 'name' must be a string"),
    (_input(parameters={"binary_data_size": -4}), "binary_data_size' must be an integer of at least 0"),
    (_input(parameters={"binary_data_size": 8}, data=None), "no Inference-Header-Content-Length header"),
]


@pytest.mark.parametrize(("item", "message"), BAD_JSON)
def test_bad_json_inputs(item: dict[str, Any], message: str) -> None:
    with pytest.raises(SigserveError, match=message) as e:
        rest.parse_infer(body_of({"inputs": [item]}), None)
    assert e.value.code == Code.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "The inference request must be a JSON object"),
        (b"[1]", "The inference request must be a JSON object"),
        (b'{"inputs": 1}', "needs 'inputs', a list"),
        (b'{"id": 5, "inputs": []}', "'id' must be a string"),
        (b'{"inputs": [], "outputs": {"name": "y"}}', "'outputs' must be a list"),
        (b'{"inputs": [], "parameters": {"a": [1]}}', "parameter 'a' must be a string, number or boolean"),
        (b'{"inputs": [', "JSON Parse error"),
    ],
)
def test_bad_json_requests(body: bytes, message: str) -> None:
    with pytest.raises(SigserveError, match=message):
        rest.parse_infer(body, None)


def _framed(
    sizes: list[int], blob: bytes, header: str | None = "auto", shape: list[int] | None = None
) -> tuple[bytes, str | None]:
    inputs = [
        {
            "name": f"x{i}",
            "datatype": "FP32",
            "shape": shape or [size // 4],
            "parameters": {"binary_data_size": size},
        }
        for i, size in enumerate(sizes)
    ]
    head = body_of({"inputs": inputs})
    return head + blob, str(len(head)) if header == "auto" else header


@pytest.mark.parametrize(
    ("framing", "message"),
    [
        (
            _framed([8], b"\0" * 12),
            "12 bytes after its JSON header, but the inputs' binary_data_size parameters add up to 8",
        ),
        (_framed([8, 8], b"\0" * 12), "binary_data_size 8 runs past the end of the body"),
        (_framed([8], b"\0" * 8, shape=[3]), "takes 12 bytes of binary data, but 8 were sent"),
        (_framed([8], b"\0" * 8, header="abc"), "Inference-Header-Content-Length must be the length"),
        (_framed([8], b"\0" * 8, header="999999"), "Inference-Header-Content-Length must be the length"),
        (_framed([8], b"\0" * 8, header="-5"), "Inference-Header-Content-Length must be the length"),
        (_framed([8], b"\0" * 8, header="10"), "JSON Parse error"),
    ],
)
def test_bad_binary_framing(framing: tuple[bytes, str | None], message: str) -> None:
    body, header = framing
    with pytest.raises(SigserveError, match=message) as e:
        rest.parse_infer(body, header)
    assert e.value.code == Code.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("blob", "count", "message"),
    [
        (b"\x05\0\0\0ab", 1, "BYTES element 0 claims 5 bytes, but only 2 remain"),
        (b"\x02\0\0\0ab\x01\0", 2, "ends inside the length of BYTES element 1"),
        (b"\x01\0\0\0ab", 1, "1 bytes of binary data are left after its 1 BYTES elements"),
        (b"\0\0\0\0", 2**60, "elements need at least"),
    ],
)
def test_bad_bytes_framing(blob: bytes, count: int, message: str) -> None:
    with pytest.raises(SigserveError, match=message):
        tensors.split_bytes(blob, count, "input 's'")


def test_bool_bytes_must_be_zero_or_one() -> None:
    with pytest.raises(SigserveError, match="BOOL elements must be bytes 0"):
        tensors.from_binary(b"\x00\x02", "BOOL", (2,), "input 'b'")


def test_bad_grpc_requests() -> None:
    def parse(message: pb.ModelInferRequest) -> None:
        grpc.parse_infer(message.SerializeToString())

    m = pb.ModelInferRequest(model_name="m")
    m.inputs.add(name="x", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1.0])
    with pytest.raises(SigserveError, match="the shape holds 2 elements, but fp32_contents has 1"):
        parse(m)
    m.inputs[0].contents.Clear()
    m.inputs[0].contents.int_contents.extend([1, 2])
    with pytest.raises(SigserveError, match="FP32, whose values go in fp32_contents, not int_contents"):
        parse(m)
    m.inputs[0].contents.Clear()
    m.raw_input_contents.extend([b"\0" * 8, b""])
    with pytest.raises(SigserveError, match="raw_input_contents has 2 entries for 1 inputs"):
        parse(m)
    del m.raw_input_contents[1]
    m.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(SigserveError, match="typed contents in a request that uses raw_input_contents"):
        parse(m)
    half = pb.ModelInferRequest()
    half.inputs.add(name="h", datatype="FP16", shape=[1])
    with pytest.raises(
        SigserveError, match="FP16 has no typed contents field; send it in raw_input_contents"
    ):
        parse(half)
    small = pb.ModelInferRequest()
    small.inputs.add(name="s", datatype="INT8", shape=[1]).contents.int_contents.append(300)
    with pytest.raises(SigserveError, match="outside the range of INT8"):
        parse(small)
    with pytest.raises(SigserveError, match="not a valid protocol buffer"):
        grpc.parse_infer(b"\x2a\xff\xff")


def test_non_finite_floats_are_null_in_json_and_exact_in_binary() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 0.1], np.float32)
    req = request.InferRequest(
        inputs=[], outputs=[request.RequestedOutput("t"), request.RequestedOutput("b", {"binary_data": True})]
    )
    answer = request.response(req, {"t": values, "b": values}, "m", "1")
    parts, header_length = rest.encode_infer(answer)
    body = b"".join(bytes(p) for p in parts)
    assert header_length is not None
    doc = orjson.loads(body[:header_length])  # strict JSON: no NaN/Infinity tokens
    assert doc["outputs"][0]["data"] == [None, None, None, 0.1]
    assert np.frombuffer(body[header_length:], "<f4").tobytes() == values.tobytes()


def test_non_utf8_bytes_output_asks_for_binary() -> None:
    answer = request.response(request.InferRequest(inputs=[]), {"s": np.array([b"\xff"], object)}, "m", "1")
    with pytest.raises(SigserveError, match=r"not UTF-8.*binary_data"):
        rest.encode_infer(answer)


# -- metadata and tf.Example features -------------------------------------------------------------------


def test_model_metadata_of_a_fixture(fixtures_dir: pathlib.Path) -> None:
    from sigserve.saved_model.loader import get_meta_graph, read_saved_model

    graph = get_meta_graph(
        read_saved_model(fixtures_dir / "saved_model_half_plus_two_cpu" / "00000123"), ["serve"]
    )
    meta = metadata.model_metadata("half_plus_two", [123], graph.signature_def)
    assert meta.platform == "tensorflow_savedmodel"
    assert meta.versions == ["123"]
    assert meta.inputs == [metadata.TensorMetadata("x", "FP32", (-1, 1))]
    assert meta.outputs == [metadata.TensorMetadata("y", "FP32", (-1, 1))]
    assert meta.parameters["signature_name"] == "serving_default"
    assert meta.parameters["signatures"].split(",") == sorted(graph.signature_def)
    classify = metadata.tensor_metadata("inputs", graph.signature_def["classify_x_to_y"].inputs["inputs"])
    assert classify == metadata.TensorMetadata("inputs", "BYTES", (-1,))  # unknown rank
    doc = json.loads(rest.encode_model_metadata(meta))
    assert doc["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]
    message = pb.ModelMetadataResponse.FromString(grpc.encode_model_metadata(meta))
    assert (
        list(message.inputs[0].shape) == [-1, 1] and message.properties["signature_name"] == "serving_default"
    )
    no_default = metadata.model_metadata("m", [1], {"other": graph.signature_def["classify_x_to_y"]})
    assert no_default.inputs == [] and "signature_name" not in no_default.parameters


def test_named_features_become_examples() -> None:
    body = body_of(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [1.5, 2.0]},
                {"name": "n", "datatype": "INT64", "shape": [2], "data": [3, -4]},
                {"name": "tag", "datatype": "BYTES", "shape": [2, 2], "data": ["a", "b", "c", "d"]},
            ]
        }
    )
    serialized = examples.serialized_examples(rest.parse_infer(body, None).inputs)
    assert serialized.shape == (2,)
    second = example_pb2.Example.FromString(serialized[1]).features.feature
    assert list(second["x"].float_list.value) == [2.0]
    assert list(second["n"].int64_list.value) == [-4]
    assert list(second["tag"].bytes_list.value) == [b"c", b"d"]
    ragged = body_of(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]},
                {"name": "y", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]},
            ]
        }
    )
    with pytest.raises(SigserveError, match="the batch \\(first dimension\\) of the other features is 2"):
        examples.serialized_examples(rest.parse_infer(ragged, None).inputs)
    scalar = body_of({"inputs": [{"name": "x", "datatype": "FP32", "shape": [], "data": 1}]})
    with pytest.raises(SigserveError, match="first dimension must be the batch"):
        examples.serialized_examples(rest.parse_infer(scalar, None).inputs)


# -- hostile requests: a clean INVALID_ARGUMENT or a request no bigger than its bytes -------------------


def request_size(req: request.InferRequest) -> int:
    size = 0
    for item in req.inputs:
        array = item.array
        if array.base is not None and array.dtype != object:
            continue  # a view over the request's bytes
        size += array.nbytes
        if array.dtype == object:
            size += sum(len(v) for v in array.reshape(-1).tolist())
    return size


def check_outcome(parse: Any, body: bytes) -> None:
    try:
        req = parse()
    except SigserveError as e:
        assert e.code == Code.INVALID_ARGUMENT, e
        assert e.message and len(e.message) < 2000
        return
    assert request_size(req) <= 8 * len(body) + 64


def mostly(valid: Any, junk: Any, odds: int = 5) -> Any:
    """`valid` `odds` times out of `odds + 1`, else `junk`."""
    return st.integers(0, odds).flatmap(lambda k: junk if k == 0 else valid)


HOSTILE_DATATYPES = st.sampled_from([*ALL, "FP8", "", "fp32", "STRING", "\u0000"])
DIMS = st.one_of(
    st.integers(0, 5),
    st.integers(-3, -1),
    st.sampled_from([2**31, 2**32, 2**60, 2**62, 2**63 - 1, 2**64, 2**70]),
    st.floats(allow_nan=True),
    st.text(max_size=2),
    st.none(),
)
HOSTILE_SHAPES = st.one_of(st.lists(DIMS, max_size=5), st.lists(st.just(1), min_size=60, max_size=70), DIMS)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)
DATA = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5), max_leaves=20) | st.dictionaries(
    st.text(max_size=3), SCALARS, max_size=2
)
PARAMS = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(
            ["binary_data_size", "binary_data", "classification", "signature_name", "timeout", "x"]
        ),
        st.one_of(SCALARS, st.integers(-5, 40), st.lists(SCALARS, max_size=2)),
        max_size=3,
    ),
    SCALARS,
)
JUNK_INPUT = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.sampled_from(["x", "y", ""]), SCALARS),
        "datatype": st.one_of(HOSTILE_DATATYPES, SCALARS),
        "shape": HOSTILE_SHAPES,
        "data": DATA,
        "parameters": PARAMS,
    },
)
ELEMENTS = {
    "BYTES": st.text(max_size=3),
    "BOOL": st.booleans(),
    "FP32": st.floats(width=32),
    "FP64": st.floats(),
    "FP16": st.floats(width=16),
    "BF16": st.floats(width=32),
}


@st.composite
def near_valid_input(draw: Any) -> dict[str, Any]:
    """A well-formed input, then (usually) one field made wrong: the checks deep inside get reached."""
    datatype = draw(st.sampled_from(ALL))
    shape = draw(st.lists(st.integers(0, 4), max_size=3))
    n = math.prod(shape)
    element = ELEMENTS.get(datatype, st.integers(-(2**63), 2**64 - 1))
    data: Any = draw(st.lists(element, min_size=n, max_size=n))
    if draw(st.booleans()):  # nested in the shape
        data = np.array(data, dtype=object).reshape(shape).tolist() if shape else data
    item: dict[str, Any] = {
        "name": draw(st.sampled_from(["x", "y"])),
        "datatype": datatype,
        "shape": shape,
        "data": data,
    }
    change = draw(
        st.sampled_from(["none", "name", "datatype", "shape", "data", "parameters", "drop", "element"])
    )
    if change == "drop":
        del item[draw(st.sampled_from(sorted(item)))]
    elif change == "element" and n:
        flat = list(np.array(data, dtype=object).reshape(-1)) if shape else list(data)
        flat[draw(st.integers(0, n - 1))] = draw(SCALARS)
        item["data"] = flat
    elif change == "parameters":
        item["parameters"] = draw(PARAMS)
    elif change in ("name", "datatype", "shape", "data"):
        item[change] = draw(
            {"name": SCALARS, "datatype": HOSTILE_DATATYPES, "shape": HOSTILE_SHAPES, "data": DATA}[change]
        )
    return item


HOSTILE_INPUT = mostly(near_valid_input(), JUNK_INPUT)
HOSTILE_DOC = st.fixed_dictionaries(
    {"inputs": st.lists(HOSTILE_INPUT, max_size=3)},
    optional={
        "id": mostly(st.text(max_size=4), SCALARS),
        "parameters": PARAMS,
        "outputs": st.one_of(
            st.lists(
                st.fixed_dictionaries({"name": st.sampled_from(["y", "z"])}, optional={"parameters": PARAMS}),
                max_size=2,
            ),
            st.lists(st.fixed_dictionaries({}, optional={"name": SCALARS, "parameters": PARAMS}), max_size=2),
            SCALARS,
        ),
    },
) | st.fixed_dictionaries({}, optional={"inputs": SCALARS, "id": SCALARS})


@settings(SETTINGS, max_examples=800)
@given(HOSTILE_DOC)
def test_hostile_json_bodies(doc: dict[str, Any]) -> None:
    body = body_of(doc)
    check_outcome(lambda: rest.parse_infer(body, None), body)


def blob_for(draw: Any, datatype: Any, shape: Any) -> bytes:
    """Binary data of the right size for a well-formed (datatype, shape), else a few random bytes."""
    if datatype not in ALL or not isinstance(shape, list) or any(type(d) is not int or d < 0 for d in shape):
        return draw(st.binary(max_size=16))
    n = math.prod(shape)
    if n > 64:
        return draw(st.binary(max_size=16))
    if datatype == "BYTES":
        return b"".join(
            struct.pack("<I", len(v)) + v
            for v in draw(st.lists(st.binary(max_size=3), min_size=n, max_size=n))
        )
    if datatype == "BOOL":
        return bytes(draw(st.lists(mostly(st.integers(0, 1), st.integers(0, 255)), min_size=n, max_size=n)))
    width = 2 if datatype == "BF16" else np.dtype(WIRE[datatype]).itemsize
    return draw(st.binary(min_size=n * width, max_size=n * width))


@st.composite
def hostile_binary(draw: Any) -> tuple[bytes, str | None]:
    inputs, blobs = [], []
    for i in range(draw(st.integers(0, 3))):
        datatype = draw(mostly(st.sampled_from(ALL), HOSTILE_DATATYPES))
        shape = draw(mostly(st.lists(st.integers(0, 4), max_size=3), HOSTILE_SHAPES))
        blob = blob_for(draw, datatype, shape)
        size = draw(
            mostly(
                st.just(len(blob)), st.one_of(st.integers(-2, 40), st.sampled_from([2**62, 2**64]), SCALARS)
            )
        )
        item = {
            "name": f"x{i}",
            "datatype": datatype,
            "shape": shape,
            "parameters": {"binary_data_size": size},
        }
        if draw(st.integers(0, 9)) == 0:
            item["data"] = draw(DATA)
        inputs.append(item)
        blobs.append(blob)
    head = body_of({"inputs": inputs, "parameters": {"binary_data_output": True}})
    body = head + b"".join(blobs)
    if draw(st.integers(0, 5)) == 0:  # cut or extend the body
        body = body[: draw(st.integers(0, len(body)))] + draw(st.binary(max_size=6))
    header = draw(
        mostly(
            st.just(str(len(head))), st.one_of(st.none(), st.integers(-3, 400).map(str), st.text(max_size=4))
        )
    )
    return body, header


@settings(SETTINGS, max_examples=700)
@given(hostile_binary())
def test_hostile_binary_bodies(case: tuple[bytes, str | None]) -> None:
    body, header = case
    check_outcome(lambda: rest.parse_infer(body, header), body)


@st.composite
def hostile_grpc(draw: Any) -> bytes:
    message = pb.ModelInferRequest(model_name=draw(st.text(max_size=3)))
    for _ in range(draw(st.integers(0, 3))):
        shape = draw(
            st.lists(st.one_of(st.integers(-3, 5), st.sampled_from([2**40, 2**62, 2**63 - 1])), max_size=4)
        )
        tensor = message.inputs.add(
            name=draw(st.text(max_size=2)), datatype=draw(HOSTILE_DATATYPES), shape=shape
        )
        field = draw(st.sampled_from([*sorted({v[0] for v in grpc._CONTENTS.values()}), None]))
        if field == "bytes_contents":
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=4), max_size=6)))
        elif field in ("fp32_contents", "fp64_contents"):
            getattr(tensor.contents, field).extend(draw(st.lists(st.floats(width=32), max_size=6)))
        elif field == "bool_contents":
            tensor.contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=6)))
        elif field is not None:
            low = 0 if field.startswith("uint") else -(2**31)
            getattr(tensor.contents, field).extend(draw(st.lists(st.integers(low, 2**31 - 1), max_size=6)))
        if draw(st.booleans()):
            tensor.parameters["binary_data_size"].int64_param = draw(st.integers(-2, 10))
    raw = draw(st.integers(0, 3))
    if raw == 1:
        message.raw_input_contents.extend(draw(st.lists(st.binary(max_size=40), max_size=4)))
    elif raw >= 2:
        for tensor in message.inputs:
            tensor.ClearField("contents")
            message.raw_input_contents.append(blob_for(draw, tensor.datatype, list(tensor.shape)))
    for _ in range(draw(st.integers(0, 2))):
        out = message.outputs.add(name=draw(st.text(max_size=2)))
        out.parameters["classification"].int64_param = draw(st.integers(-2, 3))
    if draw(st.booleans()):
        message.parameters["timeout"].string_param = "soon"
    data = message.SerializeToString()
    if draw(st.integers(0, 3)) == 0 and data:  # truncated or corrupted wire data
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=4))
    return data


@settings(SETTINGS, max_examples=700)
@given(hostile_grpc())
def test_hostile_grpc_requests(data: bytes) -> None:
    check_outcome(lambda: grpc.parse_infer(data), data)
