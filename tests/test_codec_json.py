"""TF Serving's REST JSON (tfserving-api.md §1.7–1.8): parse rules, error texts, float writing."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sigserve.codec import json as cj
from sigserve.codec._jsonwrite import float_array_json, format_float
from sigserve.errors import Code, SigserveError
from sigserve.protos import types_pb2 as T


def inputs(body: bytes | str, dtypes: dict[str, int]) -> tuple[dict[str, np.ndarray], bool]:
    raw = body.encode() if isinstance(body, str) else body
    return cj.parse_predict(raw).to_inputs(dtypes)


def error(body: bytes | str, dtypes: dict[str, int] | None = None) -> SigserveError:
    with pytest.raises(SigserveError) as e:
        inputs(body, dtypes or {"x": T.DT_FLOAT})
    return e.value


# -- parsing (§1.7 steps 1–2) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"  \n", "JSON Parse error: The document is empty. at offset: 3"),
        (b"instances = [1, 2]", "JSON Parse error: Invalid value. at offset: 0"),
        (
            b'{"instances": [1, 2',
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 19",
        ),
        (b'{"a" 1}', "JSON Parse error: Missing a colon after a name of object member. at offset: 5"),
        (b'{"a": 1,}', "JSON Parse error: Missing a name for object member. at offset: 8"),
        (b'{"a": 1 "b": 2}', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8"),
        (b'{"a": [1,]}', "JSON Parse error: Invalid value. at offset: 9"),
        (b'{"a": 1e400}', "JSON Parse error: Number too big to be stored in double. at offset: 6"),
        (b'{"a": 1.}', "JSON Parse error: Miss fraction part in number. at offset: 8"),
        (b'{"a": 1e+}', "JSON Parse error: Miss exponent in number. at offset: 9"),
        (b'{"a": "x', "JSON Parse error: Missing a closing quotation mark in string. at offset: 8"),
        (b'{"a": "\\q"}', "JSON Parse error: Invalid escape character in string. at offset: 7"),
        (
            b'{"a": "\\u12G4"}',
            "JSON Parse error: Incorrect hex digit after \\u escape in string. at offset: 7",
        ),
        (b'{"a": "\\ud800"}', "JSON Parse error: The surrogate pair in string is invalid. at offset: 7"),
        (b'{"a": "\xff\xfe"}', "JSON Parse error: Invalid encoding in string. at offset: 7"),
        (b'{"a": tru}', "JSON Parse error: Invalid value. at offset: 9"),
    ],
)
def test_parse_errors(body: bytes, message: str) -> None:
    with pytest.raises(SigserveError) as e:
        cj.parse_predict(body)
    assert e.value.code == Code.INVALID_ARGUMENT and e.value.message == message


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(SigserveError, match=r"^JSON Value: \[1, 2\] Is not object$"):
        cj.parse_predict(b"[1, 2]")
    with pytest.raises(SigserveError, match="Is not object"):
        cj.parse_predict(b'"instances"')


def test_signature_name() -> None:
    assert cj.parse_predict(b'{"instances": [1]}').signature_name == ""
    assert cj.parse_predict(b'{"signature_name": "sig", "instances": [1]}').signature_name == "sig"
    with pytest.raises(SigserveError, match=r"'signature_name' key must be a string value\."):
        cj.parse_predict(b'{"signature_name": 1, "instances": [1]}')


def test_nan_infinity_and_rapidjson_inf() -> None:
    out, _ = inputs('{"instances": [NaN, Infinity, -Infinity, Inf, -Inf, 1]}', {"x": T.DT_FLOAT})
    x = out["x"]
    assert math.isnan(x[0]) and x[1:5].tolist() == [math.inf, -math.inf, math.inf, -math.inf]


def test_trailing_bytes_after_the_document_are_ignored() -> None:
    out, row = inputs(b'{"instances": [1.5]} trailing garbage {', {"x": T.DT_FLOAT})
    assert out["x"].tolist() == [1.5] and row


def test_duplicate_keys_first_wins() -> None:
    out, _ = inputs('{"instances": [1], "instances": [2, 3]}', {"x": T.DT_INT32})
    assert out["x"].tolist() == [1]
    out, _ = inputs('{"inputs": {"x": [5], "x": "no"}}', {"x": T.DT_INT64})
    assert out["x"].tolist() == [5]


# -- hostile input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": ' + b"[" * 500_000 + b"1" + b"]" * 500_000 + b"}",
        b'{"instances": ' + b"[" * 500_000,
        b"[" * 500_000 + b"]" * 500_000,
        b'{"a":' * 200_000,
    ],
    ids=["deep-closed", "deep-open", "deep-array-root", "deep-objects"],
)
def test_deep_nesting(body: bytes) -> None:
    start = time.perf_counter()
    with pytest.raises(SigserveError) as e:
        inputs(body, {"x": T.DT_FLOAT})
    assert e.value.code == Code.INVALID_ARGUMENT
    assert "more than 100 levels deep" in e.value.message, e.value.message
    assert time.perf_counter() - start < 0.5  # refused at level 101, not after building 500,000 lists


def test_deep_nesting_parses_without_recursion_when_allowed() -> None:
    body = b'{"signature_name": "s", "inputs": ' + b"[" * 500_000 + b"2.5" + b"]" * 500_000 + b"}"
    assert cj.parse_predict(body, max_depth=500_001).signature_name == "s"
    with pytest.raises(SigserveError) as e:
        cj.parse_predict(body, max_depth=500_001).to_inputs({"x": T.DT_FLOAT})
    assert "500000 levels deep" in e.value.message and "at most 64 dimensions" in e.value.message
    out, _ = inputs(b'{"inputs": ' + b"[" * 64 + b"2.5" + b"]" * 64 + b"}", {"x": T.DT_FLOAT})
    assert out["x"].ndim == 64


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"instances": [1e999]}', "Number too big to be stored in double"),
        ('{"instances": [{"b64": "not base64!"}]}', "Unable to base64 decode"),
        ('{"instances": [[1, 2], [3]]}', "Expecting tensor size: 2 but got: 1"),
        ('{"inputs": [[1, 2], [3]]}', "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        (b'{"instances": ["\xc3\x28"]}', "Invalid encoding in string"),
        ("[1]", "Is not object"),
        ('{"instances": [1]} {{{', None),
    ],
)
def test_hostile_bodies_give_invalid_argument(body: str | bytes, fragment: str | None) -> None:
    dtypes = {"x": T.DT_STRING} if b"b64" in (body if isinstance(body, bytes) else body.encode()) else None
    if fragment is None:
        assert inputs(body, {"x": T.DT_FLOAT})[0]["x"].tolist() == [1.0]
        return
    e = error(body, dtypes)
    assert e.code == Code.INVALID_ARGUMENT and fragment in e.message


def test_int_out_of_range_for_int32() -> None:
    e = error('{"inputs": [2147483648]}', {"x": T.DT_INT32})
    assert e.message == "JSON Value: 2147483648 Type: Number is not of expected type: int32"
    assert inputs('{"inputs": [18446744073709551615]}', {"x": T.DT_UINT64})[0]["x"].tolist() == [2**64 - 1]
    e = error('{"inputs": [-1]}', {"x": T.DT_UINT64})
    assert "is not of expected type: uint64" in e.message


def test_no_quadratic_time_on_many_small_arrays() -> None:
    body = ('{"instances": [' + ",".join(['[1, "a"]'] * 20_000) + "]}").encode()
    start = time.perf_counter()
    e = error(body)
    assert "is not of expected type: float" in e.message
    assert time.perf_counter() - start < 5


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_sigserve_errors(body: bytes) -> None:
    try:
        inputs(body, {"x": T.DT_FLOAT, "y": T.DT_STRING})
    except SigserveError as e:
        assert e.code in (Code.INVALID_ARGUMENT, Code.UNIMPLEMENTED)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["b64", "x", "y"]), inner),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    doc=st.dictionaries(st.sampled_from(["instances", "inputs", "signature_name", "x"]), JSON_VALUES),
    dtype=st.sampled_from(
        [T.DT_FLOAT, T.DT_INT32, T.DT_INT64, T.DT_UINT64, T.DT_BOOL, T.DT_STRING, T.DT_HALF]
    ),
    two=st.booleans(),
)
def test_arbitrary_documents_only_raise_sigserve_errors(doc: dict[str, Any], dtype: int, two: bool) -> None:
    body = json.dumps(doc).encode()
    dtypes = {"x": dtype, "y": T.DT_STRING} if two else {"x": dtype}
    try:
        inputs(body, dtypes)
    except SigserveError as e:
        assert e.code in (Code.INVALID_ARGUMENT, Code.UNIMPLEMENTED)


# -- §1.7 request rules and messages -------------------------------------------------------------------


def test_instances_and_inputs_presence() -> None:
    e = error('{"instances": [1], "inputs": [1]}')
    assert e.message.startswith("JSON Value: {")
    assert e.message.endswith(
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
    )
    assert error('{"x": 1}').message == "Missing 'inputs' or 'instances' key"
    assert error('{"instances": 1}').message.endswith("Expecting 'instances' to be an list/array")
    assert error('{"instances": []}').message.endswith("No values in 'instances' array")
    with pytest.raises(SigserveError, match="Failed to get input map for signature: DEFAULT"):
        inputs('{"instances": [1]}', {})


def test_row_format_plain_and_objects() -> None:
    out, row = inputs('{"instances": [[1, 2], [3, 4]]}', {"x": T.DT_INT32})
    assert row and out["x"].dtype == np.int32 and out["x"].tolist() == [[1, 2], [3, 4]]
    out, _ = inputs(
        '{"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": {"b64": "aGk="}}]}',
        {"a": T.DT_INT64, "b": T.DT_STRING},
    )
    assert out["a"].tolist() == [1, 2] and out["b"].tolist() == [b"x", b"hi"]
    out, _ = inputs('{"instances": [{"x": [1.5]}]}', {"x": T.DT_FLOAT})  # single input, object mode
    assert out["x"].shape == (1, 1)


def test_row_format_errors() -> None:
    two = {"a": T.DT_FLOAT, "b": T.DT_FLOAT}
    assert error('{"instances": [1, 2]}', two).message == (
        "instances is a plain list, but expecting list of objects as multiple input tensors "
        "required as per tensorinfo_map"
    )
    assert error('{"instances": [{"a": 1, "b": 2}, [1]]}', two).message == (
        "Expecting object but got list at item 1 of input list"
    )
    assert error('{"instances": [1, {"x": 2}]}').message == (
        "Expecting value/list but got object at item 1 of input list"
    )
    assert error('{"instances": [{"a": 1, "c": 2}]}', two).message == (
        "Failed to process element: 0 key: c of 'instances' list. Error: "
        "INVALID_ARGUMENT: JSON object: does not have named input: c"
    )
    msg = error('{"instances": [{"a": 1}]}', two).message
    assert msg.startswith("Failed to process element: 0 of 'instances' list. JSON object: {")
    assert msg.endswith("keys must be equal to: a,b")
    msg = error('{"instances": [[1, 2], [3, 4, 5]]}').message
    assert msg == (
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Expecting tensor size: 2 but got: 3"
    )
    assert (
        "Expecting shape [2,2] but got: [4,1]"
        in error('{"instances": [[[1, 2], [3, 4]], [[1], [2], [3], [4]]]}').message
    )


def test_columnar_format() -> None:
    out, row = inputs(
        '{"inputs": {"a": [1, 2], "b": [[1.5]], "extra": 1}}', {"a": T.DT_INT64, "b": T.DT_DOUBLE}
    )
    assert not row and out["a"].tolist() == [1, 2] and out["b"].dtype == np.float64
    out, _ = inputs('{"inputs": 3.5}', {"x": T.DT_FLOAT})
    assert out["x"].shape == () and out["x"] == 3.5
    out, _ = inputs('{"inputs": {"b64": "aGk="}}', {"x": T.DT_STRING})
    assert out["x"].shape == () and out["x"].item() == b"hi"
    two = {"a": T.DT_FLOAT, "b": T.DT_FLOAT}
    assert error('{"inputs": [1]}', two).message == (
        "inputs is a plain value/list, but expecting an object as multiple input tensors required "
        "as per tensorinfo_map"
    )
    assert error('{"inputs": {"a": [1]}}', two).message == "Missing named input: b in 'inputs' object."
    assert error('{"inputs": {"a": [], "b": []}}', two) if False else True


def test_shape_and_level_errors() -> None:
    assert error('{"inputs": [[1, [2]]]}').message == "Encountered list at unexpected level: 2 expected < 2"
    assert error('{"inputs": [[1, 2], 3]}').message == (
        "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"
    )
    out, _ = inputs('{"inputs": [[], []]}', {"x": T.DT_FLOAT})
    assert out["x"].shape == (2, 0)


@pytest.mark.parametrize(
    ("dtype", "value", "ok"),
    [
        (T.DT_FLOAT, "1", True),
        (T.DT_FLOAT, "1.5", True),
        (T.DT_FLOAT, "true", False),
        (T.DT_FLOAT, '"1"', False),
        (T.DT_FLOAT, "null", False),
        (T.DT_DOUBLE, "1e300", True),
        (T.DT_INT32, "1.0", False),
        (T.DT_INT32, "-2147483648", True),
        (T.DT_INT8, "300", True),  # no range check for the narrow types (cast like TF)
        (T.DT_INT64, "9223372036854775807", True),
        (T.DT_INT64, "9223372036854775808", False),
        (T.DT_UINT32, "4294967296", False),
        (T.DT_BOOL, "true", True),
        (T.DT_BOOL, "1", False),
        (T.DT_STRING, '"a"', True),
        (T.DT_STRING, "1", False),
    ],
)
def test_scalar_conversion(dtype: int, value: str, ok: bool) -> None:
    body = '{"inputs": [' + value + "]}"
    if ok:
        assert inputs(body, {"x": dtype})[0]["x"].shape == (1,)
    else:
        assert "is not of expected type" in error(body, {"x": dtype}).message


def test_float_conversion_details() -> None:
    out, _ = inputs('{"inputs": [1435774380, 1e39, -1e39, 1e-50]}', {"x": T.DT_FLOAT})
    assert out["x"].tolist() == [1435774336.0, math.inf, -math.inf, 0.0]


def test_type_error_texts() -> None:
    assert error('{"instances": ["a"]}').message.endswith(
        'JSON Value: "a" Type: String is not of expected type: float'
    )
    assert error('{"inputs": [null]}').message == "JSON Value: null Type: Null is not of expected type: float"
    assert error('{"inputs": [{"x": 1}]}').message.startswith("JSON Value: {")
    assert error('{"inputs": [{"x": 1}]}', {"x": T.DT_STRING}).message.endswith(
        "not formatted correctly for base64 data"
    )


def test_unsupported_dtype_is_unimplemented() -> None:
    e = error('{"inputs": [1.5]}', {"x": T.DT_HALF})
    assert e.code == Code.UNIMPLEMENTED and e.message == "Conversion of JSON Value: 1.5 to type: half"
    e = error('{"instances": [1.5]}', {"x": T.DT_BFLOAT16})
    assert e.code == Code.INVALID_ARGUMENT  # wrapped by the row-format loop, as in TF Serving
    assert e.message.endswith("Error: UNIMPLEMENTED: Conversion of JSON Value: 1.5 to type: bfloat16")


def test_long_values_are_truncated_in_messages() -> None:
    body = '{"signature_name": 5, "instances": [' + ",".join(["1.5"] * 10_000) + "]}"
    with pytest.raises(SigserveError) as e:
        cj.parse_predict(body.encode())
    assert len(e.value.message) < 400 and e.value.message.endswith("must be a string value.")


def test_fast_path_equals_slow_path() -> None:
    rng = np.random.default_rng(1)
    array = rng.standard_normal((50, 7)).astype(np.float32)
    body = json.dumps({"instances": array.tolist()}).encode()
    fast = inputs(body, {"x": T.DT_FLOAT})[0]["x"]
    slow = inputs(body.replace(b"]]", b"], NaN]")[: -len(b", NaN]}")] + b"]}", {"x": T.DT_FLOAT})[0]["x"]
    assert fast.tobytes() == slow.tobytes() == array.tobytes()


# -- §1.8 response --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (9000000, "9e+06"),
        (999999, "999999.0"),
        (0.5, "0.5"),
        (0.0003, "0.0003"),
        (0.00003, "3e-05"),
        (555557.5, "555557.5"),
        (3, "3.0"),
        (42, "42.0"),
        (0.1, "0.1"),
        (1 / 3, "0.333333343"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (-0.0, "-0.0"),
    ],
)
def test_float32_text(value: float, text: str) -> None:
    v = float(np.float32(value))
    assert format_float(v, single=True) == text
    assert float_array_json(np.float32([value])) == b"[" + text.encode() + b"]"


def test_float64_text() -> None:
    assert format_float(0.1, single=False) == "0.1"
    assert format_float(1 / 3, single=False) == "0.33333333333333331"
    assert float_array_json(np.float64([1 / 3, 2.0])) == b"[0.33333333333333331,2.0]"


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        st.sampled_from([np.float32, np.float64]), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0)
    )
)
def test_vectorized_float_text_matches_reference(array: np.ndarray) -> None:
    single = array.dtype == np.float32
    expected = [format_float(float(v), single).encode() for v in array.reshape(-1)]
    from sigserve.codec._jsonwrite import nest

    assert float_array_json(array) == (nest(expected, array.shape) if array.size else float_array_json(array))


PREDICT_DTYPES = {
    np.float32: T.DT_FLOAT,
    np.float64: T.DT_DOUBLE,
    np.int32: T.DT_INT32,
    np.int64: T.DT_INT64,
    np.uint32: T.DT_UINT32,
    np.uint64: T.DT_UINT64,
    np.int8: T.DT_INT8,
    np.int16: T.DT_INT16,
    np.uint8: T.DT_UINT8,
    np.bool_: T.DT_BOOL,
}


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    dtype=st.sampled_from(sorted(PREDICT_DTYPES, key=lambda d: np.dtype(d).name)),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)
def test_numpy_json_numpy_round_trip(data: st.DataObject, dtype: type, shape: tuple[int, ...]) -> None:
    elements = st.floats(width=32) if dtype == np.float32 else None
    array = data.draw(hnp.arrays(dtype, shape, elements=elements))
    body = cj.encode_predict({"y": array}, row_format=False)
    request = body.replace(b'{"outputs":', b'{"inputs":', 1)
    if 0 in shape:
        return  # zero-size: the shape of an empty list is [0] only (TF Serving's rule)
    back = inputs(request, {"y": PREDICT_DTYPES[dtype]})[0]["y"]
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes() or (np.isnan(array) == np.isnan(back)).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=10), min_size=1, max_size=5))
def test_string_round_trip_via_b64(values: list[bytes]) -> None:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    body = cj.encode_predict({"y_bytes": array}, row_format=True)
    request = body.replace(b'{"predictions":', b'{"instances":', 1)
    assert inputs(request, {"y_bytes": T.DT_STRING})[0]["y_bytes"].tolist() == values


def test_predict_response_shapes() -> None:
    one = cj.encode_predict({"y": np.float32([[1, 2], [3, 4]])}, row_format=True)
    assert json.loads(one) == {"predictions": [[1.0, 2.0], [3.0, 4.0]]}
    two = cj.encode_predict({"a": np.int64([1, 2]), "b_bytes": np.array([b"x", b"y"], dtype=object)}, True)
    assert json.loads(two) == {
        "predictions": [{"a": 1, "b_bytes": {"b64": "eA=="}}, {"a": 2, "b_bytes": {"b64": "eQ=="}}]
    }
    cols = cj.encode_predict({"a": np.float32(2), "s": np.array([b"t"], dtype=object)}, False)
    assert json.loads(cols) == {"outputs": {"a": 2.0, "s": ["t"]}}
    assert cj.encode_predict({"y": np.zeros((0, 3), np.float32)}, True) == b'{"predictions":[]}'
    assert cj.encode_predict({"y": np.uint64([2**64 - 1])}, False) == b'{"outputs":[18446744073709551615]}'
    assert cj.encode_predict({"y": np.array([True, False])}, False) == b'{"outputs":[true,false]}'
    assert b"NaN" in cj.encode_predict({"y": np.float32([np.nan])}, True)


def test_predict_response_errors() -> None:
    with pytest.raises(SigserveError, match="Cannot convert empty tensor map to JSON"):
        cj.encode_predict({}, True)
    with pytest.raises(SigserveError) as e:
        cj.encode_predict({"y": np.float32(1)}, True)
    assert e.value.message == "Tensor name: y has no shape information "
    with pytest.raises(SigserveError) as e:
        cj.encode_predict({"a": np.float32([1, 2]), "b": np.float32([1])}, True)
    assert e.value.message == "Tensor name: b has inconsistent batch size: 1 expecting: 2"
    with pytest.raises(SigserveError) as e:
        cj.encode_predict({"c": np.complex64([1])}, False)
    assert e.value.message == "Failed to write JSON value for tensor type: complex64"


def test_error_body() -> None:
    assert json.loads(cj.encode_error('Bad key: "key"')) == {"error": 'Bad key: "key"'}
    assert cj.encode_error('Bad key: "key"') == b'{"error":"Bad key: \\"key\\""}'


# -- §1.8 fast writer (orjson with NaN/Infinity tokens) ---------------------------------------------------


def _reads_back(body: bytes) -> Any:
    """Parse a response body the way a client does, NaN/Infinity tokens included."""
    return json.loads(body)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_values_are_tokens(dtype: type) -> None:
    array = np.array([[1.5, np.nan], [np.inf, -np.inf]], dtype=dtype)
    body = cj.encode_predict({"y": array}, row_format=True)
    assert b"null" not in body
    assert body.count(b"NaN") == 1 and body.count(b"-Infinity") == 1 and body.count(b"Infinity") == 2
    back = np.array(_reads_back(body)["predictions"], dtype=dtype)
    assert back.tobytes() == array.tobytes() or (np.isnan(back) == np.isnan(array)).all()
    assert back[0, 0] == 1.5 and back[1, 0] == np.inf and back[1, 1] == -np.inf


def test_an_output_named_null_does_not_hide_non_finite_values() -> None:
    """The small-output writer looks for orjson's `null` in the text; a key holding it must still get
    its NaN written as a token."""
    for outputs in ({"null": np.float32([1.0, 2.0])}, {"null": np.float32([np.nan, 2.0])}):
        body = cj.encode_predict(outputs, row_format=False)
        back = _reads_back(body)["outputs"]
        assert b"NaN" in body or back == [1.0, 2.0]
        assert (math.isnan(back[0]) and back[1] == 2.0) or back == [1.0, 2.0]
    body = cj.encode_predict({"xnullx": np.float64([np.inf]), "y": np.float32([np.nan])}, row_format=True)
    row = _reads_back(body)["predictions"][0]
    assert row["xnullx"] == math.inf and math.isnan(row["y"]) and b"null" not in body.replace(b"xnullx", b"")


def test_whole_numbers_stay_floats_and_ints_stay_ints() -> None:
    body = cj.encode_predict(
        {"f": np.float32([3, 42, 0, -0.0]), "i": np.int64([3, 42, 0, 0])}, row_format=False
    )
    assert body == b'{"outputs":{"f":[3.0,42.0,0.0,-0.0],"i":[3,42,0,0]}}'


def test_sentinel_values_in_the_tensor_fall_back_to_the_exact_writer() -> None:
    from sigserve.codec._jsonwrite import _SENTINELS

    for size, dtype in ((4, np.float32), (8, np.float64)):
        sentinel = _SENTINELS[size][0]
        array = np.array([sentinel, -sentinel, np.nan], dtype=dtype)
        body = cj.encode_predict({"y": array}, row_format=False)
        back = _reads_back(body)["outputs"]
        assert np.array(back[:2], dtype=dtype).tolist() == array[:2].tolist() and math.isnan(back[2])


def test_several_outputs_per_row_with_non_finite_values() -> None:
    body = cj.encode_predict(
        {"a": np.float32([[1, np.nan], [2, 3]]), "b": np.int32([7, 8]), "c": np.float64([np.inf, 0.25])},
        row_format=True,
    )
    rows = _reads_back(body)["predictions"]
    assert [sorted(r) for r in rows] == [["a", "b", "c"], ["a", "b", "c"]]
    assert rows[0]["b"] == 7 and rows[0]["c"] == math.inf and math.isnan(rows[0]["a"][1])
    assert rows[1] == {"a": [2.0, 3.0], "b": 8, "c": 0.25}
    mixed = cj.encode_predict({"a": np.float32([np.nan]), "s_bytes": np.array([b"\xff"], dtype=object)}, True)
    assert _reads_back(mixed)["predictions"][0]["s_bytes"] == {"b64": "/w=="}
    assert b"NaN" in mixed


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=32),
    )
)
def test_fast_writer_reads_back_to_the_same_values(array: np.ndarray) -> None:
    """Text parsed as double then cast (what TF Serving and numpy clients do) gives the same bits."""
    body = cj.encode_predict({"y": array}, row_format=True)
    back = np.array(_reads_back(body)["predictions"], dtype=np.float64).astype(array.dtype)
    nan = np.isnan(array)
    assert (np.isnan(back) == nan).all()
    assert (back[~nan].view(np.uint8) == array[~nan].view(np.uint8)).all()  # -0.0 included


def test_float32_texts_read_back_through_double() -> None:
    """Random float32 bit patterns across the whole range: orjson's shortest text, parsed as a
    double and cast to float32 (TF Serving's and numpy's way), gives back the same float32."""
    bits = np.random.default_rng(7).integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = values[np.isfinite(values)]
    body = cj.encode_predict({"y": values}, row_format=False)
    back = np.array(_reads_back(body)["outputs"], dtype=np.float64).astype(np.float32)
    assert (back.view(np.uint32) == values.view(np.uint32)).all()


# -- one-piece numeric tensors (_jsonnum, simdjson) against the ordinary parser -----------------------

from sigserve.codec import _jsonnum  # noqa: E402

needs_simdjson = pytest.mark.skipif(not _jsonnum.available(), reason="pysimdjson is not installed")

DIFF_DTYPES = [
    T.DT_FLOAT,
    T.DT_DOUBLE,
    T.DT_INT32,
    T.DT_INT64,
    T.DT_UINT64,
    T.DT_INT8,
    T.DT_BOOL,
    T.DT_STRING,
]


def _outcome(body: bytes, dtypes: dict[str, int]) -> tuple[Any, ...]:
    try:
        out, row = inputs(body, dtypes)
    except SigserveError as e:
        return ("error", e.code, e.message)
    return ("ok", row, {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in out.items()})


def _both_ways(body: bytes, dtypes: dict[str, int]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(one-piece path forced on for any size, ordinary parser only) for the same body."""
    saved_min, saved_module = _jsonnum.MIN_BYTES, _jsonnum.simdjson
    try:
        _jsonnum.MIN_BYTES = 0
        fast = _outcome(body, dtypes)
        _jsonnum.simdjson = None
        slow = _outcome(body, dtypes)
    finally:
        _jsonnum.MIN_BYTES, _jsonnum.simdjson = saved_min, saved_module
    return fast, slow


NUMBER_TEXTS = st.one_of(
    st.integers(-(2**64), 2**65).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda f: f"{f:.9g}"),
    st.sampled_from(
        ["-0", "-0.0", "0", "1e400", "-1e400", "1e-400", "1E5", "2.5e+3", "7e-2", "01", "1.", ".5"]
    ),
    st.sampled_from(["-", "NaN", "Infinity", "-Infinity", "true", "null", '"a"', "[]", "{}"]),
)


@st.composite
def numeric_texts(draw: st.DrawFn) -> str:
    """A nested list text: mostly rectangular numbers, sometimes ragged, mixed or malformed."""
    rank = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    ragged = draw(st.booleans()) and draw(st.booleans())
    sep = draw(st.sampled_from([",", ", ", " , ", ",\n"]))

    def build(level: int) -> str:
        size = shape[level] + (draw(st.integers(-1, 1)) if ragged else 0)
        if level == rank - 1:
            items = [
                draw(NUMBER_TEXTS)
                if draw(st.integers(0, 9)) == 0
                else draw(NUMBER_TEXTS.filter(_plain_number))
                for _ in range(max(size, 0))
            ]
        else:
            items = [build(level + 1) for _ in range(max(size, 0))]
        return "[" + sep.join(items) + "]"

    return build(0)


def _plain_number(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and text not in ("01", "1.", ".5", "-")
    except ValueError:
        return False


@needs_simdjson
@settings(max_examples=300, deadline=None)
@given(
    text=numeric_texts(),
    dtype=st.sampled_from(DIFF_DTYPES),
    wrap=st.sampled_from(
        ['{"instances": %s}', '{"inputs": %s}', '{"inputs": {"x": %s}}', '{"inputs": {"x": %s, "y": 1}}']
    ),
)
def test_one_piece_path_matches_the_ordinary_parser(text: str, dtype: int, wrap: str) -> None:
    body = (wrap % text).encode()
    fast, slow = _both_ways(body, {"x": dtype})
    assert fast == slow


@needs_simdjson
@settings(max_examples=300, deadline=None)
@given(
    text=numeric_texts(),
    edits=st.lists(
        st.tuples(
            st.integers(0, 10_000),
            st.sampled_from(["[", "]", ",", "", "-", ".", "e", "0", " ", "N", "}", '"']),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_one_piece_path_matches_on_malformed_bodies(text: str, edits: list[tuple[int, str]]) -> None:
    body = '{"instances": ' + text + "}"
    for at, replacement in edits:
        at %= len(body)
        body = body[:at] + replacement + body[at + 1 :]
    for dtype in (T.DT_FLOAT, T.DT_INT64):
        fast, slow = _both_ways(body.encode(), {"x": dtype})
        assert fast == slow


@needs_simdjson
@pytest.mark.parametrize(
    "text",
    [
        "[[1, [2]]]",  # a list hidden where a number belongs: same flat values, wrong depth
        "[[1, 2], [3], [4, 5, 6]]",  # ragged with the rectangular total
        "[[1, 2], 3]",
        "[[], []]",
        "[-0, -0.0, 0.0, 1]",
        "[1435774380, 1e39, -1e39, 1e-50]",
        "[18446744073709551615, 1]",
        "[-9223372036854775808, 9223372036854775807]",
        "[123456789012345678901234567890, 1.5]",
        "[1e400]",
        "[[1.5, 2.5]] trailing",
        "[1, 2,]",
        "[01]",
        "[NaN, 1]",
        "[" * 2000 + "1" + "]" * 2000,
        "[" * 65 + ",".join(["2.5"] * 300) + "]" * 65,  # rank 65: more than numpy allows
        "[" * 64 + ",".join(["2.5"] * 300) + "]" * 64,
    ],
)
def test_one_piece_path_edge_cases(text: str) -> None:
    for dtype in DIFF_DTYPES:
        for wrap in ('{"instances": %s}', '{"inputs": %s}'):
            fast, slow = _both_ways((wrap % text).encode(), {"x": dtype})
            assert fast == slow, (text, dtype, wrap)


@needs_simdjson
def test_large_tensor_takes_the_one_piece_path_and_keeps_errors() -> None:
    array = np.random.default_rng(3).standard_normal((300, 40)).astype(np.float32)
    body = json.dumps({"instances": array.tolist()}).encode()
    doc = cj.parse_predict(body).doc
    assert isinstance(doc["instances"], _jsonnum.Numbers)  # really the one-piece path
    assert inputs(body, {"x": T.DT_FLOAT})[0]["x"].tobytes() == array.tobytes()
    assert inputs(body, {"x": T.DT_DOUBLE})[0]["x"].tobytes() == np.array(array.tolist()).tobytes()
    # the dtype is known only now: an int32 signature still gets TF Serving's type error
    assert error(body, {"x": T.DT_INT32}).message.endswith("is not of expected type: int32")
    two = {"x": T.DT_FLOAT, "y": T.DT_FLOAT}
    assert error(body, two).message.startswith("instances is a plain list")
    # messages that print the document print the tensor's text
    both = b'{"inputs": [1], "instances": ' + body[len(b'{"instances": ') :]
    assert "Not formatted correctly expecting only one" in error(both).message
    assert error(both).message.startswith("JSON Value: {")


def test_instances_deeper_than_numpy_allows_is_invalid_argument() -> None:
    body = b'{"instances": ' + b"[" * 65 + b"2.5" + b"]" * 65 + b"}"
    e = error(body)
    assert e.code == Code.INVALID_ARGUMENT and "nests lists 65 levels deep" in e.message
    ok = b'{"instances": ' + b"[" * 64 + b"2.5" + b"]" * 64 + b"}"
    assert inputs(ok, {"x": T.DT_FLOAT})[0]["x"].ndim == 64
