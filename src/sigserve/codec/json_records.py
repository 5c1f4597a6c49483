"""Requests and responses as REST JSON *values*, for records that people read with `jq` and that must
read back to the same tensors (the JSON-lines request log).

The REST API's response writer follows TF Serving (string tensors written unvalidated, `b64` only
for `_bytes` names); a record cannot lose bytes, so here a string that is not valid UTF-8 is always
`{"b64": ...}`, which the REST parsers read back to the same bytes. Numbers are written as the REST
API writes them (shortest text that reads back to the same float32/float64; NaN/Infinity tokens).

Reading back is the REST API's own parsing (`read_record`, `predict_inputs`, `examples_input`): the
JSON dialect with NaN/Infinity tokens, the signature's dtypes for the tensors, tf.Example rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sigserve.codec import _jsonparse, _jsonwrite
from sigserve.codec import json as codec_json
from sigserve.errors import invalid_argument
from sigserve.protos import example_pb2, input_pb2


def _string(raw: bytes) -> bytes:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return _jsonwrite.b64_object(raw)
    return _jsonwrite.escape_string(raw)


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def tensor_json(array: np.ndarray, name: str) -> bytes:
    """One tensor as a nested JSON list (a bare value for rank 0)."""
    if array.dtype.kind == "O":
        flat = array.reshape(-1).tolist()
        return _jsonwrite.nest([_string(_as_bytes(v)) for v in flat], array.shape)
    return codec_json.encode_tensor(array, name)


def tensor_map_json(tensors: Mapping[str, Any]) -> bytes:
    """`{"alias": <tensor>, ...}` in alias order: the value of a columnar `"inputs"` / `"outputs"`."""
    parts = [
        _jsonwrite.escape_string(name.encode("utf-8")) + b":" + tensor_json(np.asarray(value), name)
        for name, value in sorted(tensors.items())
    ]
    return b"{" + b",".join(parts) + b"}"


def _feature_json(feature: Any) -> bytes:
    kind = feature.WhichOneof("kind")
    if kind == "bytes_list":
        values = [_string(v) for v in feature.bytes_list.value]
    elif kind == "float_list":
        values = [_jsonwrite.format_float(v, single=True).encode() for v in feature.float_list.value]
    elif kind == "int64_list":
        values = [str(v).encode() for v in feature.int64_list.value]
    else:
        values = []
    return b"[" + b",".join(values) + b"]"


def example_json(example: example_pb2.Example) -> bytes:
    """A tf.Example as the REST API's example object: `{"feature": [values...], ...}`."""
    features = example.features.feature
    parts = [
        _jsonwrite.escape_string(name.encode("utf-8")) + b":" + _feature_json(features[name])
        for name in sorted(features)
    ]
    return b"{" + b",".join(parts) + b"}"


def input_json(input: input_pb2.Input) -> bytes:
    """The members of a classify/regress body for `input`: `"examples":[...]` and, when the Input has
    one, `"context":{...}` (to be placed inside an object next to `"signature_name"`)."""
    kind = input.WhichOneof("kind")
    if kind == "example_list_with_context":
        with_context = input.example_list_with_context
        examples = b",".join(example_json(e) for e in with_context.examples)
        return b'"context":' + example_json(with_context.context) + b',"examples":[' + examples + b"]"
    examples = b",".join(example_json(e) for e in input.example_list.examples)
    return b'"examples":[' + examples + b"]"


# -- reading back ----------------------------------------------------------------------------------


def read_record(text: bytes) -> dict[str, Any]:
    """One record (a JSON object, NaN/Infinity allowed) as a dict; INVALID_ARGUMENT otherwise."""
    doc = _jsonparse.loads(text)
    if not isinstance(doc, dict):
        raise invalid_argument("A JSON-lines record must be a JSON object")
    return doc


def predict_inputs(request: dict[str, Any], input_dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """The tensors of a predict request object, typed by the signature's inputs (alias -> DataType)."""
    body = codec_json.PredictBody(signature_name=str(request.get("signature_name", "")), doc=request)
    return body.to_inputs(input_dtypes)[0]


def examples_input(request: dict[str, Any]) -> input_pb2.Input:
    """The Input of a classify/regress request object."""
    return codec_json.examples_from_doc(request).input
