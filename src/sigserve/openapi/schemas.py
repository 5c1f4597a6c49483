"""JSON Schemas for TF Serving's REST bodies (tfserving-api.md §1.7–1.9), derived from SignatureDefs.

What a schema here accepts is what `sigserve.codec.json` accepts, with two exceptions JSON Schema
cannot express and the descriptions say: the number *text* (`1.0` is a JSON Schema integer, but
an int dtype rejects a decimal literal) and the NaN / Infinity tokens (not JSON; accepted in
requests, written in responses for non-finite floats). Shapes go one step further than the server:
a known dimension of the signature becomes `minItems`/`maxItems`, because TF Serving does not check
shapes against the signature and a request of another shape fails (or, in a TF1 graph, may run and
answer in a shape the signature does not promise). Responses are therefore typed by dtype at any
rank, not by the signature's shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sigserve.codec import dtypes
from sigserve.protos import meta_graph_pb2
from sigserve.protos import types_pb2 as _T

Schema = dict[str, Any]
TensorInfo = meta_graph_pb2.TensorInfo

# What `codec.json` accepts for each integer dtype: TF Serving range-checks only int32, int64 and
# the unsigned 32/64-bit types; int8/int16/uint8 take any int32 and wrap.
_INT32 = (-(1 << 31), (1 << 31) - 1)
_INT_RANGES: dict[int, tuple[int, int]] = {
    _T.DT_INT32: _INT32,
    _T.DT_INT16: _INT32,
    _T.DT_INT8: _INT32,
    _T.DT_UINT8: _INT32,
    _T.DT_INT64: (-(1 << 63), (1 << 63) - 1),
    _T.DT_UINT32: (0, (1 << 32) - 1),
    _T.DT_UINT64: (0, (1 << 64) - 1),
}
_NARROW_RANGES: dict[int, tuple[int, int]] = {
    _T.DT_INT16: (-(1 << 15), (1 << 15) - 1),
    _T.DT_INT8: (-128, 127),
    _T.DT_UINT8: (0, 255),
}
_NARROW = tuple(_NARROW_RANGES)
_FLOATS = (_T.DT_FLOAT, _T.DT_DOUBLE)

# Standard base64, padding optional (absl's decoder, `codec.json.decode_b64_object`).
B64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$"
B64_OBJECT: Schema = {
    "type": "object",
    "description": 'Binary data: {"b64": "<standard base64>"}',
    "properties": {"b64": {"type": "string", "contentEncoding": "base64", "pattern": B64_PATTERN}},
    "required": ["b64"],
    "additionalProperties": False,
}

# Where the ready-made schemas live in a document (`components_schemas()` returns them).
REF = "#/components/schemas/"
ERROR = "Error"
B64 = "Base64"
EXAMPLE = "Example"
FEATURE_VALUE = "FeatureValue"
MODEL_STATUS = "ModelStatus"
MODEL_METADATA = "ModelMetadata"

_MAX_EXAMPLE_ELEMENTS = 1024  # an input larger than this gets no generated example


def ref(name: str) -> Schema:
    return {"$ref": REF + name}


def is_bytes_alias(alias: str) -> bool:
    """TF Serving's rule: a DT_STRING tensor whose alias ends in `_bytes` travels as {"b64": ...}."""
    return alias.endswith("_bytes")


def json_convertible(dtype: int) -> bool:
    """Whether REST predict can carry this dtype (others are 501 on input, 400 on output)."""
    dt = dtypes.base(dtype)
    return dt in _FLOATS or dt in _INT_RANGES or dt in (_T.DT_BOOL, _T.DT_STRING)


def shape(info: TensorInfo) -> tuple[int, ...] | None:
    """The declared shape (-1 for an unknown dimension), or None for an unknown rank."""
    if info.tensor_shape.unknown_rank:
        return None
    return tuple(int(d.size) for d in info.tensor_shape.dim)


def shape_text(dims: tuple[int, ...] | None) -> str:
    """`saved_model_cli`'s form: (-1, 1); `unknown rank`."""
    if dims is None:
        return "unknown rank"
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


class SchemaBuilder:
    """Builds tensor schemas and collects the named ones they refer to (any-rank tensors)."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {}

    # -- leaves ------------------------------------------------------------------------------------

    def input_leaf(self, dtype: int, alias: str) -> Schema:
        """One scalar of an input tensor, as the REST codec accepts it."""
        dt = dtypes.base(dtype)
        name = dtypes.json_name(dt)
        if dt in _FLOATS:
            return {"type": "number", "description": f"{name} (NaN, Infinity, -Infinity also accepted)"}
        bounds = _INT_RANGES.get(dt)
        if bounds is not None:
            leaf: Schema = {"type": "integer", "minimum": bounds[0], "maximum": bounds[1]}
            leaf["description"] = f"{name}, an integer literal (1, not 1.0)" + (
                "; values outside the type's range wrap around (TF Serving does not check them)"
                if dt in _NARROW
                else ""
            )
            return leaf
        if dt == _T.DT_BOOL:
            return {"type": "boolean"}
        if dt == _T.DT_STRING:
            self.components.setdefault(B64, B64_OBJECT)
            text: Schema = {"type": "string", "description": "UTF-8 text, sent as its bytes"}
            if is_bytes_alias(alias):
                return {"anyOf": [ref(B64), text]}
            return {"anyOf": [text, ref(B64)]}
        return {"not": {}, "description": f"{dtypes.name(dt)} cannot be sent as JSON"}

    def output_leaf(self, dtype: int, alias: str) -> Schema:
        """One scalar of an output tensor, as the REST codec writes it."""
        dt = dtypes.base(dtype)
        if dt in _FLOATS:
            return {
                "type": "number",
                "description": "NaN, Infinity and -Infinity are written as those tokens",
            }
        if dt in _INT_RANGES:
            low, high = _NARROW_RANGES.get(dt, _INT_RANGES[dt])
            return {"type": "integer", "minimum": low, "maximum": high}
        if dt == _T.DT_BOOL:
            return {"type": "boolean"}
        if dt == _T.DT_STRING:
            if is_bytes_alias(alias):
                self.components.setdefault(B64, B64_OBJECT)
                return ref(B64)
            return {"type": "string"}
        return {"not": {}, "description": f"{dtypes.name(dt)} cannot be written as JSON"}

    # -- tensors -------------------------------------------------------------------------------------

    def tensor(self, leaf: Schema, dims: Sequence[int] | None, key: str) -> Schema:
        """Nested lists of `leaf`: exactly `len(dims)` deep, known sizes fixed; None: any rank.

        `key` names the leaf (e.g. `float`, `string_bytes`) for the any-rank component.
        """
        if dims is None:
            return self._any_rank(leaf, key)
        schema = leaf
        for size in reversed(dims):
            array: Schema = {"type": "array", "items": schema}
            if size >= 0:
                array["minItems"] = size
                array["maxItems"] = size
            schema = array
        return schema

    def _any_rank(self, leaf: Schema, key: str) -> Schema:
        name = f"Tensor.{key}"
        if name not in self.components:
            self.components[name] = {
                "description": f"A tensor of {key} values at any rank: a scalar or nested lists",
                "anyOf": [leaf, {"type": "array", "items": ref(name)}],
            }
        return ref(name)

    def input_tensor(self, alias: str, info: TensorInfo, *, row: bool) -> Schema:
        """An input's tensor in a request: whole (columnar) or one instance of it (row)."""
        dims = shape(info)
        if row and dims:
            dims = dims[1:]
        schema = self.tensor(self.input_leaf(info.dtype, alias), dims, _leaf_key(info.dtype, alias))
        desc = f"{alias}: {dtypes.name(info.dtype)}, shape {shape_text(shape(info))}"
        return (
            {**schema, "description": desc}
            if "$ref" not in schema
            else {"allOf": [schema], "description": desc}
        )

    def output_tensor(self, alias: str, info: TensorInfo) -> Schema:
        """An output's values in a response, at any rank (see the module's docstring)."""
        return self._any_rank(self.output_leaf(info.dtype, alias), "out." + _leaf_key(info.dtype, alias))


def _leaf_key(dtype: int, alias: str) -> str:
    name = dtypes.json_name(dtypes.base(dtype))
    if dtypes.base(dtype) == _T.DT_STRING and is_bytes_alias(alias):
        return name + "_bytes"
    return name


# -- examples ---------------------------------------------------------------------------------------


def example_value(dtype: int, alias: str, index: int) -> Any:
    """A plausible scalar of `dtype`: 1.0, 2.0, ... for floats; "a", "b", ... for strings."""
    dt = dtypes.base(dtype)
    if dt in _FLOATS:
        return float(index + 1)
    if dt in _INT_RANGES:
        return index + 1
    if dt == _T.DT_BOOL:
        return index % 2 == 0
    if dt == _T.DT_STRING:
        import base64

        text = chr(ord("a") + index % 26)
        return {"b64": base64.b64encode(text.encode()).decode()} if is_bytes_alias(alias) else text
    return None


def example_tensor(alias: str, info: TensorInfo, *, row: bool, batch: int = 1) -> Any:
    """A value of the declared shape (unknown dimensions: `batch` for the first, 1 after; unknown
    rank: a list of `batch` scalars); one instance of it when `row`. None if it would be large."""
    dims = shape(info)
    if dims is None:
        dims = (-1,)
    sizes = [d if d >= 0 else (batch if i == 0 else 1) for i, d in enumerate(dims)]
    if row and sizes:
        sizes = sizes[1:]
    count = 1
    for s in sizes:
        count *= s
    if count > _MAX_EXAMPLE_ELEMENTS:
        return None
    counter = iter(range(count))

    def build(level: int) -> Any:
        if level == len(sizes):
            return example_value(info.dtype, alias, next(counter))
        return [build(level + 1) for _ in range(sizes[level])]

    return build(0)


def batch_size(inputs: Mapping[str, TensorInfo]) -> int | None:
    """The first dimension the inputs declare, if any declares one (None: any batch)."""
    for info in inputs.values():
        dims = shape(info)
        if dims and dims[0] >= 0:
            return dims[0]
    return None


# -- the fixed schemas ------------------------------------------------------------------------------


def components_schemas() -> dict[str, Schema]:
    """The schemas every document shares: the error body, tf.Example in JSON, status, metadata."""
    scalar_feature: list[Schema] = [{"type": "string"}, ref(B64), {"type": "number"}, {"type": "boolean"}]
    return {
        ERROR: {
            "type": "object",
            "description": "Every error on /v1: the message only; the HTTP status carries the code.",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
        },
        B64: B64_OBJECT,
        FEATURE_VALUE: {
            "description": (
                "A feature: a scalar or a flat list. Strings and {b64} become bytes_list, numbers "
                "written with a fraction or exponent float_list, integer literals and booleans "
                "int64_list; all elements of one feature must be of one kind."
            ),
            "anyOf": [
                *scalar_feature,
                {"type": "array", "items": {"anyOf": [{"type": "string"}, ref(B64)]}},
                {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "boolean"}]}},
            ],
        },
        EXAMPLE: {
            "type": "object",
            "description": "A tf.Example as JSON: feature name -> value.",
            "additionalProperties": ref(FEATURE_VALUE),
        },
        MODEL_STATUS: {
            "type": "object",
            "properties": {
                "model_version_status": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "version": {"type": "string", "pattern": "^[0-9]+$"},
                            "state": {
                                "enum": ["UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "error_code": {"type": "string"},
                                    "error_message": {"type": "string"},
                                },
                                "required": ["error_code", "error_message"],
                            },
                        },
                        "required": ["version", "state", "status"],
                    },
                }
            },
            "required": ["model_version_status"],
        },
        MODEL_METADATA: {
            "type": "object",
            "properties": {
                "model_spec": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "signature_name": {"type": "string"},
                        "version": {"type": "string", "pattern": "^[0-9]+$"},
                    },
                    "required": ["name", "signature_name", "version"],
                },
                "metadata": {
                    "type": "object",
                    "properties": {
                        "signature_def": {
                            "type": "object",
                            "properties": {"signature_def": {"type": "object"}},
                            "required": ["signature_def"],
                        }
                    },
                    "required": ["signature_def"],
                },
            },
            "required": ["model_spec", "metadata"],
        },
    }
