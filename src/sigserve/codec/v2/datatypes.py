"""The Open Inference Protocol's tensor datatypes ⇄ TensorFlow DataTypes ⇄ numpy.

V2 names a type by a string ("FP32", "BYTES", ...); its binary form is little-endian, row-major,
BOOL one byte per element and BYTES a 4-byte little-endian length before each element. TensorFlow
types without a V2 name (complex, quantized, float8, 4-bit, resource, variant) cannot cross V2.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from sigserve.codec import dtypes
from sigserve.errors import Code, SigserveError
from sigserve.protos import types_pb2 as _T

BYTES = "BYTES"
BOOL = "BOOL"

# V2 datatype -> TensorFlow DataType, in the spec's table order.
_TO_TF: dict[str, int] = {
    BOOL: _T.DT_BOOL,
    "UINT8": _T.DT_UINT8,
    "UINT16": _T.DT_UINT16,
    "UINT32": _T.DT_UINT32,
    "UINT64": _T.DT_UINT64,
    "INT8": _T.DT_INT8,
    "INT16": _T.DT_INT16,
    "INT32": _T.DT_INT32,
    "INT64": _T.DT_INT64,
    "FP16": _T.DT_HALF,
    "FP32": _T.DT_FLOAT,
    "FP64": _T.DT_DOUBLE,
    BYTES: _T.DT_STRING,
    "BF16": _T.DT_BFLOAT16,
}
_FROM_TF: dict[int, str] = {v: k for k, v in _TO_TF.items()}

# The wire layout of each fixed-size datatype (little-endian whatever the host).
_WIRE: dict[str, np.dtype] = {
    BOOL: np.dtype(np.bool_),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype(ml_dtypes.bfloat16),  # one byte order only; little-endian hosts are assumed
}

NAMES: tuple[str, ...] = tuple(_TO_TF)


def _unknown(datatype: str) -> SigserveError:
    shown = datatype if len(datatype) <= 64 else datatype[:64] + "..."
    return SigserveError(
        Code.INVALID_ARGUMENT,
        f"unknown datatype {shown!r}: the Open Inference Protocol's datatypes are {', '.join(NAMES)} "
        '(e.g. "datatype": "FP32")',
    )


def check(datatype: str) -> str:
    """`datatype` if it is one of the protocol's names (case-sensitive, as the spec says)."""
    if datatype not in _TO_TF:
        raise _unknown(datatype)
    return datatype


def to_tf(datatype: str) -> int:
    """The TensorFlow DataType for a V2 datatype; INVALID_ARGUMENT for an unknown name."""
    found = _TO_TF.get(datatype)
    if found is None:
        raise _unknown(datatype)
    return found


def from_tf(dt: int) -> str | None:
    """The V2 datatype of a TensorFlow DataType (`_REF` types as their base), or None if V2 has none."""
    return _FROM_TF.get(dtypes.base(int(dt)))


def from_numpy(dtype: np.dtype) -> str | None:
    """The V2 datatype of an array's dtype: object/bytes/str arrays are BYTES."""
    if dtype.kind in "OSU":
        return BYTES
    try:
        return from_tf(dtypes.from_numpy_dtype(dtype))
    except SigserveError:
        return None


def wire_dtype(datatype: str) -> np.dtype | None:
    """The numpy dtype of one element on the wire, or None for BYTES (variable size)."""
    return _WIRE.get(datatype)


def numpy_dtype(datatype: str) -> np.dtype:
    """The in-memory numpy dtype for a V2 datatype (object for BYTES)."""
    return dtypes.to_numpy_dtype(to_tf(datatype))
