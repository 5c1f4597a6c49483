"""JSON text the way TF Serving writes it: its float format, its `_bytes` rule, its value printer.

Floats (§1.8): `%g` (six significant digits) when that parses back to the same value in the
tensor's precision, else `%.9g` (float32) / `%.17g` (float64); `.0` is appended when the text has
neither `.` nor `e`; non-finite values are the bare tokens NaN, Infinity, -Infinity.

For large float tensors the digits are computed with numpy (decimal mantissa and exponent per value,
then one character matrix per layout), which is what makes a 450,000-value response cost
milliseconds rather than a second; `format_float` is the one-value reference the vectorized path is
tested against.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

_PRECISION = {4: 9, 8: 17}  # itemsize -> digits that always round-trip
_STRINGS_PER_CHECK = 65536  # string values written between two looks at the deadline


def format_float(value: float, single: bool) -> str:
    """One float as TF Serving's WriteDecimal writes it (`single`: the tensor is float32)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = f"{value:g}"
    back = float(np.float32(text)) if single else float(text)
    if back != value:
        text = f"{value:.9g}" if single else f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def escape_string(raw: bytes) -> bytes:
    """A JSON string literal for raw bytes; TF Serving writes string tensors unvalidated."""
    out = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    if any(c < 0x20 for c in out):
        out = bytes(_escape_control(out))
    return b'"' + out + b'"'


def _escape_control(raw: bytes) -> bytearray:
    named = {0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r"}
    out = bytearray()
    for c in raw:
        if c < 0x20:
            out += named.get(c, b"\\u%04X" % c)
        else:
            out.append(c)
    return out


def b64_object(raw: bytes) -> bytes:
    return b'{"b64":"' + base64.b64encode(raw) + b'"}'


def nest(texts: Sequence[bytes], shape: tuple[int, ...]) -> bytes:
    """Per-value JSON texts (row-major) nested as lists of `shape`."""
    if not shape:
        return texts[0]
    groups: list[bytes] = list(texts)
    for dim in reversed(shape):
        if dim == 0:
            count = math.prod(shape[: shape.index(dim)]) if shape.index(dim) else 1
            groups = [b"[]"] * count
            continue
        groups = [b"[" + b",".join(groups[i : i + dim]) + b"]" for i in range(0, len(groups), dim)]
    return groups[0]


def array_json(array: np.ndarray, alias: str, deadline: Callable[[], None] | None = None) -> bytes | None:
    """The nested JSON of a tensor, or None for a dtype TF Serving cannot write. `deadline` is
    called between blocks of string values (it raises once the call's time is up)."""
    kind = array.dtype.kind
    if kind == "f" and array.dtype.itemsize in _PRECISION:
        return float_array_json(array)
    if kind in "iub" and array.dtype.itemsize <= 8 and array.dtype.names is None:
        if array.dtype.name not in _ORJSON_NATIVE:
            return None
        if array.ndim == 0:  # orjson writes a 0-d array as a list
            return orjson.dumps(array.item())
        return orjson.dumps(np.ascontiguousarray(array), option=orjson.OPT_SERIALIZE_NUMPY)
    if kind == "O":
        flat = array.reshape(-1).tolist()
        write = b64_object if alias.endswith("_bytes") else escape_string
        texts: list[bytes] = []
        for start in range(0, len(flat), _STRINGS_PER_CHECK):
            if deadline is not None and start:
                deadline()
            texts += [write(_as_bytes(v)) for v in flat[start : start + _STRINGS_PER_CHECK]]
        return nest(texts, array.shape)
    return None


_ORJSON_NATIVE = {"int8", "int16", "int32", "int64", "uint8", "uint32", "uint64", "bool"}


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("utf-8")


# -- vectorized float formatting --------------------------------------------------------------------

with np.errstate(over="ignore"):
    _POW10 = np.array([float(f"1e{k}") for k in range(-350, 351)])  # _POW10[k + 350] == 10.0**k


def _scale(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """a * 10**k, dividing for negative k so that |k| <= 22 stays one correctly rounded operation."""
    out = np.empty_like(a)
    up = k >= 0
    with np.errstate(over="ignore", invalid="ignore"):
        out[up] = a[up] * _POW10[np.minimum(k[up], 350) + 350]
        out[~up] = a[~up] / _POW10[np.minimum(-k[~up], 350) + 350]
    return out


def _mantissa(a: np.ndarray, digits: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, e) with M an integer of `digits` digits and a ≈ M * 10**(e - digits + 1)."""
    e = np.floor(np.log10(np.where(a == 0, 1.0, a))).astype(np.int64)
    m = np.rint(_scale(a, digits - 1 - e))
    for _ in range(2):  # log10 and rounding may be one off either way
        high = m >= 10.0**digits
        low = (m < 10.0 ** (digits - 1)) & (a != 0)
        if not (high.any() or low.any()):
            break
        e = e + high - low
        m = np.rint(_scale(a, digits - 1 - e))
    m[(a == 0) | ~np.isfinite(m)] = 0
    return m.astype(np.int64), e


def float_texts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Character matrix (n, width) of each value's text, 0-padded on the right, and the lengths."""
    single = values.dtype.itemsize == 4
    x = values.reshape(-1).astype(np.float64)
    n = x.size
    finite = np.isfinite(x)
    a = np.where(finite, np.abs(x), 0.0)
    digits = np.full(n, 6, dtype=np.int64)
    m, e = _mantissa(a, 6)
    with np.errstate(over="ignore", invalid="ignore"):
        back = _scale(m.astype(np.float64), e - 5)
        if single:
            back = back.astype(np.float32).astype(np.float64)
    retry = finite & (back != a)
    slow = np.zeros(n, dtype=bool)
    if retry.any():
        if single:
            m9, e9 = _mantissa(a[retry], 9)
            m[retry], e[retry], digits[retry] = m9, e9, 9
            with np.errstate(over="ignore", invalid="ignore"):
                check = _scale(m9.astype(np.float64), e9 - 8).astype(np.float32).astype(np.float64)
            slow[np.flatnonzero(retry)[check != a[retry]]] = True
        else:
            slow |= retry  # 17 digits are beyond float64 arithmetic: printf does those
    width = 26
    mat = np.zeros((n, width), dtype=np.uint8)
    lengths = np.zeros(n, dtype=np.int64)
    negative = np.signbit(x) & ~np.isnan(x)
    fast = finite & ~slow
    # strip trailing zeros: significant digits kept
    sig = digits.copy()
    mm = m.copy()
    for _ in range(17):
        strip = (mm % 10 == 0) & (sig > 1)
        if not strip.any():
            break
        mm[strip] //= 10
        sig[strip] -= 1
    prec = digits  # %g's P
    exp_form = (e < -4) | (e >= prec)
    key = np.where(exp_form, 1 << 20, 0) + ((e + 400) << 5) + sig
    key[~fast] = -1
    order = np.argsort(key, kind="stable")
    sorted_keys = key[order]
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [n]))
    for s, t in zip(starts.tolist(), ends.tolist(), strict=True):
        k = int(sorted_keys[s])
        if k < 0:
            continue
        rows = order[s:t]
        ex = k >= 1 << 20
        sg = k & 31
        ee = ((k & ((1 << 20) - 1)) >> 5) - 400
        chars = _layout(mm[rows], sg, ee, ex)
        neg = negative[rows]
        body_len = chars.shape[1]
        mat[rows, 1 : 1 + body_len] = chars
        mat[rows, 0] = np.where(neg, ord("-"), 0)
        lengths[rows] = body_len + neg
    for i in np.flatnonzero(~fast).tolist():
        text = format_float(float(values.reshape(-1)[i]), single).encode()
        mat[i, : len(text)] = np.frombuffer(text, dtype=np.uint8)
        lengths[i] = len(text)
    return mat, lengths


def _layout(mm: np.ndarray, sig: int, e: int, exp_form: bool) -> np.ndarray:
    """The text of |value| for values sharing one layout: `sig` digits (mantissa mm), exponent e."""
    digit_cols = np.empty((mm.size, sig), dtype=np.uint8)
    rest = mm.copy()
    for j in range(sig - 1, -1, -1):
        digit_cols[:, j] = (rest % 10).astype(np.uint8) + 48
        rest //= 10
    parts: list[np.ndarray | bytes] = []
    if exp_form:
        parts.append(digit_cols[:, :1])
        if sig > 1:
            parts += [b".", digit_cols[:, 1:]]
        parts.append(b"e%+03d" % e)
    elif e >= 0:
        if sig <= e + 1:
            parts += [digit_cols, b"0" * (e + 1 - sig) + b".0"]
        else:
            parts += [digit_cols[:, : e + 1], b".", digit_cols[:, e + 1 :]]
    else:
        parts += [b"0." + b"0" * (-e - 1), digit_cols]
    cols = []
    for p in parts:
        if isinstance(p, bytes):
            cols.append(np.broadcast_to(np.frombuffer(p, dtype=np.uint8), (mm.size, len(p))))
        else:
            cols.append(p)
    return np.concatenate(cols, axis=1)


def float_array_json(array: np.ndarray) -> bytes:
    """The nested JSON of a float32/float64 tensor, with TF Serving's float texts."""
    shape = array.shape
    n = array.size
    if n == 0:
        return nest([], shape) if shape else b"[]"
    mat, _ = float_texts(array)
    if not shape:
        return mat[0][mat[0] != 0].tobytes()
    rank = len(shape)
    # After value i: "]" for every axis that ends there, then "," and as many "[" (unless last).
    idx = np.arange(1, n + 1)
    ends = np.zeros(n, dtype=np.int64)
    block = 1
    for dim in reversed(shape):
        block *= dim
        ends += idx % block == 0
    sep_width = 2 * rank + 1
    sep = np.zeros((n, sep_width), dtype=np.uint8)
    col = np.arange(sep_width)
    close = col[None, :] < ends[:, None]
    sep[close] = ord("]")
    comma_at = ends.copy()
    last = np.zeros(n, dtype=bool)
    last[-1] = True
    has_comma = ~last
    rows = np.flatnonzero(has_comma)
    sep[rows, comma_at[rows]] = ord(",")
    opening = (
        (col[None, :] > comma_at[:, None]) & (col[None, :] <= 2 * comma_at[:, None]) & has_comma[:, None]
    )
    sep[opening] = ord("[")
    full = np.concatenate((mat, sep), axis=1)
    return b"[" * rank + full[full != 0].tobytes()


# -- fast path: orjson for numeric tensors ------------------------------------------------------------
#
# orjson writes float32/float64 arrays with the shortest text that reads back as the same value
# (Ryu), and whole numbers with ".0", which is all §1.8 asks of the text; it is 10-20x faster than
# the %g writer above. It writes NaN and ±inf as null, so non-finite values are swapped for sentinel
# values first and their texts replaced by the tokens afterwards. A sentinel's text is in exponent
# form with one digit before the point ("1.2345679e+38"), so the only other token that can contain
# it is its negation; neither ±sentinel may occur in the tensors, else the exact writer is used.

_OPT = orjson.OPT_SERIALIZE_NUMPY
_TOKENS = (b"NaN", b"Infinity", b"-Infinity")
_SENTINELS: dict[int, tuple[np.floating[Any], ...]] = {
    4: (np.float32(1.2345679e38), np.float32(2.2345678e38), np.float32(3.2345679e38)),
    8: (
        np.float64(1.2345678901234567e300),
        np.float64(2.2345678901234566e300),
        np.float64(3.2345678901234567e300),
    ),
}
_NUMERIC_DTYPES = frozenset(np.dtype(n) for n in _ORJSON_NATIVE | {"float32", "float64"})


def orjson_ready(array: np.ndarray) -> np.ndarray | None:
    """`array` as a C-contiguous native-endian array orjson can write, or None (strings, half, ...)."""
    dtype = array.dtype
    if dtype in _NUMERIC_DTYPES and array.flags.c_contiguous:
        return array
    if dtype.names is not None or dtype.kind not in "biuf":
        return None
    native = dtype.newbyteorder("=")
    if native not in _NUMERIC_DTYPES:
        return None
    return array.astype(native, order="C")  # (not ascontiguousarray: it turns 0-d into 1-d)


_SMALL = 4096  # float values up to which writing first, then searching for `null`, is cheaper


def dumps_numeric(arrays: Sequence[np.ndarray], build: Any, keys: Sequence[bytes]) -> bytes | None:
    """orjson's text of `build(arrays)` with NaN/Infinity/-Infinity tokens, or None if a sentinel collides.

    `arrays` come from `orjson_ready`; `build` turns them into the document (0-d arrays must be
    passed as numpy scalars, `array[()]`); `keys` are the object keys that will appear in the text.
    """
    floats = [i for i, a in enumerate(arrays) if a.dtype.kind == "f" and a.size]
    if not floats:
        return orjson.dumps(build(arrays), option=_OPT)
    # orjson writes a non-finite float as `null`, the only way `null` gets into this text other than
    # inside a key: without one, the text is right as written. A search of the text is ~50x cheaper
    # than np.isfinite(...).all() per array on the 1-row predicts that dominate serving (bench/rest.py).
    if sum(arrays[i].size for i in floats) <= _SMALL:
        text = orjson.dumps(build(arrays), option=_OPT)
        if b"null" not in text:
            return text
    bad = [i for i in floats if not np.isfinite(arrays[i]).all()]
    if not bad:
        return orjson.dumps(build(arrays), option=_OPT)
    used: set[tuple[int, int]] = set()  # (itemsize, 0 NaN / 1 +inf / 2 -inf)
    replaced = list(arrays)
    for i in bad:
        a = arrays[i]
        sentinels = _SENTINELS[a.dtype.itemsize]
        b = a.copy()
        for kind, where in enumerate((np.isnan(a), a == np.inf, a == -np.inf)):
            if where.any():
                b[where] = sentinels[kind]
                used.add((a.dtype.itemsize, kind))
        replaced[i] = b
    for size, kind in used:
        sentinel = _SENTINELS[size][kind]
        for i in floats:
            a = arrays[i]
            if a.dtype.itemsize == size and (np.abs(a) == sentinel).any():
                return None
    text = orjson.dumps(build(replaced), option=_OPT)
    for size, kind in sorted(used):
        sentinel_text = orjson.dumps(_SENTINELS[size][kind], option=_OPT)
        if any(sentinel_text in k for k in keys):
            return None
        text = text.replace(sentinel_text, _TOKENS[kind])
    return text
