"""What a hostile JSON body may cost the REST and V2 codecs (issue 20 item 6).

* Nesting deeper than `max_depth` is refused, with the offset of the first bracket too deep, on
  every path the parser has (token by token, orjson's one-piece arrays, simdjson's tensors), and
  before the document costs time or memory: checked against a reference that counts brackets.
* Integer literals of any length give TF Serving's parse error, never Python's 4,300-digit
  `ValueError` (which the front ends answered with 500).
* A `deadline` callable is consulted while long bodies are decoded and answers are encoded, and its
  exception ends the work.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sigserve.codec import DEFAULT_MAX_JSON_DEPTH, _jsonnum
from sigserve.codec import json as cj
from sigserve.codec._jsonparse import DEADLINE_STRIDE, loads
from sigserve.codec.v2 import rest as v2rest
from sigserve.errors import Code, SigserveError
from sigserve.protos import types_pb2 as T


def first_too_deep(text: bytes, max_depth: int) -> int | None:
    """Reference: the offset of the first '[' or '{' outside strings that opens level max_depth + 1."""
    depth = 0
    in_string = escaped = False
    for i, c in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:
                escaped = True
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in b"[{":
            depth += 1
            if depth > max_depth:
                return i
        elif c in b"]}":
            depth -= 1
    return None


def depth_error(text: bytes, max_depth: int, tensors: bool = False) -> SigserveError | None:
    try:
        loads(text, tensors, max_depth=max_depth)
    except SigserveError as e:
        return e
    return None


def assert_refused_at(text: bytes, max_depth: int, tensors: bool = False) -> None:
    expected = first_too_deep(text, max_depth)
    e = depth_error(text, max_depth, tensors)
    if expected is None:
        assert e is None, e
        return
    assert e is not None and e.code == Code.INVALID_ARGUMENT
    assert f"more than {max_depth} levels deep" in e.message, e.message
    assert "--max_request_json_depth" in e.message
    assert e.message.endswith(f"at offset: {expected}"), (e.message, expected)


# -- nesting depth --------------------------------------------------------------------------------------

scalars = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(alphabet='a[]{}\\"', max_size=4),  # brackets inside strings must not count
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text("kx[", max_size=2), inner, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None, database=None)
@given(doc=documents, max_depth=st.integers(1, 12), spaced=st.booleans())
def test_depth_limit_matches_a_bracket_counting_reference(doc: Any, max_depth: int, spaced: bool) -> None:
    text = json.dumps(doc, indent=1 if spaced else None).encode()
    assert_refused_at(text, max_depth)
    if first_too_deep(text, max_depth) is None:
        assert loads(text, max_depth=max_depth) == json.loads(text)


@settings(max_examples=60, deadline=None, database=None)
@given(
    array=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=5, min_side=1, max_side=7)),
    max_depth=st.integers(1, 8),
)
def test_depth_limit_on_one_piece_tensors(array: np.ndarray, max_depth: int) -> None:
    """Large numeric tensors take orjson's or simdjson's path: the limit is the same there."""
    text = b'{"instances": ' + json.dumps(np.nan_to_num(array).tolist()).encode() + b"}"
    assert_refused_at(text, max_depth, tensors=True)


@pytest.mark.skipif(not _jsonnum.available(), reason="pysimdjson is not installed")
def test_depth_limit_on_a_simdjson_tensor() -> None:
    rank4 = np.arange(4 * 8 * 8 * 8, dtype=np.float64).reshape(4, 8, 8, 8) + 0.5
    text = b'{"inputs": ' + json.dumps(rank4.tolist()).encode() + b"}"
    assert len(text) > _jsonnum.MIN_BYTES
    assert isinstance(loads(text, True, max_depth=5)["inputs"], _jsonnum.Numbers)
    assert_refused_at(text, 4, tensors=True)


@pytest.mark.parametrize(
    "region",
    [
        b"[1, " + b"[" * 150 + b"2" + b"]" * 150 + b"]",  # deep in a later element
        b"[" + b"[1]," * 500 + b"[" * 120 + b"]" * 121,  # after many shallow rows
        b"[" + b"[1," * 120 + b"1" + b"]" * 120 + b"]",  # one more level per element
        b"[ " * 150 + b"1" + b" ]" * 150,  # spaced, so not a plain run of brackets
    ],
    ids=["later-element", "after-rows", "interleaved", "spaced"],
)
def test_deep_numeric_arrays_are_refused_at_the_first_bracket_too_deep(region: bytes) -> None:
    for text in (b'{"instances": ' + region + b"}", b'{"inputs": {"x": ' + region + b"}}", region):
        for tensors in (False, True):
            assert_refused_at(text, DEFAULT_MAX_JSON_DEPTH, tensors)


def test_every_tensor_numpy_can_hold_fits_the_default() -> None:
    """numpy's 64 dimensions, in the deepest envelope: row format, named inputs, a b64 leaf."""
    tensor = b"[" * 63 + b'{"b64": "YQ=="}' + b"]" * 63
    body = b'{"instances": [{"x": ' + tensor + b"}]}"
    assert first_too_deep(body, DEFAULT_MAX_JSON_DEPTH) is None
    out, row = cj.parse_predict(body).to_inputs({"x": T.DT_STRING})
    assert row and out["x"].ndim == 64


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": ' + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}",
        b'{"instances": [' + b"[1," * 1_000_000 + b"1" + b"]" * 1_000_001 + b"}",
        b'{"instances": ' + b"[ " * 1_000_000,
        b'{"a":' * 1_000_000,
        b'{"inputs": [{"name": "x", "data": ' + b"[" * 1_000_000,
    ],
    ids=["plain", "interleaved", "spaced-open", "objects", "v2-data"],
)
def test_deep_bodies_are_refused_fast_and_small(body: bytes) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(SigserveError) as e:
            if body.startswith(b'{"inputs": [{"name"'):
                v2rest.parse_infer(body, None)
            else:
                cj.parse_predict(body)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "more than 100 levels deep" in e.value.message
    assert elapsed < 0.5, elapsed  # the unbounded parser took ~1.2 s and 150 MB for 1,000,000 levels
    assert peak < 4 * 1024 * 1024, peak  # a window of the body at most, never a list per level


def test_v2_small_documents_deeper_than_the_limit_are_refused_too() -> None:
    """orjson (taken for small V2 documents) nests 1024 deep: the limit still applies."""
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ' + b"[" * 200
    body += b"1" + b"]" * 200 + b"}]}"
    with pytest.raises(SigserveError) as e:
        v2rest.parse_infer(body, None)
    assert e.value.message.endswith(f"at offset: {first_too_deep(body, DEFAULT_MAX_JSON_DEPTH)}")
    shallow = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [[1]]}]}'
    # object, inputs list, input object, two levels of data
    assert v2rest.parse_infer(shallow, None, max_depth=5).inputs[0].array.tolist() == [[1.0]]
    with pytest.raises(SigserveError):
        v2rest.parse_infer(shallow, None, max_depth=4)


# -- integer literals of any length ----------------------------------------------------------------------

LONG = b"9" * 5000  # beyond Python's 4,300-digit limit on int()


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [' + LONG + b"]}",
        b'{"instances": [[1, 2], [3, -' + LONG + b"]]}",
        b'{"inputs": ' + LONG + b"}",
        b'{"inputs": {"x": [1.5, ' + LONG + b"]}}",
        b'{"signature_name": "s", "instances": [{"x": "a", "y": ' + LONG + b"}]}",
    ],
)
def test_long_integer_literals_in_predict_are_tf_servings_parse_error(body: bytes) -> None:
    with pytest.raises(SigserveError) as e:
        cj.parse_predict(body).to_inputs({"x": T.DT_INT64})
    offset = body.index(LONG) - (body[body.index(LONG) - 1] == 0x2D)
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message == f"JSON Parse error: Number too big to be stored in double. at offset: {offset}"


@pytest.mark.parametrize(
    "body",
    [
        b'{"examples": [{"x": ' + LONG + b"}]}",
        b'{"context": {"c": [-' + LONG + b'] }, "examples": [{"x": 1}]}',
    ],
)
def test_long_integer_literals_in_examples_are_tf_servings_parse_error(body: bytes) -> None:
    with pytest.raises(SigserveError) as e:
        cj.parse_examples(body, "classify")
    assert e.value.code == Code.INVALID_ARGUMENT
    assert "JSON Parse error: Number too big to be stored in double. at offset: " in e.value.message


def test_long_integer_literals_in_v2_data() -> None:
    for data in (LONG, b"[1, " + LONG + b"]", b"[[-" + LONG + b"]]"):
        body = b'{"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": ' + data + b"}]}"
        with pytest.raises(SigserveError) as e:
            v2rest.parse_infer(body, None)
        assert e.value.code == Code.INVALID_ARGUMENT
        assert "Number too big to be stored in double" in e.value.message


def test_integers_beyond_64_bits_but_within_a_double_are_numbers() -> None:
    """rapidjson reads them as doubles: a type error for integer tensors, a value for floats."""
    for digits in (21, 309):
        literal = "1" + "0" * (digits - 1)
        with pytest.raises(SigserveError) as e:
            cj.parse_predict(f'{{"inputs": [{literal}]}}'.encode()).to_inputs({"x": T.DT_INT64})
        expected = f"JSON Value: {float(literal):g} Type: Number is not of expected type: int64"
        assert e.value.message == expected
        out, _ = cj.parse_predict(f'{{"inputs": [{literal}]}}'.encode()).to_inputs({"x": T.DT_DOUBLE})
        assert out["x"].tolist() == [float(literal)]


# -- deadlines -------------------------------------------------------------------------------------------


class Deadline:
    """A deadline that has passed after `allowed` looks at the clock."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls > self.allowed:
            raise SigserveError(Code.DEADLINE_EXCEEDED, "too late")


N = 20 * DEADLINE_STRIDE
STRINGS = b'{"instances": [' + b",".join([b'"ab"'] * N) + b"]}"


def test_parse_looks_at_the_deadline_and_stops() -> None:
    clock = Deadline(10**9)
    body = cj.parse_predict(STRINGS, deadline=clock)
    assert clock.calls >= N // DEADLINE_STRIDE - 1  # about once per DEADLINE_STRIDE values
    body.to_inputs({"x": T.DT_STRING})
    assert clock.calls >= 2 * (N // DEADLINE_STRIDE) - 2

    late = Deadline(2)
    with pytest.raises(SigserveError) as e:
        cj.parse_predict(STRINGS, deadline=late)
    assert e.value.code == Code.DEADLINE_EXCEEDED and late.calls == 3


@pytest.mark.parametrize("body", [STRINGS, b'{"inputs": ' + STRINGS[len(b'{"instances": ') :]])
def test_building_tensors_stops_at_the_deadline(body: bytes) -> None:
    parsed = cj.parse_predict(body, deadline=Deadline(10**9))
    parsed.deadline = late = Deadline(1)
    with pytest.raises(SigserveError) as e:
        parsed.to_inputs({"x": T.DT_STRING})
    assert e.value.code == Code.DEADLINE_EXCEEDED and late.calls == 2


def test_encoding_string_outputs_stops_at_the_deadline() -> None:
    strings = np.array([b"ab"] * (4 * 65536), dtype=object)
    for row in (True, False):
        late = Deadline(1)
        with pytest.raises(SigserveError):
            cj.encode_predict({"y": strings}, row, late)
        assert late.calls == 2
    rows = np.zeros((3 * DEADLINE_STRIDE, 1), dtype=np.float32)
    late = Deadline(1)
    with pytest.raises(SigserveError):
        cj.encode_predict({"y": strings[: len(rows)].reshape(-1, 1), "z": rows}, True, late)
    ok = Deadline(10**9)
    assert cj.encode_predict({"y": strings}, False, ok).startswith(b'{"outputs":["ab","ab"')


def test_examples_and_v2_stop_at_the_deadline() -> None:
    examples = b'{"examples": [' + b",".join([b'{"x": [1, 2]}'] * N) + b"]}"
    late = Deadline(25)
    with pytest.raises(SigserveError) as e:
        cj.parse_examples(examples, "classify", deadline=late)
    assert e.value.code == Code.DEADLINE_EXCEEDED
    data = b",".join([b'"ab"'] * N)
    v2 = b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [%d], "data": [%s]}]}' % (N, data)
    for allowed in (5, 25, 45):  # while parsing, while collecting the leaves, while converting them
        late = Deadline(allowed)
        with pytest.raises(SigserveError) as e:
            v2rest.parse_infer(v2, None, deadline=late)
        assert e.value.code == Code.DEADLINE_EXCEEDED
    assert len(v2rest.parse_infer(v2, None, deadline=Deadline(10**9)).inputs[0].array) == N
