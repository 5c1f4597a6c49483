"""One served call, as the request path hands it to the request logger, and the two record formats
built from it in the logger's writer thread (never on the request path).

A `Call` (the service's `AnsweredCall`) holds what the service already has once a call has been
answered: the model spec as requested, the version and signature that served it, and the request
and response in decoded form (numpy tensors for Predict, protos for the tf.Example APIs). It may
also hold a request or response as the serialized message that came off (or goes onto) the wire;
such bytes are logged as they are.

Records:
- `prediction_log(call, ...)`: TF Serving's `PredictionLog` (predict_log / classify_log / regress_log /
  multi_inference_log), the record type of its request logs and of `tf_serving_warmup_requests`.
- `json_line(call)`: one JSON object with the request and response as the REST API writes them, so
  `jq '.request'` is a body that `curl -d` can send again (`codec/json_records.py`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import orjson

from sigserve.codec.tensor import varint_bytes
from sigserve.protos import logging_pb2, model_pb2, prediction_log_pb2
from sigserve.service.calls import AnsweredCall

PREDICT = "predict"
CLASSIFY = "classify"
REGRESS = "regress"
MULTI_INFERENCE = "multi_inference"
APIS = (PREDICT, CLASSIFY, REGRESS, MULTI_INFERENCE)


Call = AnsweredCall
"""What the service hands its observer for each answered call (`sigserve.service.AnsweredCall`)."""


def approximate_bytes(call: Call) -> int:
    """What holding `call` in the queue costs, roughly (tensor bytes, proto sizes)."""
    return _size(call.request) + _size(call.response)


def _size(value: Any) -> int:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if isinstance(value, Mapping):
        total = 0
        for array in value.values():
            total += int(getattr(array, "nbytes", 64))
            if getattr(getattr(array, "dtype", None), "kind", "") == "O":
                total += sum(len(v) for v in array.reshape(-1).tolist() if isinstance(v, bytes))
        return total
    byte_size = getattr(value, "ByteSize", None)
    return int(byte_size()) if byte_size is not None else 64


# -- PredictionLog ---------------------------------------------------------------------------------


def _requested_spec(out: model_pb2.ModelSpec, call: Call) -> None:
    out.name = call.model
    if call.requested_version is not None:
        out.version.value = call.requested_version
    elif call.requested_label is not None:
        out.version_label = call.requested_label
    if call.requested_signature:
        out.signature_name = call.requested_signature


def _served_spec(out: model_pb2.ModelSpec, call: Call) -> None:
    out.name = call.model
    out.version.value = call.version
    out.signature_name = call.signature


def _tensors(out: Any, tensors: Mapping[str, Any]) -> None:
    from sigserve.codec.tensor import from_ndarray

    for alias, array in tensors.items():
        out[alias].CopyFrom(from_ndarray(array, tensor_content=True))


def prediction_log(call: Call, metadata: logging_pb2.LogMetadata) -> prediction_log_pb2.PredictionLog:
    """The PredictionLog of `call`; `metadata` carries what is per model (sampling config, tags)."""
    log = prediction_log_pb2.PredictionLog()
    log.log_metadata.CopyFrom(metadata)
    _served_spec(log.log_metadata.model_spec, call)
    log.log_metadata.timestamp_secs = int(call.time)
    if call.api == PREDICT:
        entry: Any = log.predict_log
        if isinstance(call.request, bytes):
            entry.request.MergeFromString(call.request)
        else:
            _requested_spec(entry.request.model_spec, call)
            _tensors(entry.request.inputs, call.request)
            entry.request.output_filter.extend(call.output_filter)
        if isinstance(call.response, bytes):
            entry.response.MergeFromString(call.response)
        else:
            _served_spec(entry.response.model_spec, call)
            _tensors(entry.response.outputs, call.response)
    elif call.api in (CLASSIFY, REGRESS):
        entry = log.classify_log if call.api == CLASSIFY else log.regress_log
        if isinstance(call.request, bytes):
            entry.request.MergeFromString(call.request)
        else:
            _requested_spec(entry.request.model_spec, call)
            entry.request.input.CopyFrom(call.request)
        if isinstance(call.response, bytes):
            entry.response.MergeFromString(call.response)
        else:
            _served_spec(entry.response.model_spec, call)
            entry.response.result.CopyFrom(call.response)
    elif call.api == MULTI_INFERENCE:
        entry = log.multi_inference_log
        for target, value in ((entry.request, call.request), (entry.response, call.response)):
            if isinstance(value, bytes):
                target.MergeFromString(value)
            else:
                target.CopyFrom(value)
    else:
        raise ValueError(f"not a logged API: {call.api!r}")
    return log


# -- PredictionLog bytes, written directly -----------------------------------------------------------
# A logged 1-row Predict costs ~25 µs to build as messages (TensorProtos, map entries, CopyFrom) and
# ~4 µs written field by field; at sampling 1.0 that difference is most of what logging costs. Only
# the common case is written this way (a Predict with numeric tensors in decoded form); everything
# else goes through `prediction_log`, and a test holds the two to the same message.


_SMALL = [bytes([v]) for v in range(128)]


def _varint(value: int) -> bytes:
    return _SMALL[value] if value < 128 else varint_bytes(value)


def _field(number: int, payload: bytes) -> bytes:
    return _SMALL[(number << 3) | 2] + _varint(len(payload)) + payload


def _spec_bytes(name: str, version: int | None, label: str | None, signature: str) -> bytes:
    out = _field(1, name.encode("utf-8"))
    if version is not None:
        out += _field(2, b"\x08" + _varint(version))
    elif label is not None:
        out += _field(4, label.encode("utf-8"))
    if signature:
        out += _field(3, signature.encode("utf-8"))
    return out


_DATA_TYPES: dict[Any, int | None] = {}


def _data_type(dtype: Any) -> int | None:
    """The DataType a numeric numpy dtype is written as with tensor_content (None: not this way)."""
    dt = _DATA_TYPES.get(dtype, -1)
    if dt != -1:
        return dt
    from sigserve.codec import dtypes

    found: int | None = None
    if dtype.kind in "biuf" and dtype.byteorder != ">":
        try:
            found = dtypes.from_numpy_dtype(dtype)
        except Exception:
            found = None
        if found is not None and dtypes.to_numpy_dtype(found) != dtype:
            found = None
    _DATA_TYPES[dtype] = found
    return found


def _tensor_bytes(array: Any) -> bytes | None:
    """A numeric array as a serialized TensorProto (dtype, shape, tensor_content), or None."""
    dtype = getattr(array, "dtype", None)
    dt = _data_type(dtype) if dtype is not None else None
    if dt is None:
        return None
    out = b"\x08" + _varint(dt)
    if array.shape:
        out += _field(2, b"".join([_field(2, b"\x08" + _varint(d)) for d in array.shape]))
    if array.size:
        out += _field(4, array.tobytes())
    return out


# A map entry's bytes before its tensor_content depend only on (field, alias, dtype, shape): kept, so
# that a logged call's tensors cost a lookup and a `tobytes` each (the writer thread holds the GIL
# the event loop needs; bench/request_logging.py).
_ENTRY_PREFIXES: dict[tuple[int, str, Any, tuple[int, ...]], bytes | None] = {}
_MAX_CACHED = 4096
# (metadata, model spec as served and as requested) -> the record's fixed parts, for the same reason.
_SPECS: dict[tuple[Any, ...], tuple[bytes, bytes, bytes]] = {}


def _entry_prefix(number: int, alias: str, array: Any) -> bytes | None:
    """Everything of a map entry `alias: TensorProto(array)` but the tensor_content bytes, or None."""
    key = (number, alias, array.dtype, array.shape)
    prefix = _ENTRY_PREFIXES.get(key, b"")
    if prefix != b"":
        return prefix
    empty = _tensor_bytes(_EmptyLike(array))  # dtype and shape fields
    if empty is None:
        prefix = None
    else:
        value_head = empty
        value_length = len(empty)
        if array.size:
            value_head += _SMALL[(4 << 3) | 2] + _varint(array.nbytes)
            value_length = len(value_head) + array.nbytes
        entry_head = _field(1, alias.encode("utf-8")) + _SMALL[(2 << 3) | 2] + _varint(value_length)
        entry_length = len(entry_head) + value_length
        prefix = _SMALL[(number << 3) | 2] + _varint(entry_length) + entry_head + value_head
    if len(_ENTRY_PREFIXES) >= _MAX_CACHED:
        _ENTRY_PREFIXES.clear()
    _ENTRY_PREFIXES[key] = prefix
    return prefix


class _EmptyLike:
    """An array's dtype and shape with no elements: `_tensor_bytes` of it is the TensorProto less its
    tensor_content."""

    __slots__ = ("dtype", "shape", "size")

    def __init__(self, array: Any) -> None:
        self.dtype = array.dtype
        self.shape = array.shape
        self.size = 0


def _tensor_map(number: int, tensors: Mapping[str, Any]) -> bytes | None:
    parts = []
    for alias, array in tensors.items():
        if getattr(array, "dtype", None) is None:
            return None
        prefix = _entry_prefix(number, alias, array)
        if prefix is None:
            return None
        parts.append(prefix)
        if array.size:
            parts.append(array.tobytes())
    return b"".join(parts)


def prediction_log_bytes(call: Call, metadata: bytes) -> bytes:
    """`prediction_log(call, m).SerializeToString()` for `metadata == m.SerializeToString()`, written
    directly where it can be (see above)."""
    if call.api == PREDICT and isinstance(call.request, Mapping) and isinstance(call.response, Mapping):
        inputs = _tensor_map(2, call.request)
        outputs = _tensor_map(1, call.response)
        if inputs is not None and outputs is not None:
            key = (
                metadata,
                call.model,
                call.version,
                call.signature,
                call.requested_version,
                call.requested_label,
                call.requested_signature,
            )
            specs = _SPECS.get(key)
            if specs is None:
                served = _spec_bytes(call.model, call.version, None, call.signature)
                requested = _spec_bytes(
                    call.model, call.requested_version, call.requested_label, call.requested_signature
                )
                if len(_SPECS) >= _MAX_CACHED:
                    _SPECS.clear()
                specs = _SPECS[key] = (metadata + _field(1, served), _field(1, requested), _field(2, served))
            served_head, requested_field, served_field = specs
            request = requested_field + inputs
            if call.output_filter:
                request += b"".join(_field(3, o.encode()) for o in call.output_filter)
            head = served_head + b"\x20" + _varint(int(call.time))
            return _field(1, head) + _field(6, _field(1, request) + _field(2, outputs + served_field))
    log = logging_pb2.LogMetadata.FromString(metadata)
    return bytes(prediction_log(call, log).SerializeToString())


# -- JSON lines ------------------------------------------------------------------------------------


def _timestamp(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _decoded(call: Call) -> tuple[Any, Any]:
    """The request and response in decoded form (serialized messages are parsed here)."""
    if not isinstance(call.request, bytes) and not isinstance(call.response, bytes):
        return call.request, call.response
    from sigserve.codec.tensor import to_ndarray

    log = prediction_log(call, logging_pb2.LogMetadata())
    if call.api == PREDICT:
        request = {a: to_ndarray(t, a) for a, t in log.predict_log.request.inputs.items()}
        response = {a: to_ndarray(t, a) for a, t in log.predict_log.response.outputs.items()}
        return request, response
    if call.api in (CLASSIFY, REGRESS):
        entry: Any = log.classify_log if call.api == CLASSIFY else log.regress_log
        return entry.request.input, entry.response.result
    return log.multi_inference_log.request, log.multi_inference_log.response


def json_line(call: Call) -> bytes:
    """One line (with its newline): `time`, `model`, `version`, `signature`, `api`, the request's own
    `model_spec` choice when it made one, then `request` and `response` in REST form."""
    from sigserve.codec import json as codec_json
    from sigserve.codec import json_records

    head: dict[str, Any] = {
        "time": _timestamp(call.time),
        "model": call.model,
        "version": call.version,
        "signature": call.signature,
        "api": call.api,
    }
    if call.requested_version is not None:
        head["requested_version"] = call.requested_version
    elif call.requested_label is not None:
        head["requested_label"] = call.requested_label
    request, response = _decoded(call)
    signature = orjson.dumps(call.requested_signature) if call.requested_signature else b""
    prefix = b'{"signature_name":' + signature + b"," if signature else b"{"
    if call.api == PREDICT:
        body = prefix + b'"inputs":' + json_records.tensor_map_json(request)
        if call.output_filter:
            body += b',"output_filter":' + orjson.dumps(list(call.output_filter))
        request_json = body + b"}"
        response_json = b'{"outputs":' + json_records.tensor_map_json(response) + b"}"
    elif call.api in (CLASSIFY, REGRESS):
        request_json = prefix + json_records.input_json(request) + b"}"
        encode = codec_json.encode_classify if call.api == CLASSIFY else codec_json.encode_regress
        response_json = encode(response)
    else:
        from google.protobuf import json_format

        request_json = orjson.dumps(json_format.MessageToDict(request, preserving_proto_field_name=True))
        response_json = orjson.dumps(json_format.MessageToDict(response, preserving_proto_field_name=True))
    return orjson.dumps(head)[:-1] + b',"request":' + request_json + b',"response":' + response_json + b"}\n"
