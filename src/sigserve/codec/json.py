"""TF Serving's REST bodies ⇄ tensors (tfserving-api.md §1.7–1.9).

The REST front end calls `parse_predict(body)` first (JSON errors, top-level object,
`signature_name`), resolves the model and signature itself, then `PredictBody.to_inputs(dtypes)`
for everything that needs the signature, in TF Serving's order, so the first error reported is
TF Serving's first error.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sigserve.codec import _jsonwrite, dtypes
from sigserve.codec._jsonnum import Numbers
from sigserve.codec._jsonparse import NumList, loads
from sigserve.errors import Code, SigserveError
from sigserve.protos import classification_pb2, example_pb2, feature_pb2, input_pb2, regression_pb2
from sigserve.protos import types_pb2 as _T

__all__ = [
    "ExamplesBody",
    "PredictBody",
    "encode_classify",
    "encode_error",
    "encode_predict",
    "encode_regress",
    "encode_tensor",
    "parse_examples",
    "parse_predict",
    "value_to_string",
]

_TRUNCATE = 256
_MAX_RANK = 64  # numpy's limit (TensorFlow's is 254)
_INT32 = (-(1 << 31), (1 << 31) - 1)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT32 = (0, (1 << 32) - 1)
_UINT64 = (0, (1 << 64) - 1)
_INT_RANGES: dict[int, tuple[int, int]] = {
    _T.DT_INT32: _INT32,
    _T.DT_INT16: _INT32,
    _T.DT_INT8: _INT32,
    _T.DT_UINT8: _INT32,
    _T.DT_INT64: _INT64,
    _T.DT_UINT32: _UINT32,
    _T.DT_UINT64: _UINT64,
}
_FLOATS = (_T.DT_FLOAT, _T.DT_DOUBLE)


def _invalid(message: str) -> SigserveError:
    return SigserveError(Code.INVALID_ARGUMENT, message)


# -- printing JSON values in messages ----------------------------------------------------------------


def type_name(value: Any) -> str:
    """rapidjson's type names, as TF Serving prints them."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _scalar_text(value: Any, top: bool) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _jsonwrite.escape_string(value.encode("utf-8")).decode("utf-8")
    if isinstance(value, int):
        return str(value)
    with np.errstate(over="ignore"):  # a double beyond float32's range is simply not a float32
        single = math.isnan(value) or float(np.float32(value)) == value
    if top and single:
        return _jsonwrite.format_float(value, single=True)
    if top or not math.isfinite(value):
        return _jsonwrite.format_float(value, single=False)
    return repr(value)


def value_to_string(value: Any, limit: int = _TRUNCATE) -> str:
    """rapidjson's pretty form (objects indented by 4, arrays on one line), cut after `limit` chars.

    Iterative and bounded by `limit`, so a 500,000-deep or 100 MB value costs nothing to print.
    """
    value = _plain(value)
    out: list[str] = []
    size = 0
    # stack of (iterator, is_object, indent, first)
    if not isinstance(value, (list, dict)):
        return _scalar_text(value, top=True)
    stack: list[list[Any]] = []

    def emit(text: str) -> bool:
        nonlocal size
        out.append(text)
        size += len(text)
        return size <= limit

    def open_container(v: Any, indent: int) -> bool:
        if isinstance(v, dict):
            if not v:
                return emit("{}")
            stack.append([iter(v.items()), True, indent, True])
            return emit("{")
        if not v:
            return emit("[]")
        stack.append([iter(v), False, indent, True])
        return emit("[")

    ok = open_container(value, 0)
    while stack and ok:
        frame = stack[-1]
        it, is_object, indent, first = frame
        item: Any = next(it, _END)
        if item is _END:
            stack.pop()
            ok = emit("\n" + " " * (4 * indent) + "}" if is_object else "]")
            continue
        frame[3] = False
        if is_object:
            key, child = item
            prefix = ("\n" if first else ",\n") + " " * (4 * (indent + 1))
            ok = emit(prefix + _scalar_text(key, top=False) + ": ")
            depth = indent + 1
        else:
            ok = emit("" if first else ", ")
            child, depth = item, indent
        if ok:
            ok = (
                open_container(child, depth)
                if isinstance(child, (list, dict))
                else emit(_scalar_text(child, top=False))
            )
    text = "".join(out)
    return text if len(text) <= limit else text[:limit] + "..."


_END = object()


def _plain(value: Any) -> Any:
    """`value` with its one-piece tensors (`Numbers`, see `_jsonparse.loads`) turned into lists."""
    if isinstance(value, Numbers):
        return value.to_list()
    if isinstance(value, dict) and any(isinstance(v, (Numbers, dict)) for v in value.values()):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _format_error(doc: Any, message: str) -> SigserveError:
    return _invalid(f"JSON Value: {value_to_string(doc)} {message}")


# -- predict request ----------------------------------------------------------------------------------


@dataclass
class PredictBody:
    """A parsed predict body: `signature_name` ("" when absent) and the raw document.

    Large numeric tensors in `doc` may be `_jsonnum.Numbers` (valid JSON, parsed in one piece)
    until `to_inputs` knows their dtypes.
    """

    signature_name: str
    doc: dict[str, Any]

    def to_inputs(self, input_dtypes: Mapping[str, int]) -> tuple[dict[str, np.ndarray], bool]:
        """Tensors for the signature's inputs (alias -> DataType), and whether the row format was used."""
        doc = self.doc
        if not input_dtypes:
            raise _invalid(f"Failed to get input map for signature: {self.signature_name or 'DEFAULT'}")
        has_instances = "instances" in doc
        has_inputs = "inputs" in doc
        if has_instances and has_inputs:
            raise _format_error(
                doc, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
            )
        if has_instances:
            instances = doc["instances"]
            if isinstance(instances, Numbers):
                if len(input_dtypes) == 1:
                    ((name, dtype),) = input_dtypes.items()
                    fast = _from_numbers(instances, dtype)
                    if fast is not None:
                        return {name: fast}, True
                instances = instances.to_list()
            if not isinstance(instances, list):
                raise _format_error(doc, "Expecting 'instances' to be an list/array")
            if not instances:
                raise _format_error(doc, "No values in 'instances' array")
            return _from_instances(instances, input_dtypes), True
        if has_inputs:
            return _from_inputs(doc["inputs"], input_dtypes), False
        raise _invalid("Missing 'inputs' or 'instances' key")


def parse_predict(body: bytes) -> PredictBody:
    """§1.7 steps 1–2: parse, require an object, check `signature_name`."""
    doc = _parse_object(body, tensors=True)
    return PredictBody(signature_name=_signature_name(doc), doc=doc)


def _parse_object(body: bytes, tensors: bool = False) -> dict[str, Any]:
    doc = loads(body, tensors)
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")
    return doc


def _signature_name(doc: dict[str, Any]) -> str:
    if "signature_name" not in doc:
        return ""
    name = doc["signature_name"]
    if not isinstance(name, str):
        raise _format_error(doc, "not formatted correctly. 'signature_name' key must be a string value.")
    return name


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _from_instances(instances: list[Any], input_dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    names = sorted(input_dtypes)
    first = instances[0]
    if not isinstance(first, dict) and len(names) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    if not (isinstance(first, dict) and not _is_b64(first)):
        name = names[0]
        dtype = input_dtypes[name]
        fast = _fast_numeric(instances, dtype, row=True)
        if fast is not None:
            return {name: fast}
    batches: dict[str, _Batch] = {}
    for index, element in enumerate(instances):
        is_object = isinstance(element, dict) and not _is_b64(element)
        if isinstance(first, dict) and not _is_b64(first):
            if not is_object:
                raise _invalid(f"Expecting object but got list at item {index} of input list")
            for key, item in element.items():
                try:
                    if key not in input_dtypes:
                        raise _invalid(f"JSON object: does not have named input: {key}")
                    batches.setdefault(key, _Batch(input_dtypes[key])).add(item)
                except SigserveError as e:
                    raise _invalid(
                        f"Failed to process element: {index} key: {key} of 'instances' list. "
                        f"Error: {e.to_string()}"
                    ) from None
            if set(element) != set(names):
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{value_to_string(element)} keys must be equal to: {','.join(names)}"
                )
        else:
            if is_object:
                raise _invalid(f"Expecting value/list but got object at item {index} of input list")
            name = names[0]
            try:
                batches.setdefault(name, _Batch(input_dtypes[name])).add(element)
            except SigserveError as e:
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. Error: {e.to_string()}"
                ) from None
    return {name: batch.array(len(instances)) for name, batch in batches.items()}


class _Batch:
    """One input's per-instance tensors, checked for equal size and shape as they arrive."""

    def __init__(self, dtype: int) -> None:
        self.dtype = dtype
        self.shape: tuple[int, ...] | None = None
        self.parts: list[np.ndarray] = []

    def add(self, value: Any) -> None:
        array = _to_array(value, self.dtype)
        if array.ndim >= _MAX_RANK:  # the batch dimension comes on top
            raise _invalid(
                f"JSON value nests lists {array.ndim + 1} levels deep; a tensor has at most {_MAX_RANK} "
                "dimensions, the batch dimension of 'instances' included (e.g. [[1, 2], [3, 4]] is a "
                "batch of two 1-D tensors)"
            )
        if self.shape is None:
            self.shape = array.shape
        elif array.size != math.prod(self.shape):
            raise _invalid(f"Expecting tensor size: {math.prod(self.shape)} but got: {array.size}")
        elif array.shape != self.shape:
            raise _invalid(f"Expecting shape {_shape_text(self.shape)} but got: {_shape_text(array.shape)}")
        self.parts.append(array)

    def array(self, count: int) -> np.ndarray:
        assert self.shape is not None
        if not self.parts:
            return np.zeros((count, *self.shape), dtype=dtypes.to_numpy_dtype(self.dtype))
        return np.stack(self.parts)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _from_inputs(value: Any, input_dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    names = sorted(input_dtypes)
    if not isinstance(value, dict) or _is_b64(value):
        if len(names) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        return {names[0]: _to_array(value, input_dtypes[names[0]])}
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name not in value:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _to_array(value[name], input_dtypes[name])
    return out


def _dense_shape(value: Any) -> tuple[int, ...]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _fast_numeric(value: Any, dtype: int, row: bool = False) -> np.ndarray | None:
    """A whole numeric array converted by numpy, or None to take the element-by-element path.

    Only taken when the result is certain to equal the slow path's: the array was parsed in one
    piece (`NumList`), holds no booleans/nulls, is rectangular, and (for integer dtypes) holds only
    integer literals in range.
    """
    if type(value) is not NumList or value.has_literal:
        return None
    shape = _dense_shape(value)
    if 0 in shape:
        return None
    try:
        if dtype in _FLOATS:
            array = np.array(value, dtype=np.float64)
            if array.shape != shape:
                return None
            with np.errstate(over="ignore"):
                return array.astype(dtypes.to_numpy_dtype(dtype))
        bounds = _INT_RANGES.get(dtype)
        if bounds is None or value.has_float:
            return None
        array = np.array(value, dtype=np.uint64 if dtype == _T.DT_UINT64 else np.int64)
    except (ValueError, OverflowError, TypeError):
        return None
    if array.shape != shape or array.dtype == object:
        return None
    if array.size and (int(array.min()) < bounds[0] or int(array.max()) > bounds[1]):
        return None
    return array.astype(dtypes.to_numpy_dtype(dtype))


def _from_numbers(numbers: Numbers, dtype: int) -> np.ndarray | None:
    """A one-piece tensor as `dtype`, or None to take the ordinary path (which then gives the
    same tensor or TF Serving's error)."""
    if dtype in _FLOATS:
        return numbers.as_float(dtypes.to_numpy_dtype(dtype))
    bounds = _INT_RANGES.get(dtype)
    if bounds is None:
        return None
    values = numbers.as_int(*bounds)
    return None if values is None else values.astype(dtypes.to_numpy_dtype(dtype))


def _to_array(value: Any, dtype: int) -> np.ndarray:
    """One JSON tensor (nested lists or a scalar) as an array of `dtype`; TF Serving's checks."""
    if isinstance(value, Numbers):
        scanned = _from_numbers(value, dtype)
        if scanned is not None:
            return scanned
        value = value.to_list()
    fast = _fast_numeric(value, dtype)
    if fast is not None:
        return fast
    shape = _dense_shape(value)
    rank = len(shape)
    if rank > _MAX_RANK:
        raise _invalid(
            f"JSON value nests lists {rank} levels deep; a tensor has at most {_MAX_RANK} dimensions "
            "(e.g. [[1, 2], [3, 4]] is a 2-D tensor)"
        )
    leaves: list[Any] = []
    convert = _leaf_converter(dtype)
    # Iterative depth-first walk in document order: (value, level).
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, list):
            if level >= rank:
                raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
            if len(node) != shape[level]:
                raise _invalid(
                    f"Encountered list at unexpected size: {len(node)} at level: {level} "
                    f"expected size: {shape[level]}"
                )
            stack.extend((child, level + 1) for child in reversed(node))
            continue
        if level != rank:
            raise _invalid(
                f"JSON Value: {value_to_string(node)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {rank}"
            )
        leaves.append(convert(node))
    npdt = dtypes.to_numpy_dtype(dtype)
    if dtype == _T.DT_STRING:
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
    elif dtype in _FLOATS:
        with np.errstate(over="ignore"):
            array = np.array(leaves, dtype=np.float64).astype(npdt)
    else:
        array = np.array(leaves, dtype=np.uint64 if dtype == _T.DT_UINT64 else np.int64).astype(npdt)
    return array.reshape(shape)


def _type_error(value: Any, dtype: int) -> SigserveError:
    return _invalid(
        f"JSON Value: {value_to_string(value)} Type: {type_name(value)} is not of expected type: "
        f"{dtypes.json_name(dtype)}"
    )


def _leaf_converter(dtype: int) -> Any:
    if dtype in _FLOATS:

        def to_float(v: Any) -> float:
            if type(v) is float or type(v) is int:
                return float(v)
            raise _type_error(v, dtype)

        return to_float
    bounds = _INT_RANGES.get(dtype)
    if bounds is not None:
        low, high = bounds

        def to_int(v: Any) -> int:
            if type(v) is int and low <= v <= high:
                return v
            raise _type_error(v, dtype)

        return to_int
    if dtype == _T.DT_BOOL:

        def to_bool(v: Any) -> bool:
            if type(v) is bool:
                return v
            raise _type_error(v, dtype)

        return to_bool
    if dtype == _T.DT_STRING:

        def to_bytes(v: Any) -> bytes:
            if isinstance(v, str):
                return v.encode("utf-8")
            if isinstance(v, dict):
                return decode_b64_object(v)
            raise _type_error(v, dtype)

        return to_bytes

    def unsupported(v: Any) -> Any:
        if isinstance(v, dict):
            raise _type_error(v, dtype)
        raise SigserveError(
            Code.UNIMPLEMENTED,
            f"Conversion of JSON Value: {value_to_string(v)} to type: {dtypes.json_name(dtype)}",
        )

    return unsupported


def decode_b64_object(value: dict[str, Any]) -> bytes:
    """`{"b64": "..."}` -> bytes (standard alphabet; padding optional, as absl's decoder)."""
    if not _is_b64(value):
        raise _invalid(f"JSON Value: {value_to_string(value)} not formatted correctly for base64 data")
    text = value["b64"]
    try:
        raw = text.encode("ascii")
        stripped = b"".join(raw.split())
        if len(stripped) % 4 == 1:
            raise ValueError
        return base64.b64decode(stripped + b"=" * (-len(stripped) % 4), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise _invalid("Unable to base64 decode") from None


# -- predict response ---------------------------------------------------------------------------------


def encode_predict(outputs: Mapping[str, Any], row_format: bool) -> bytes:
    """§1.8: `{"predictions": ...}` (row) or `{"outputs": ...}` (columnar)."""
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    arrays = {name: np.asarray(value) for name, value in sorted(outputs.items())}
    for value in arrays.values():
        if value.dtype.kind in "SU":
            raise _invalid("string outputs must be object arrays of bytes")
        if value.dtype.kind != "O" and _jsonwrite.orjson_ready(value) is None:
            raise _write_error(value)
    batch: int | None = None
    if row_format:
        for name, array in arrays.items():
            if array.ndim == 0:
                raise _invalid(f"Tensor name: {name} has no shape information ")
            if batch is None:
                batch = array.shape[0]
            elif array.shape[0] != batch:
                raise _invalid(
                    f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
                )
    if not any(a.dtype.kind == "O" for a in arrays.values()):
        fast = _encode_numeric(arrays, row_format, batch or 0)
        if fast is not None:
            return fast
    if not row_format:
        if len(arrays) == 1:
            ((name, array),) = arrays.items()
            return b'{"outputs":' + _tensor_json(array, name) + b"}"
        parts = [_key(name) + b":" + _tensor_json(a, name) for name, a in arrays.items()]
        return b'{"outputs":{' + b",".join(parts) + b"}}"
    if len(arrays) == 1:
        ((name, array),) = arrays.items()
        return b'{"predictions":' + _tensor_json(array, name) + b"}"
    rows = []
    for i in range(batch or 0):
        parts = [_key(name) + b":" + _tensor_json(a[i, ...], name) for name, a in arrays.items()]
        rows.append(b"{" + b",".join(parts) + b"}")
    return b'{"predictions":[' + b",".join(rows) + b"]}"


def _encode_numeric(arrays: dict[str, np.ndarray], row_format: bool, batch: int) -> bytes | None:
    """All-numeric outputs written by orjson in one call (see `_jsonwrite.dumps_numeric`)."""
    names = list(arrays)
    ready = [_jsonwrite.orjson_ready(a) for a in arrays.values()]
    values = [a for a in ready if a is not None]

    def tensor(a: np.ndarray) -> Any:
        return a[()] if a.ndim == 0 else a

    def build(tensors: list[np.ndarray]) -> Any:
        if not row_format:
            if len(tensors) == 1:
                return {"outputs": tensor(tensors[0])}
            return {"outputs": {n: tensor(t) for n, t in zip(names, tensors, strict=True)}}
        if len(tensors) == 1:
            return {"predictions": tensors[0]}
        return {"predictions": [dict(zip(names, row, strict=True)) for row in zip(*tensors, strict=True)]}

    keys = [_key(n) for n in names]
    if row_format and len(values) > 1 and batch == 0:
        return b'{"predictions":[]}'
    return _jsonwrite.dumps_numeric(values, build, keys)


def _write_error(array: np.ndarray) -> SigserveError:
    dt = dtypes.from_numpy_dtype(array.dtype) if array.dtype.kind != "V" else _T.DT_INVALID
    return _invalid(f"Failed to write JSON value for tensor type: {dtypes.json_name(dt)}")


def _key(name: str) -> bytes:
    return _jsonwrite.escape_string(name.encode("utf-8"))


def _tensor_json(array: np.ndarray, name: str) -> bytes:
    """One tensor's JSON text for the byte-splicing path (string outputs, sentinel collisions)."""
    ready = _jsonwrite.orjson_ready(array) if array.dtype.kind != "O" else None
    if ready is not None:
        fast = _jsonwrite.dumps_numeric([ready], lambda t: t[0][()] if t[0].ndim == 0 else t[0], [])
        if fast is not None:
            return fast
    text = _jsonwrite.array_json(array, name)
    if text is None:
        raise _write_error(array)
    return text


def encode_tensor(array: np.ndarray, name: str) -> bytes:
    """One tensor's JSON value as a predict response writes it (`name` decides the `_bytes` rule)."""
    return _tensor_json(array, name)


def encode_error(message: str) -> bytes:
    """`{"error": "<message>"}`, the body of every /v1 error."""
    return b'{"error":' + _jsonwrite.escape_string(message.encode("utf-8", "replace")) + b"}"


# -- classify / regress -------------------------------------------------------------------------------


@dataclass
class ExamplesBody:
    """A parsed classify/regress body: `signature_name` ("" when absent) and the `Input`."""

    signature_name: str
    input: input_pb2.Input


def parse_examples(body: bytes, method: str) -> ExamplesBody:
    """§1.9: `examples` (and optional `context`) -> Input (ExampleList[WithContext]).

    `method` is "classify" or "regress"; TF Serving's messages say "classify" for both.
    """
    del method  # the texts are the same for both (a TF Serving quirk kept on purpose)
    return examples_from_doc(_parse_object(body))


def examples_from_doc(doc: dict[str, Any]) -> ExamplesBody:
    """`parse_examples` of a body already parsed (a JSON object as a dict)."""
    signature_name = _signature_name(doc)
    result = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        context = example_from_json(doc["context"])
    if "examples" not in doc:
        raise _format_error(doc, "When method is classify, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    built = [example_from_json(e) for e in examples]
    if has_context:
        result.example_list_with_context.context.CopyFrom(context)
        result.example_list_with_context.examples.extend(built)
    else:
        result.example_list.examples.extend(built)
    return ExamplesBody(signature_name=signature_name, input=result)


def example_from_json(value: Any) -> example_pb2.Example:
    """One JSON object -> tf.Example with TF Serving's feature typing rules."""
    if not isinstance(value, dict):
        raise _invalid(f"Example must be JSON object but got JSON {type_name(value)}")
    example = example_pb2.Example()
    features = example.features.feature
    for name, content in value.items():
        features[name].CopyFrom(feature_from_json(name, content))
    return example


_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def feature_from_json(name: str, content: Any) -> feature_pb2.Feature:
    """A scalar or flat list -> Feature: strings/b64 bytes, decimals float, integers/bools int64."""
    feature = feature_pb2.Feature()
    kind: str | None = None
    bytes_values: list[bytes] = []
    float_values: list[float] = []
    int_values: list[int] = []
    for v in content if isinstance(content, list) else [content]:
        if v is None or isinstance(v, list) or (isinstance(v, dict) and not _is_b64(v)):
            raise _invalid(f"Feature: {name} has element with unexpected JSON type: {type_name(v)}")
        if isinstance(v, (str, bytes, dict)):  # bytes: only from Python callers (examples_from_dicts)
            this = "bytes_list"
        elif isinstance(v, float):
            this = "float_list"
        else:
            this = "int64_list"
        if kind is not None and this != kind:
            raise _invalid(f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[kind]}")
        kind = this
        if isinstance(v, str):
            bytes_values.append(v.encode("utf-8"))
        elif isinstance(v, bytes):
            bytes_values.append(v)
        elif isinstance(v, dict):
            bytes_values.append(decode_b64_object(v))
        elif isinstance(v, float):
            float_values.append(v)
        elif isinstance(v, bool):
            int_values.append(int(v))
        else:
            if v > _INT64[1]:
                raise _invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
            int_values.append(v)
    if kind == "bytes_list":
        feature.bytes_list.value.extend(bytes_values)
    elif kind == "float_list":
        with np.errstate(over="ignore"):
            feature.float_list.value.extend(np.array(float_values, dtype=np.float32).tolist())
    elif kind == "int64_list":
        feature.int64_list.value.extend(int_values)
    return feature


def encode_classify(result: classification_pb2.ClassificationResult) -> bytes:
    """`{"results": [[[label, score], ...], ...]}` — one list of pairs per example."""
    if not result.classifications:
        raise _invalid("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for classifications in result.classifications:
        pairs = [
            b"[" + _key(c.label) + b"," + _jsonwrite.format_float(c.score, single=True).encode() + b"]"
            for c in classifications.classes
        ]
        rows.append(b"[" + b",".join(pairs) + b"]")
    return b'{"results":[' + b",".join(rows) + b"]}"


def encode_regress(result: regression_pb2.RegressionResult) -> bytes:
    """`{"results": [v1, v2, ...]}` — one float per example."""
    if not result.regressions:
        raise _invalid("Cannot convert empty RegressionResults to JSON")
    values = [_jsonwrite.format_float(r.value, single=True).encode() for r in result.regressions]
    return b'{"results":[' + b",".join(values) + b"]}"
