"""V2 over gRPC: `ModelInferRequest` bytes ⇄ `InferRequest`, `InferResponse` ⇄ `ModelInferResponse`
bytes, and the metadata messages.

A request sends each input either in typed `contents` (the repeated field of its datatype) or, for
every input at once, in `raw_input_contents` (the binary form; FP16 and BF16 only this way). The
answer uses raw contents when the request did, or when an output is FP16/BF16; else typed contents.
Large typed fields are written as packed wire bytes made with numpy and merged into the message,
not value by value through the protobuf API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sigserve.codec.tensor import _varints, varint_bytes
from sigserve.codec.v2 import datatypes, tensors
from sigserve.codec.v2.datatypes import BOOL, BYTES
from sigserve.codec.v2.metadata import ModelMetadata
from sigserve.codec.v2.request import (
    InferInput,
    InferRequest,
    InferResponse,
    Parameters,
    RequestedOutput,
)
from sigserve.codec.v2.tensors import invalid
from sigserve.errors import Code, SigserveError
from sigserve.protos import open_inference_pb2 as pb

# datatype -> (InferTensorContents field, field number, wire kind)
_CONTENTS: dict[str, tuple[str, int, str]] = {
    BOOL: ("bool_contents", 1, "varint"),
    "INT8": ("int_contents", 2, "varint"),
    "INT16": ("int_contents", 2, "varint"),
    "INT32": ("int_contents", 2, "varint"),
    "INT64": ("int64_contents", 3, "varint"),
    "UINT8": ("uint_contents", 4, "varint"),
    "UINT16": ("uint_contents", 4, "varint"),
    "UINT32": ("uint_contents", 4, "varint"),
    "UINT64": ("uint64_contents", 5, "varint"),
    "FP32": ("fp32_contents", 6, "fixed"),
    "FP64": ("fp64_contents", 7, "fixed"),
    BYTES: ("bytes_contents", 8, "bytes"),
}
_RAW_ONLY = frozenset({"FP16", "BF16"})


def parse_message(message: Any, data: bytes, what: str) -> Any:
    try:
        message.ParseFromString(data)
    except Exception:  # protobuf's DecodeError, or a RecursionError on absurd nesting
        raise invalid(f"the {what} is not a valid protocol buffer") from None
    return message


def parameters(entries: Any) -> Parameters:
    """A map<string, InferParameter> as plain values (unset entries left out)."""
    out: Parameters = {}
    for key, value in entries.items():
        kind = value.WhichOneof("parameter_choice")
        if kind is not None:
            out[key] = getattr(value, kind)
    return out


def set_parameters(entries: Any, values: Parameters) -> None:
    for key, value in values.items():
        if isinstance(value, bool):
            entries[key].bool_param = value
        elif isinstance(value, int):
            entries[key].int64_param = value
        elif isinstance(value, float):
            entries[key].double_param = value
        else:
            entries[key].string_param = value


def parse_infer(data: bytes) -> InferRequest:
    """An inference request from ModelInferRequest bytes."""
    message = parse_message(pb.ModelInferRequest(), data, "ModelInferRequest")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise invalid(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs; send one per "
            "input, in input order"
        )
    inputs: list[InferInput] = []
    for index, tensor in enumerate(message.inputs):
        what = f"input '{tensor.name}'"
        datatype = datatypes.check(tensor.datatype)
        shape = tensors.check_shape(tensor.shape, what)
        if raw:
            if tensor.HasField("contents"):
                raise invalid(f"{what} has typed contents in a request that uses raw_input_contents")
            array = tensors.from_binary(raw[index], datatype, shape, what)
        else:
            array = _from_contents(tensor.contents, datatype, shape, what)
        inputs.append(InferInput(tensor.name, datatype, shape, array, parameters(tensor.parameters)))
    outputs = [RequestedOutput(o.name, parameters(o.parameters)) for o in message.outputs]
    return InferRequest(
        inputs=inputs,
        outputs=outputs,
        id=message.id,
        parameters=parameters(message.parameters),
        model_name=message.model_name,
        model_version=message.model_version,
        raw=bool(raw),
    )


def _from_contents(contents: Any, datatype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    if datatype in _RAW_ONLY:
        raise invalid(f"{what}: {datatype} has no typed contents field; send it in raw_input_contents")
    field, _, kind = _CONTENTS[datatype]
    for descriptor, _value in contents.ListFields():
        if descriptor.name != field:
            raise invalid(f"{what} is {datatype}, whose values go in {field}, not {descriptor.name}")
    values = getattr(contents, field)
    n = tensors.element_count(shape)
    if len(values) != n:
        raise invalid(f"{what}: the shape holds {n} elements, but {field} has {len(values)}")
    if kind == "bytes":
        array = np.empty(n, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    native = np.array(values)  # a repeated scalar field exposes a buffer: one memcpy
    target = datatypes.numpy_dtype(datatype)
    if native.dtype != target:
        if native.size and datatype in ("INT8", "INT16", "UINT8", "UINT16"):
            info = np.iinfo(target)
            if int(native.min()) < info.min or int(native.max()) > info.max:
                raise invalid(f"{what}: a value in {field} is outside the range of {datatype}")
        native = native.astype(target) if native.size else np.zeros(0, dtype=target)
    return native.reshape(shape)


def encode_infer(response: InferResponse, raw: bool) -> bytes:
    """ModelInferResponse bytes: raw contents when `raw` or when an output is FP16/BF16."""
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    set_parameters(message.parameters, response.parameters)
    raw = raw or any(o.datatype in _RAW_ONLY for o in response.outputs)
    for output in response.outputs:
        tensor = message.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        what = f"output '{output.name}'"
        if raw:
            blob = tensors.to_binary(output.array, output.datatype, what)
            message.raw_output_contents.append(blob if isinstance(blob, bytes) else blob.tobytes())
        else:
            _to_contents(tensor.contents, output.array, output.datatype, what)
    return message.SerializeToString()


def _to_contents(contents: Any, array: np.ndarray, datatype: str, what: str) -> None:
    field, number, kind = _CONTENTS[datatype]
    flat = array.reshape(-1)
    if kind == "bytes":
        getattr(contents, field).extend(tensors.bytes_elements(flat, what))
        return
    if not flat.size:
        return
    if kind == "fixed":
        payload = np.ascontiguousarray(flat, dtype=datatypes.wire_dtype(datatype)).tobytes()
    elif flat.dtype == np.bool_ or flat.dtype.kind == "u":
        payload = _varints(flat.astype(np.uint64))
    else:  # negative ints are sign-extended to 64 bits on the wire, int32 fields included
        payload = _varints(flat.astype(np.int64).view(np.uint64))
    contents.MergeFromString(varint_bytes((number << 3) | 2) + varint_bytes(len(payload)) + payload)


def model_name_of(data: bytes) -> str:
    """The model name of a request that failed before it was resolved (field 1 of ModelInferRequest,
    ModelReadyRequest and ModelMetadataRequest alike), for metrics; "" if unreadable."""
    try:
        return str(pb.ModelReadyRequest.FromString(data).name)
    except Exception:
        return ""


def parse_model_request(data: bytes, kind: str) -> tuple[str, str]:
    """(name, version) of a ModelReadyRequest or ModelMetadataRequest (same fields)."""
    message = parse_message(pb.ModelReadyRequest(), data, f"{kind}Request")
    if not message.name:
        raise SigserveError(Code.INVALID_ARGUMENT, f"{kind}Request needs a model name")
    return message.name, message.version


def encode_model_metadata(meta: ModelMetadata) -> bytes:
    message = pb.ModelMetadataResponse(name=meta.name, versions=meta.versions, platform=meta.platform)
    for source, target in ((meta.inputs, message.inputs), (meta.outputs, message.outputs)):
        for t in source:
            target.add(name=t.name, datatype=t.datatype, shape=t.shape)
    message.properties.update(meta.parameters)
    return message.SerializeToString()


def encode_server_metadata(name: str, version: str, extensions: Sequence[str]) -> bytes:
    return pb.ServerMetadataResponse(name=name, version=version, extensions=extensions).SerializeToString()


def encode_live(live: bool) -> bytes:
    return pb.ServerLiveResponse(live=live).SerializeToString()


def encode_ready(ready: bool) -> bytes:
    return pb.ServerReadyResponse(ready=ready).SerializeToString()


def encode_model_ready(ready: bool) -> bytes:
    return pb.ModelReadyResponse(ready=ready).SerializeToString()
