"""TensorProto ⇄ numpy, with TensorFlow's `Tensor::FromProto` / `AsProtoField` rules.

Decoding takes `tensor_content` zero-copy (`np.frombuffer` over the message's bytes) or the typed
`*_val` field; a typed field shorter than the shape repeats its last value (an empty one gives
zeros), a longer one or content of the wrong size is TensorFlow's "tensor parsing error".

Encoding writes the typed field by default (what TF Serving sends) or `tensor_content` on request.
Large typed fields are not built value by value through the protobuf API (about 100 ms per million
floats): their packed wire bytes are produced with numpy and merged into the message, which upb
parses at memory speed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sigserve.codec import dtypes
from sigserve.errors import Code, SigserveError
from sigserve.protos import tensor_pb2, types_pb2

TensorProto = tensor_pb2.TensorProto
_T = types_pb2

# Typed filling beyond what the message carries is capped: a 10-byte message must not be able to
# ask for a terabyte tensor ("one value fills the tensor").
_MAX_FILL_BYTES = 1 << 31

# DataType -> (typed field, wire field number, payload kind)
_FIELDS: dict[int, tuple[str, int, str]] = {
    _T.DT_FLOAT: ("float_val", 5, "fixed"),
    _T.DT_DOUBLE: ("double_val", 6, "fixed"),
    _T.DT_INT32: ("int_val", 7, "varint"),
    _T.DT_INT16: ("int_val", 7, "varint"),
    _T.DT_INT8: ("int_val", 7, "varint"),
    _T.DT_UINT8: ("int_val", 7, "varint"),
    _T.DT_UINT16: ("int_val", 7, "varint"),
    _T.DT_INT4: ("int_val", 7, "varint"),
    _T.DT_UINT4: ("int_val", 7, "varint"),
    _T.DT_INT2: ("int_val", 7, "varint"),
    _T.DT_UINT2: ("int_val", 7, "varint"),
    _T.DT_STRING: ("string_val", 8, "string"),
    _T.DT_COMPLEX64: ("scomplex_val", 9, "fixed"),
    _T.DT_INT64: ("int64_val", 10, "varint"),
    _T.DT_BOOL: ("bool_val", 11, "varint"),
    _T.DT_COMPLEX128: ("dcomplex_val", 12, "fixed"),
    _T.DT_HALF: ("half_val", 13, "bits16"),
    _T.DT_BFLOAT16: ("half_val", 13, "bits16"),
    _T.DT_UINT32: ("uint32_val", 16, "varint"),
    _T.DT_UINT64: ("uint64_val", 17, "varint"),
    _T.DT_FLOAT8_E5M2: ("float8_val", 18, "bytes"),
    _T.DT_FLOAT8_E4M3FN: ("float8_val", 18, "bytes"),
    _T.DT_FLOAT8_E4M3FNUZ: ("float8_val", 18, "bytes"),
    _T.DT_FLOAT8_E4M3B11FNUZ: ("float8_val", 18, "bytes"),
    _T.DT_FLOAT8_E5M2FNUZ: ("float8_val", 18, "bytes"),
    _T.DT_FLOAT4_E2M1FN: ("float8_val", 18, "bytes"),
}

# Little-endian wire layout of the fixed-width fields.
_FIXED_WIRE: dict[int, np.dtype] = {
    _T.DT_FLOAT: np.dtype("<f4"),
    _T.DT_DOUBLE: np.dtype("<f8"),
    _T.DT_COMPLEX64: np.dtype("<f4"),
    _T.DT_COMPLEX128: np.dtype("<f8"),
}


def _parsing_error(alias: str) -> SigserveError:
    return SigserveError(Code.INVALID_ARGUMENT, f"tensor parsing error: {alias}")


def shape_of(proto: TensorProto, alias: str = "") -> tuple[int, ...]:
    """The tensor's dims; an unknown rank or a negative dim is not a valid tensor shape."""
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise _parsing_error(alias)
    dims = tuple(d.size for d in shape.dim)
    if any(d < 0 for d in dims) or math.prod(dims) >= 1 << 62:
        raise _parsing_error(alias)
    return dims


def to_ndarray(proto: TensorProto, alias: str = "") -> np.ndarray:
    """A numpy array holding the tensor's values; `alias` names the tensor in errors.

    Arrays decoded from `tensor_content` share the message's bytes and are read-only.
    """
    dt = dtypes.base(proto.dtype)
    if dt not in _FIELDS:
        raise _parsing_error(alias)
    npdt = dtypes.to_numpy_dtype(dt)
    dims = shape_of(proto, alias)
    n = math.prod(dims)
    content = proto.tensor_content
    if content:
        if dt == _T.DT_STRING or len(content) != n * npdt.itemsize:
            raise _parsing_error(alias)
        return np.frombuffer(content, dtype=npdt).reshape(dims)
    values = _typed_values(proto, dt, npdt, alias)
    m = len(values)
    if m == n:
        return values.reshape(dims)
    if m > n or n * npdt.itemsize > _MAX_FILL_BYTES:
        raise _parsing_error(alias)
    if dt == _T.DT_STRING:
        out = np.empty(n, dtype=object)
        out[:] = values[-1] if m else b""
        out[:m] = values
    elif m == 0:
        out = np.zeros(n, dtype=npdt)
    else:
        out = np.empty(n, dtype=npdt)
        out[:m] = values
        out[m:] = values[-1]
    return out.reshape(dims)


def _typed_values(proto: TensorProto, dt: int, npdt: np.dtype, alias: str) -> np.ndarray:
    field, _, kind = _FIELDS[dt]
    if kind == "string":
        raw = list(proto.string_val)
        values = np.empty(len(raw), dtype=object)
        values[:] = raw
        return values
    if kind == "bytes":
        return np.frombuffer(proto.float8_val, dtype=np.uint8).view(npdt)
    # Repeated scalar fields expose a buffer in their own type: np.array() is a memcpy.
    native = np.array(getattr(proto, field))
    if kind == "bits16":
        return native.astype(np.uint16).view(npdt)
    if dt in (_T.DT_COMPLEX64, _T.DT_COMPLEX128):
        if len(native) % 2:
            raise _parsing_error(alias)
        return native.view(npdt)
    if native.dtype != npdt:
        return native.astype(npdt)
    return native


def from_ndarray(arr: Any, dtype: int | None = None, *, tensor_content: bool = False) -> TensorProto:
    """A TensorProto for an array-like; `dtype` (a DataType) overrides the array's own type.

    Strings are bytes (str is UTF-8 encoded). `tensor_content=True` writes the raw little-endian
    bytes (TF Serving's --enable_serialization_as_tensor_content); the default is the typed field.
    """
    array = _as_array(arr, dtype)
    dt = int(dtype) if dtype is not None else dtypes.from_numpy_dtype(array.dtype)
    dt = dtypes.base(dt)
    npdt = dtypes.to_numpy_dtype(dt)
    proto = TensorProto(dtype=dt)  # type: ignore[arg-type]
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size
    if dt == _T.DT_STRING:
        proto.string_val.extend(_as_bytes_list(array))
        return proto
    if array.dtype != npdt:
        array = array.astype(npdt)
    if array.size == 0:
        return proto
    if tensor_content:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
        return proto
    _, number, kind = _FIELDS[dt]
    if kind == "bytes":
        proto.float8_val = np.ascontiguousarray(array).view(np.uint8).tobytes()
        return proto
    if kind == "fixed":
        payload = np.ascontiguousarray(array).view(array.real.dtype).astype(_FIXED_WIRE[dt]).tobytes()
    elif kind == "bits16":
        payload = _varints(array.reshape(-1).view(np.uint16).astype(np.uint64))
    else:
        flat = array.reshape(-1)
        if flat.dtype == np.bool_ or flat.dtype.kind == "u":
            wide = flat.astype(np.uint64)
        else:  # negative ints are sign-extended to 64 bits on the wire, int32 fields included
            wide = flat.astype(np.int64).view(np.uint64)
        payload = _varints(wide)
    proto.MergeFromString(varint_bytes((number << 3) | 2) + varint_bytes(len(payload)) + payload)
    return proto


def _as_array(arr: Any, dtype: int | None) -> np.ndarray:
    if isinstance(arr, np.ndarray):
        return arr
    if dtype is not None and dtypes.base(int(dtype)) == _T.DT_STRING:
        return np.asarray(arr, dtype=object)
    array = np.asarray(arr)
    if array.dtype.kind in "SU":
        return array.astype(object)
    return array


def _as_bytes_list(array: np.ndarray) -> list[bytes]:
    out: list[bytes] = []
    for value in array.reshape(-1).tolist():
        if isinstance(value, bytes):
            out.append(value)
        elif isinstance(value, str):
            out.append(value.encode("utf-8"))
        else:
            raise SigserveError(
                Code.INVALID_ARGUMENT,
                f"A string tensor holds bytes or str values, not {type(value).__name__} "
                f"(e.g. numpy.array([b'a', b'b'], dtype=object))",
            )
    return out


def varint_bytes(value: int) -> bytes:
    """One protobuf base-128 varint (a non-negative int)."""
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)
_THRESHOLDS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def _varints(values: np.ndarray) -> bytes:
    """Protobuf base-128 varints of a uint64 array, concatenated (a packed field's payload)."""
    if values.size == 0:
        return b""
    nbytes = np.ones(values.shape, dtype=np.int64)
    width = 1
    for threshold in _THRESHOLDS:
        above = values >= threshold
        if not above.any():
            break
        nbytes += above
        width += 1
    groups = ((values[:, None] >> _SHIFTS[:width]) & np.uint64(0x7F)).astype(np.uint8)
    column = np.arange(width)
    groups |= (column < (nbytes[:, None] - 1)).astype(np.uint8) << np.uint8(7)
    return groups[column < nbytes[:, None]].tobytes()
