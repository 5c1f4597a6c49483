"""One V2 tensor's shape and contents ⇄ numpy, for every framing: JSON `data`, binary data (REST's
binary extension and gRPC's raw contents) and the classification extension.

Every check is against what the request itself carries: a shape must account for exactly the
elements sent, so no request can make the server allocate more than its own size (a shape of 2^60
elements with 4 bytes of data is refused before anything is allocated). Binary data is decoded with
`np.frombuffer` views over the request's bytes: no copy, no Python object per element.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson

from sigserve.codec._jsonparse import NumList
from sigserve.codec.json import value_to_string
from sigserve.codec.v2 import datatypes
from sigserve.codec.v2.datatypes import BOOL, BYTES
from sigserve.errors import Code, SigserveError

MAX_RANK = 64  # numpy's limit on dimensions
MAX_ELEMENTS = (1 << 62) - 1  # beyond any real tensor; keeps the arithmetic below exact and cheap

_LENGTH = struct.Struct("<I")
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "INT8": (-(1 << 7), (1 << 7) - 1),
    "INT16": (-(1 << 15), (1 << 15) - 1),
    "INT32": (-(1 << 31), (1 << 31) - 1),
    "INT64": (-(1 << 63), (1 << 63) - 1),
    "UINT8": (0, (1 << 8) - 1),
    "UINT16": (0, (1 << 16) - 1),
    "UINT32": (0, (1 << 32) - 1),
    "UINT64": (0, (1 << 64) - 1),
}
FLOATS = frozenset({"FP16", "FP32", "FP64", "BF16"})


def invalid(message: str) -> SigserveError:
    return SigserveError(Code.INVALID_ARGUMENT, message)


def shape_text(shape: tuple[int, ...] | list[Any]) -> str:
    shown = list(shape[:8])
    return "[" + ", ".join(str(d) for d in shown) + (", ...]" if len(shape) > 8 else "]")


def check_shape(shape: Any, what: str) -> tuple[int, ...]:
    """The dims of a tensor's `shape`: a list of at most 64 non-negative integers whose product is
    representable. `what` names the tensor in errors ("input 'x'")."""
    if isinstance(shape, (str, bytes, dict)) or not hasattr(shape, "__len__"):
        raise invalid(f"{what}: 'shape' must be a list of dimensions, e.g. [2, 3]")
    if len(shape) > MAX_RANK:
        raise invalid(f"{what}: shape has {len(shape)} dimensions; at most {MAX_RANK} are supported")
    dims: list[int] = []
    count = 1
    for d in shape:
        if type(d) is not int:
            if isinstance(d, float) and d.is_integer():  # JSON writers may print 2.0
                d = int(d)
            else:
                raise invalid(f"{what}: shape {brief(shape)} holds {brief(d)}, not an integer")
        if d < 0:
            raise invalid(f"{what}: shape {shape_text(list(shape))} has a negative dimension")
        if d > MAX_ELEMENTS or (d and count > MAX_ELEMENTS // d):
            raise invalid(
                f"{what}: shape {shape_text(list(shape))} has more elements than any tensor can hold "
                f"(more than 2^62)"
            )
        if d:
            count *= d
        dims.append(d)
    return tuple(dims)


def brief(value: Any) -> str:
    """A JSON value for an error message, cut short (printing stops at the limit, whatever the size)."""
    return value_to_string(value, 80)


def element_count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


# -- binary data -------------------------------------------------------------------------------------


def from_binary(data: bytes | memoryview, datatype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A tensor from its binary form (a view over `data`, read-only, except BYTES)."""
    n = element_count(shape)
    if datatype == BYTES:
        return split_bytes(data, n, what).reshape(shape)
    wire = datatypes.wire_dtype(datatype)
    assert wire is not None
    expected = n * wire.itemsize
    if len(data) != expected:
        raise invalid(
            f"{what}: a {datatype} tensor of shape {shape_text(shape)} takes {expected} bytes of binary "
            f"data, but {len(data)} were sent"
        )
    if datatype == BOOL:
        raw = np.frombuffer(data, dtype=np.uint8)
        if raw.size and int(raw.max()) > 1:
            raise invalid(f"{what}: BOOL elements must be bytes 0 (false) or 1 (true)")
        return raw.view(np.bool_).reshape(shape)
    array = np.frombuffer(data, dtype=wire)
    native = array.dtype.newbyteorder("=")
    if array.dtype != native:  # only on big-endian hosts
        array = array.astype(native)
    return array.reshape(shape)


def split_bytes(data: bytes | memoryview, count: int, what: str) -> np.ndarray:
    """`count` BYTES elements, each a 4-byte little-endian length then that many bytes, filling `data`
    exactly."""
    size = len(data)
    if count > size // 4:
        raise invalid(
            f"{what}: {count} BYTES elements need at least {4 * count} bytes (a 4-byte length each), "
            f"but {size} were sent"
        )
    out = np.empty(count, dtype=object)
    view = memoryview(data)
    offset = 0
    unpack = _LENGTH.unpack_from
    for i in range(count):
        if offset + 4 > size:
            raise invalid(f"{what}: binary data ends inside the length of BYTES element {i}")
        (length,) = unpack(view, offset)
        offset += 4
        if length > size - offset:
            raise invalid(f"{what}: BYTES element {i} claims {length} bytes, but only {size - offset} remain")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != size:
        raise invalid(
            f"{what}: {size - offset} bytes of binary data are left after its {count} BYTES elements"
        )
    return out


def bytes_elements(array: np.ndarray, what: str) -> list[bytes]:
    """A BYTES tensor's elements (bytes, or str written as UTF-8), flat."""
    return [_element_bytes(value, what) for value in array.reshape(-1).tolist()]


def join_bytes(array: np.ndarray, what: str) -> bytes:
    """BYTES elements in their binary form: each length-prefixed, concatenated."""
    pack = _LENGTH.pack
    return b"".join(pack(len(raw)) + raw for raw in bytes_elements(array, what))


def _element_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        if len(value) > 0xFFFFFFFF:
            raise invalid(f"{what}: a BYTES element is larger than 4 GiB, which V2 cannot carry")
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise invalid(f"{what}: a BYTES tensor holds {type(value).__name__}, not bytes")


def to_binary(array: np.ndarray, datatype: str, what: str) -> bytes | np.ndarray:
    """The binary form of a tensor: BYTES joined, anything else a uint8 view of its little-endian
    elements (a buffer that `bytes.join` and sockets take without another copy)."""
    if datatype == BYTES:
        return join_bytes(array, what)
    wire = datatypes.wire_dtype(datatype)
    assert wire is not None
    flat = np.ascontiguousarray(array.reshape(-1))
    if flat.dtype != wire:
        flat = flat.astype(wire)
    return flat.view(np.uint8)


# -- JSON data ---------------------------------------------------------------------------------------


def from_json(data: Any, datatype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A tensor from JSON `data`: nested in the tensor's shape or flat, row-major either way."""
    n = element_count(shape)
    if not isinstance(data, list):
        data = [data]  # a scalar for a one-element tensor
    fast = _numeric(data, datatype, n, what)
    if fast is not None:
        return fast.reshape(shape)
    leaves = _leaves(data, n, what)
    return _convert(leaves, datatype, what).reshape(shape)


def _count_error(what: str, n: int, got: int | str) -> SigserveError:
    return invalid(f"{what}: the shape holds {n} elements, but 'data' has {got}")


def _numeric(data: Any, datatype: str, n: int, what: str) -> np.ndarray | None:
    """A numbers-only array parsed in one piece, converted by numpy; None for the general path."""
    if type(data) is not NumList or data.has_literal or datatype in (BOOL, BYTES):
        return None
    bounds = _INT_BOUNDS.get(datatype)
    try:
        if bounds is None:
            values = np.array(data, dtype=np.float64)
        elif data.has_float:
            return None  # the general path names the offending element
        else:
            values = np.array(data, dtype=np.uint64 if datatype == "UINT64" else np.int64)
    except (ValueError, OverflowError, TypeError):
        return None  # ragged, or an integer out of 64-bit range: the general path explains
    if values.dtype == object:
        return None
    if values.size != n:
        raise _count_error(what, n, values.size)
    values = values.reshape(-1)
    if bounds is not None and values.size:
        if int(values.min()) < bounds[0] or int(values.max()) > bounds[1]:
            return None
    return _cast(values, datatype)


def _leaves(data: list[Any], n: int, what: str) -> list[Any]:
    """Every non-list value in `data`, depth-first in document order; at most n + 1 are collected."""
    leaves: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
            continue
        if isinstance(item, list):
            if len(stack) > MAX_RANK:
                raise invalid(f"{what}: 'data' nests lists more than {MAX_RANK} levels deep")
            stack.append(iter(item))
            continue
        leaves.append(item)
        if len(leaves) > n:
            raise _count_error(what, n, "more")
    if len(leaves) != n:
        raise _count_error(what, n, len(leaves))
    return leaves


_END = object()


def _convert(leaves: list[Any], datatype: str, what: str) -> np.ndarray:
    if datatype == BYTES:
        out = np.empty(len(leaves), dtype=object)
        for i, v in enumerate(leaves):
            if not isinstance(v, str):
                raise _type_error(what, datatype, v)
            out[i] = v.encode("utf-8", "surrogatepass")
        return out
    if datatype == BOOL:
        for v in leaves:
            if type(v) is not bool:
                raise _type_error(what, datatype, v)
        return np.array(leaves, dtype=np.bool_)
    bounds = _INT_BOUNDS.get(datatype)
    if bounds is not None:
        low, high = bounds
        for v in leaves:
            if type(v) is not int or not low <= v <= high:
                raise _type_error(what, datatype, v)
        values = np.array(leaves, dtype=np.uint64 if datatype == "UINT64" else np.int64)
        return _cast(values, datatype)
    for v in leaves:
        if type(v) is not float and type(v) is not int:
            raise _type_error(what, datatype, v)
    try:
        values = np.array(leaves, dtype=np.float64)
    except OverflowError:
        raise invalid(f"{what}: a number in 'data' is too large for {datatype}") from None
    return _cast(values, datatype)


def _cast(values: np.ndarray, datatype: str) -> np.ndarray:
    target = datatypes.numpy_dtype(datatype)
    if values.dtype == target:
        return values
    with np.errstate(over="ignore"):
        return values.astype(target)


def _type_error(what: str, datatype: str, value: Any) -> SigserveError:
    if datatype in _INT_BOUNDS and type(value) is int:
        low, high = _INT_BOUNDS[datatype]
        return invalid(f"{what}: {value} is outside the range of {datatype} ({low} to {high})")
    expected = {BYTES: "strings", BOOL: "true or false"}.get(
        datatype, "integers" if datatype in _INT_BOUNDS else "numbers"
    )
    return invalid(f"{what}: {datatype} 'data' must hold {expected}, not {brief(value)}")


def to_json(array: np.ndarray, datatype: str, what: str) -> bytes:
    """The flat JSON `data` text of a tensor: floats as the shortest text that reads back as the same
    value, BYTES as UTF-8 strings. JSON has no NaN or Infinity: those are written as null, as KServe
    does, so that every JSON parser reads the answer (binary data carries them exactly)."""
    flat = array.reshape(-1)
    if datatype == BYTES:
        try:
            return orjson.dumps([_element_bytes(v, what).decode("utf-8") for v in flat.tolist()])
        except UnicodeDecodeError:
            raise invalid(
                f"{what} holds bytes that are not UTF-8, which JSON cannot carry: ask for it as binary "
                'data (output parameter "binary_data": true, or request parameter '
                '"binary_data_output": true)'
            ) from None
    if datatype == "BF16":
        flat = flat.astype(np.float32)
    return orjson.dumps(np.ascontiguousarray(flat), option=orjson.OPT_SERIALIZE_NUMPY)


# -- the classification extension ----------------------------------------------------------------------


def classify(array: np.ndarray, count: int, what: str) -> np.ndarray:
    """Triton's classification extension: the `count` highest values of each batch row (the first
    dimension; a 1-D tensor is one row) as BYTES "<value>:<index>", highest first, ties by index."""
    if datatypes.from_numpy(array.dtype) == "BF16":
        array = array.astype(np.float32)
    if array.dtype.kind not in "biuf":
        raise invalid(f"{what}: the classification parameter needs a numeric output, not {array.dtype}")
    if array.ndim == 0:
        raise invalid(f"{what}: the classification parameter needs an output with a class dimension")
    batched = array.ndim > 1
    rows = array.reshape(array.shape[0], -1) if batched else array.reshape(1, -1)
    width = rows.shape[1]
    k = min(count, width)
    # Highest first, equal values by lower index: a stable ascending sort of the mirrored rows,
    # read backwards, orders ties by mirrored index descending, i.e. by index ascending.
    order = (width - 1) - np.argsort(rows[:, ::-1], axis=1, kind="stable")[:, ::-1][:, :k]
    out = np.empty((rows.shape[0], k), dtype=object)
    for r in range(rows.shape[0]):
        for c, index in enumerate(order[r].tolist()):
            out[r, c] = f"{_value_text(rows[r, index])}:{index}".encode()
    return out if batched else out.reshape(k)


def _value_text(value: Any) -> str:
    """The shortest text that reads back as the same value in the output's precision ("3.3", "10")."""
    if isinstance(value, np.floating):
        return str(value).removesuffix(".0")
    if isinstance(value, np.bool_):
        return "1" if value else "0"
    return str(int(value))
