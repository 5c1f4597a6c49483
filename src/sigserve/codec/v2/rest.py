"""V2 over REST: the inference request body (JSON, or JSON followed by binary tensor data) ⇄
`InferRequest` / `InferResponse`, and the JSON of the metadata and health answers.

The binary tensor data extension (Triton's `extension_binary_data.md`): the HTTP header
`Inference-Header-Content-Length` gives the JSON's length; each input with the parameter
`binary_data_size` takes that many bytes, in input order, from what follows the JSON, and together
they must use it exactly. Outputs go back the same way when asked (`binary_data` on an output,
`binary_data_output` on the request), and the answer then carries the header too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from sigserve.codec._jsonparse import loads
from sigserve.codec.v2 import datatypes, tensors
from sigserve.codec.v2.metadata import ModelMetadata
from sigserve.codec.v2.request import (
    BINARY_DATA_SIZE,
    InferInput,
    InferRequest,
    InferResponse,
    Parameters,
    RequestedOutput,
    int_parameter,
)
from sigserve.codec.v2.tensors import brief, invalid

HEADER_LENGTH = "inference-header-content-length"  # HTTP header names are case-insensitive
# JSON up to this size is parsed by orjson (a 1-row request in ~2 µs, where the tokenizer below takes
# ~60 µs); larger documents, and any that orjson refuses (NaN tokens, deep nesting, trailing bytes),
# go to sigserve's parser, which hands large numeric arrays to numpy in one piece and words errors.
_SMALL_JSON = 4096


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"{what} must be a JSON object, not {brief(value)}")
    return value


def _string(doc: dict[str, Any], key: str, what: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise invalid(f"{what}: '{key}' must be a string, not {brief(value)}")
    return value


def _parameters(doc: dict[str, Any], what: str) -> Parameters:
    value = doc.get("parameters")
    if value is None:
        return {}
    params = _object(value, f"{what}'parameters'")
    for key, item in params.items():
        if not isinstance(item, (str, int, float, bool)):
            raise invalid(f"{what}parameter '{key}' must be a string, number or boolean, not {brief(item)}")
    return params


def _header_length(header: str | bytes | None, size: int) -> int | None:
    if header is None:
        return None
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > size:
        raise invalid(
            f"Inference-Header-Content-Length must be the length of the JSON part of the body, "
            f"0 to {size}, not {text[:40]!r}"
        )
    return int(text)


def _loads(data: bytes) -> Any:
    if len(data) <= _SMALL_JSON:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return loads(data)


def parse_infer(
    body: bytes, header_length: str | bytes | None, model_name: str = "", model_version: str = ""
) -> InferRequest:
    """An inference request from its REST body and `Inference-Header-Content-Length` (None when the
    header is absent: the whole body is JSON)."""
    length = _header_length(header_length, len(body))
    view = memoryview(body)
    json_part = view if length is None else view[:length]
    doc = _object(_loads(bytes(json_part)) if len(json_part) else None, "The inference request")
    binary = view[len(json_part) :]
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise invalid(f"'id' must be a string, not {brief(request_id)}")
    parameters = _parameters(doc, "")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list):
        raise invalid(
            "The inference request needs 'inputs', a list such as "
            '[{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]'
        )
    inputs: list[InferInput] = []
    offset = 0
    for index, raw in enumerate(raw_inputs):
        item, offset = _input(raw, index, binary, offset, length is not None)
        inputs.append(item)
    if offset != len(binary):
        raise invalid(
            f"The body has {len(binary)} bytes after its JSON header, but the inputs' binary_data_size "
            f"parameters add up to {offset}"
        )
    outputs = _outputs(doc.get("outputs"))
    return InferRequest(
        inputs=inputs,
        outputs=outputs,
        id=request_id,
        parameters=parameters,
        model_name=model_name,
        model_version=model_version,
    )


def _input(raw: Any, index: int, binary: memoryview, offset: int, framed: bool) -> tuple[InferInput, int]:
    doc = _object(raw, f"inputs[{index}]")
    name = _string(doc, "name", f"inputs[{index}]")
    what = f"input '{name}'"
    datatype = datatypes.check(_string(doc, "datatype", what))
    if "shape" not in doc:
        raise invalid(f"{what}: 'shape' is missing; give the tensor's dimensions, e.g. [1, 3]")
    shape = tensors.check_shape(doc["shape"], what)
    parameters = _parameters(doc, f"{what}: ")
    size = int_parameter(parameters, BINARY_DATA_SIZE, f"{what}: ", 0)
    if size is None:
        if "data" not in doc:
            raise invalid(f"{what} has neither 'data' nor a binary_data_size parameter")
        array = tensors.from_json(doc["data"], datatype, shape, what)
        return InferInput(name, datatype, shape, array, parameters), offset
    if not framed:
        raise invalid(
            f"{what} has binary data (binary_data_size {size}) but the request has no "
            "Inference-Header-Content-Length header giving the length of its JSON part"
        )
    if "data" in doc:
        raise invalid(f"{what} has both 'data' and binary data; send one")
    if size > len(binary) - offset:
        raise invalid(
            f"{what}: binary_data_size {size} runs past the end of the body "
            f"({len(binary) - offset} bytes of binary data are left)"
        )
    array = tensors.from_binary(binary[offset : offset + size], datatype, shape, what)
    return InferInput(name, datatype, shape, array, parameters), offset + size


def _outputs(value: Any) -> list[RequestedOutput]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f'\'outputs\' must be a list such as [{{"name": "y"}}], not {brief(value)}')
    outputs: list[RequestedOutput] = []
    for index, raw in enumerate(value):
        doc = _object(raw, f"outputs[{index}]")
        name = _string(doc, "name", f"outputs[{index}]")
        outputs.append(RequestedOutput(name, _parameters(doc, f"output '{name}': ")))
    return outputs


def _text(value: str) -> bytes:
    return orjson.dumps(value)


def encode_infer(response: InferResponse) -> tuple[list[bytes | Any], int | None]:
    """The answer's body as buffers to send in order, and the JSON header's length when binary
    data follows it (for `Inference-Header-Content-Length`), else None."""
    parts = [b'{"model_name":', _text(response.model_name)]
    if response.model_version:
        parts += [b',"model_version":', _text(response.model_version)]
    if response.id:
        parts += [b',"id":', _text(response.id)]
    if response.parameters:
        parts += [b',"parameters":', orjson.dumps(response.parameters)]
    parts.append(b',"outputs":[')
    blobs: list[Any] = []
    for i, output in enumerate(response.outputs):
        what = f"output '{output.name}'"
        head = (
            (b"," if i else b"")
            + b'{"name":'
            + _text(output.name)
            + b',"datatype":"'
            + output.datatype.encode()
            + b'","shape":'
            + orjson.dumps(list(output.shape))
        )
        if output.binary:
            blob = tensors.to_binary(output.array, output.datatype, what)
            blobs.append(blob)
            parts += [head, b',"parameters":{"binary_data_size":', str(len(blob)).encode(), b"}}"]
        else:
            parts += [head, b',"data":', tensors.to_json(output.array, output.datatype, what), b"}"]
    parts.append(b"]}")
    if not blobs:
        return [b"".join(parts)], None
    header = b"".join(parts)
    return [header, *blobs], len(header)


def encode_server_metadata(name: str, version: str, extensions: Sequence[str]) -> bytes:
    return orjson.dumps({"name": name, "version": version, "extensions": list(extensions)})


def encode_model_metadata(meta: ModelMetadata) -> bytes:
    def tensor(t: Any) -> dict[str, Any]:
        return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}

    doc: dict[str, Any] = {"name": meta.name, "versions": list(meta.versions), "platform": meta.platform}
    doc["inputs"] = [tensor(t) for t in meta.inputs]
    doc["outputs"] = [tensor(t) for t in meta.outputs]
    if meta.parameters:
        doc["parameters"] = dict(meta.parameters)
    return orjson.dumps(doc)
