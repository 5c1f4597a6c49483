"""Arrow columns ⇄ the tensors a signature takes and gives, one row per example.

A column becomes a tensor whose first dimension is the row: numbers and booleans as they are (no
copy when there are no nulls), strings and binary as TF Serving's object arrays of bytes, list and
fixed-size-list columns (nested to any depth) as higher-rank tensors when every row has the same
shape, and Ray's tensor columns (what `read_numpy` gives) as their arrays.

A tensor becomes a column the other way: rank 1 as a plain column, higher ranks as nested
fixed-size lists (plain Arrow, so pandas, Spark and DuckDB read the results without Ray).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sigserve.codec import dtypes
from sigserve.errors import Code, SigserveError
from sigserve.protos import types_pb2


def _bad(message: str) -> SigserveError:
    return SigserveError(Code.INVALID_ARGUMENT, message)


def to_tensor(column: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    """The rows of `column` as one tensor (first dimension = rows)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if column.null_count:
        raise _bad(
            f"column {name} has {column.null_count} missing value(s); a tensor has no nulls: "
            "fill or drop them before scoring"
        )
    kind = column.type
    if isinstance(kind, pa.ExtensionType):
        to_numpy = getattr(column, "to_numpy", None)  # Ray's tensor columns convert themselves
        if to_numpy is None:
            raise _bad(f"column {name} has the extension type {kind}, which sigserve cannot read")
        return np.asarray(to_numpy())
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _lists_to_tensor(column, name)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        column = column.cast(pa.large_binary())
        kind = column.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        out = np.empty(len(column), dtype=object)
        out[:] = column.to_pylist()
        return out
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return np.asarray(column.to_numpy(zero_copy_only=False))
    raise _bad(
        f"column {name} has type {kind}; sigserve scores numbers, booleans, strings, binary "
        "(e.g. serialized tf.Example) and lists of those"
    )


def _lists_to_tensor(column: pa.Array, name: str) -> np.ndarray:
    rows = len(column)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if rows and (lengths != lengths[0]).any():
        first = int(np.flatnonzero(lengths != lengths[0])[0])
        raise _bad(
            f"column {name} holds lists of different lengths ({int(lengths[0])} in one row, "
            f"{int(lengths[first])} in another); a tensor needs the same shape in every row"
        )
    inner = to_tensor(column.flatten(), name)
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
    else:
        width = int(lengths[0]) if rows else 0
    return inner.reshape((rows, width, *inner.shape[1:]))


def cast_for_input(array: np.ndarray, dtype_enum: int, column: str, alias: str) -> np.ndarray:
    """`array` in the signature input's dtype, converting only where no information is lost but
    precision (float64 → float32, as a JSON number becomes a float); anything else is an error."""
    want = dtypes.to_numpy_dtype(dtype_enum)
    have = array.dtype
    if have == want:
        return array
    what = f"column {column} ({have}) cannot feed input {alias} ({dtypes.name(dtype_enum)})"
    if dtype_enum == types_pb2.DT_STRING:
        raise _bad(f"{what}: a string input takes a string or binary column")
    if have.kind == "O":
        raise _bad(f"{what}: it holds strings")
    if have.kind == "b" or want.kind == "b":
        raise _bad(f"{what}: cast the column first")
    if want.kind in "iu" and have.kind in "iu":
        info = np.iinfo(want)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise _bad(f"{what}: values outside [{info.min}, {info.max}]")
        return array.astype(want)
    if want.kind in "iu":
        raise _bad(f"{what}: it holds floating-point values")
    return array.astype(want)


def to_column(array: np.ndarray, rows: int, alias: str) -> pa.Array:
    """One output tensor as a column of `rows` rows."""
    if array.ndim == 0 or array.shape[0] != rows:
        raise SigserveError(
            Code.FAILED_PRECONDITION,
            f"output {alias} has shape {list(array.shape)} for a batch of {rows} rows, not one value "
            "per row; leave it out with --outputs (the signature's other outputs)",
        )
    if array.dtype.type.__module__ == "ml_dtypes":
        array = array.astype(np.float32)  # Arrow has no bfloat16, float8 or int4
    flat = array.reshape(-1)
    if array.dtype == object:
        values: pa.Array = pa.array([_as_bytes(v) for v in flat], type=pa.large_binary())
    else:
        values = pa.array(flat)
    dims = array.shape
    for level in range(len(dims) - 1, 0, -1):
        if dims[level]:
            values = pa.FixedSizeListArray.from_arrays(values, int(dims[level]))
        else:  # Arrow has no fixed-size list of size 0: empty variable-size lists instead
            lists = int(np.prod(dims[:level]))
            values = pa.ListArray.from_arrays(pa.array(np.zeros(lists + 1, np.int32)), values)
    return values


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)
