"""TF Serving's JSON dialect, parsed the way its rapidjson settings parse it.

What differs from Python's `json` and from orjson, and why this module exists:
* `NaN`, `Infinity`, `-Infinity` and rapidjson's `Inf` / `-Inf` are numbers;
* parsing stops after the first complete value (trailing bytes are ignored);
* nesting deeper than `max_depth` (default 100, `serve --max_request_json_depth`) is refused with
  the offset of the bracket that goes too deep, before the document costs memory: rapidjson recurses
  without a limit, and a body nested millions deep would otherwise build millions of Python lists;
* integer literals too long for any number type are refused as rapidjson refuses them ("Number too
  big to be stored in double."), never handed to `int()` (which refuses more than 4,300 digits);
* with a `deadline` (a callable that raises once the call's time is up), long documents check it
  every few thousand values, so a call already answered 504 stops parsing soon after;
* on duplicate object keys the first wins (rapidjson's FindMember);
* errors are rapidjson's English texts with a byte offset;
* an integer literal is an `int` (if it fits 64 bits, signed or unsigned), anything written with a
  fraction or an exponent is a `float`: TF Serving tells int64 from float features by this.

Large numeric arrays, the common payload, are handed in one piece to orjson (whose number grammar is
JSON's, with the same int/float split); anything it refuses is parsed token by token here, so the
result and the error are the same either way. A predict body's tensors go one step further when
pysimdjson is installed: `_jsonnum` parses them without a Python object per number.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from sigserve.codec import DEFAULT_MAX_JSON_DEPTH, _jsonnum
from sigserve.errors import Code, SigserveError

_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1
_MAX_INT_DIGITS = 20  # len(str(_UINT64_MAX)): a longer integer literal can only be a double
# How often (in values) a parse with a deadline looks at the clock: a few milliseconds of work.
DEADLINE_STRIDE = 4096
_DEPTH_WINDOW = 1 << 18  # bytes of a numeric array looked at at once for its nesting depth
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]")  # what `translate` deletes

_WS = frozenset(b" \t\n\r")
_INT_PART = re.compile(rb"-?(?:0|[1-9][0-9]*)")
_DIGITS = re.compile(rb"[0-9]+")
_WS_RUN = re.compile(rb"[ \t\n\r]*")
_STRING_PLAIN = re.compile(rb'[^"\\\x00-\x1f]*')
# Bytes that end the region a numeric array can occupy (strings and objects).
_REGION_STOPS = (b'"', b"{", b"}")

ERR_EMPTY = "The document is empty."
ERR_INVALID_VALUE = "Invalid value."
ERR_MISS_NAME = "Missing a name for object member."
ERR_MISS_COLON = "Missing a colon after a name of object member."
ERR_MISS_COMMA_OBJECT = "Missing a comma or '}' after an object member."
ERR_MISS_COMMA_ARRAY = "Missing a comma or ']' after an array element."
ERR_HEX = "Incorrect hex digit after \\u escape in string."
ERR_SURROGATE = "The surrogate pair in string is invalid."
ERR_ESCAPE = "Invalid escape character in string."
ERR_QUOTE = "Missing a closing quotation mark in string."
ERR_ENCODING = "Invalid encoding in string."
ERR_TOO_BIG = "Number too big to be stored in double."
ERR_FRACTION = "Miss fraction part in number."
ERR_EXPONENT = "Miss exponent in number."

_ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}


class NumList(list):  # type: ignore[type-arg]
    """A JSON array of numbers only (any nesting), parsed in one piece.

    `has_float` tells whether any element was written with a fraction, exponent (or not at all as
    an integer), so an integer tensor can be built without looking at each element.
    """

    __slots__ = ("has_float", "has_literal")

    has_float: bool
    has_literal: bool


Deadline = Callable[[], None]  # raises (DEADLINE_EXCEEDED) once the call's time is up


def parse_error(message: str, offset: int) -> SigserveError:
    return SigserveError(Code.INVALID_ARGUMENT, f"JSON Parse error: {message} at offset: {offset}")


def depth_error(max_depth: int, offset: int) -> SigserveError:
    return parse_error(
        f"The document nests arrays and objects more than {max_depth} levels deep (sigserve's limit, "
        "--max_request_json_depth; a tensor of rank N needs N + 1 to N + 4 levels)",
        offset,
    )


def loads(
    body: bytes,
    tensors: bool = False,
    *,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
    deadline: Deadline | None = None,
) -> Any:
    """The first JSON value in `body` (TF Serving's dialect), or SigserveError.

    With `tensors`, a large numeric array that is the value of a top-level `instances` or `inputs`
    key, or of a key of a top-level `inputs` object, may be left as `_jsonnum.Numbers` (valid,
    parsed in one piece) for the caller to convert once it knows the dtype. `max_depth` and
    `deadline`: see the module docstring.
    """
    if not body:
        raise SigserveError(Code.INVALID_ARGUMENT, "JSON Parse error: The document is empty")
    return _Parser(bytes(body), tensors and _jsonnum.available(), max_depth, deadline).parse()


def nesting_overflow(data: bytes, start: int, end: int, budget: int) -> int | None:
    """The offset of the first `[` in `data[start:end]` that opens a level deeper than `budget`, or
    None. The text holds no strings (their brackets would count): a numeric array's.

    Read a window at a time, brackets only (`translate` drops the rest in one C pass), so a
    multi-megabyte tensor costs a few milliseconds and an attack is found in its first window.
    """
    depth = 0
    for at in range(start, end, _DEPTH_WINDOW):
        stop = min(at + _DEPTH_WINDOW, end)
        brackets = data[at:stop].translate(None, _NOT_BRACKETS)
        if depth + brackets.count(b"[") <= budget:
            depth += len(brackets) - 2 * brackets.count(b"]")
            continue
        steps = (np.frombuffer(brackets, dtype=np.uint8) == 0x5B).view(np.int8) * np.int8(2) - np.int8(1)
        levels = np.cumsum(steps, dtype=np.int32) + np.int32(depth)
        over = np.flatnonzero(levels > budget)
        if over.size:
            window = np.frombuffer(data, dtype=np.uint8, count=stop - at, offset=at)
            positions = np.flatnonzero((window == 0x5B) | (window == 0x5D))
            return at + int(positions[int(over[0])])
        depth = int(levels[-1])
    return None


def _tensor_slot(stack: list[list[Any]]) -> bool:
    """Whether the value starting now is a predict body's tensor (see `loads`)."""
    if len(stack) == 1:
        return type(stack[0][0]) is dict and stack[0][1] in ("instances", "inputs")
    return (
        len(stack) == 2
        and type(stack[0][0]) is dict
        and stack[0][1] == "inputs"
        and type(stack[1][0]) is dict
    )


class _Parser:
    def __init__(
        self,
        data: bytes,
        tensors: bool = False,
        max_depth: int = DEFAULT_MAX_JSON_DEPTH,
        deadline: Deadline | None = None,
    ) -> None:
        self.data = data
        self.n = len(data)
        self.tensors = tensors
        self.max_depth = max_depth
        self.deadline = deadline
        self.no_fast_before = 0  # numeric-region attempts failed up to here: don't retry inside

    def skip_ws(self, i: int) -> int:
        data = self.data
        if i < self.n and data[i] in _WS:
            m = _WS_RUN.match(data, i)
            assert m is not None
            return m.end()
        return i

    def parse(self) -> Any:
        data, n = self.data, self.n
        i = self.skip_ws(0)
        if i >= n:
            raise parse_error(ERR_EMPTY, i)
        # Explicit stack of open containers: [container, pending key or None].
        stack: list[list[Any]] = []
        max_depth = self.max_depth
        deadline = self.deadline
        countdown = DEADLINE_STRIDE
        while True:
            if deadline is not None:
                countdown -= 1
                if not countdown:
                    deadline()
                    countdown = DEADLINE_STRIDE
            # -- a value starts at i (after whitespace) --
            i = self.skip_ws(i)
            c = data[i] if i < n else -1
            value: Any
            if c == 0x7B:  # {
                if len(stack) >= max_depth:
                    raise depth_error(max_depth, i)
                i = self.skip_ws(i + 1)
                if i < n and data[i] == 0x7D:
                    value, i = {}, i + 1
                else:
                    key, i = self.key(i)
                    stack.append([{}, key])
                    continue
            elif c == 0x5B:  # [
                if len(stack) >= max_depth:
                    raise depth_error(max_depth, i)
                fast = self.numeric_array(i, max_depth - len(stack), self.tensors and _tensor_slot(stack))
                if fast is not None:
                    value, i = fast
                else:
                    i = self.skip_ws(i + 1)
                    if i < n and data[i] == 0x5D:
                        value, i = [], i + 1
                    else:
                        stack.append([[], None])
                        continue
            else:
                value, i = self.scalar(i, c)
            # -- attach the finished value, then close as many containers as end here --
            while True:
                if not stack:
                    return value  # stop when done: whatever follows is ignored
                top = stack[-1]
                container = top[0]
                i = self.skip_ws(i)
                c = data[i] if i < n else -1
                if type(container) is list:
                    container.append(value)
                    if c == 0x2C:  # ,
                        i += 1
                        break
                    if c != 0x5D:  # ]
                        raise parse_error(ERR_MISS_COMMA_ARRAY, i)
                else:
                    container.setdefault(top[1], value)  # first occurrence of a key wins
                    if c == 0x2C:
                        top[1], i = self.key(self.skip_ws(i + 1))
                        break
                    if c != 0x7D:  # }
                        raise parse_error(ERR_MISS_COMMA_OBJECT, i)
                stack.pop()
                value, i = container, i + 1

    def key(self, i: int) -> tuple[str, int]:
        """An object member's name and the colon after it; `i` is at the opening quote."""
        if i >= self.n or self.data[i] != 0x22:
            raise parse_error(ERR_MISS_NAME, i)
        name, i = self.string(i)
        i = self.skip_ws(i)
        if i >= self.n or self.data[i] != 0x3A:
            raise parse_error(ERR_MISS_COLON, i)
        return name, i + 1

    def scalar(self, i: int, c: int) -> tuple[Any, int]:
        data = self.data
        if c == 0x22:
            return self.string(i)
        if c == 0x74:  # t
            return True, self.literal(i, b"true")
        if c == 0x66:  # f
            return False, self.literal(i, b"false")
        if c == 0x6E:  # n
            return None, self.literal(i, b"null")
        if c == 0x2D or 0x30 <= c <= 0x39 or c in (0x4E, 0x49):  # - digit N I
            return self.number(i)
        raise parse_error(ERR_INVALID_VALUE, i if c != -1 else len(data))

    def literal(self, i: int, word: bytes) -> int:
        for k, ch in enumerate(word):
            if i + k >= self.n or self.data[i + k] != ch:
                raise parse_error(ERR_INVALID_VALUE, i + k)
        return i + len(word)

    def number(self, start: int) -> tuple[Any, int]:
        data = self.data
        m = _INT_PART.match(data, start)
        if m is None:
            return self.nan_or_inf(start)
        i = m.end()
        is_float = False
        if i < self.n and data[i] == 0x2E:  # .
            d = _DIGITS.match(data, i + 1)
            if d is None:
                raise parse_error(ERR_FRACTION, i + 1)
            i, is_float = d.end(), True
        if i < self.n and data[i] in (0x65, 0x45):  # e E
            i += 1
            if i < self.n and data[i] in (0x2B, 0x2D):
                i += 1
            d = _DIGITS.match(data, i)
            if d is None:
                raise parse_error(ERR_EXPONENT, i)
            i, is_float = d.end(), True
        text = data[start:i]
        if not is_float and m.end() - start - (data[start] == 0x2D) <= _MAX_INT_DIGITS:
            value = int(text)
            if _INT64_MIN <= value <= _UINT64_MAX:
                return value, i
        as_float = float(text)
        if as_float in (float("inf"), float("-inf")):
            raise parse_error(ERR_TOO_BIG, start)
        return as_float, i

    def nan_or_inf(self, start: int) -> tuple[float, int]:
        data, i = self.data, start
        negative = data[i] == 0x2D
        if negative:
            i += 1
        if data.startswith(b"NaN", i):
            return float("nan"), i + 3
        if data.startswith(b"Inf", i):
            i += 3
            if i < self.n and data[i] == 0x69:  # "Infinity" or nothing
                if not data.startswith(b"inity", i):
                    raise parse_error(ERR_INVALID_VALUE, i)
                i += 5
            return (float("-inf") if negative else float("inf")), i
        # rapidjson stops at the first byte that cannot continue the number
        k = i
        for ch in b"NaN" if i < self.n and data[i] == 0x4E else b"Infinity":
            if k >= self.n or data[k] != ch:
                break
            k += 1
        raise parse_error(ERR_INVALID_VALUE, k)

    def string(self, start: int) -> tuple[str, int]:
        """A string token at `start` (the opening quote) -> (text, index after the closing quote)."""
        data = self.data
        i = start + 1
        m = _STRING_PLAIN.match(data, i)
        assert m is not None
        end = m.end()
        if end < self.n and data[end] == 0x22:
            return self.utf8(data[i:end], i), end + 1
        parts: list[str] = []
        while True:
            m = _STRING_PLAIN.match(data, i)
            assert m is not None
            end = m.end()
            parts.append(self.utf8(data[i:end], i))
            if end >= self.n:
                raise parse_error(ERR_QUOTE, self.n)
            c = data[end]
            if c == 0x22:
                return "".join(parts), end + 1
            if c != 0x5C:  # a control character
                raise parse_error(ERR_QUOTE if c == 0 else ERR_ENCODING, end)
            text, i = self.escape(end)
            parts.append(text)

    def escape(self, at: int) -> tuple[str, int]:
        data = self.data
        if at + 1 >= self.n:
            raise parse_error(ERR_QUOTE, self.n)
        c = data[at + 1]
        simple = _ESCAPES.get(c)
        if simple is not None:
            return simple, at + 2
        if c != 0x75:  # u
            raise parse_error(ERR_ESCAPE, at)
        code = self.hex4(at + 2, at)
        i = at + 6
        if 0xD800 <= code <= 0xDBFF:
            if not data.startswith(b"\\u", i):
                raise parse_error(ERR_SURROGATE, at)
            low = self.hex4(i + 2, at)
            if not 0xDC00 <= low <= 0xDFFF:
                raise parse_error(ERR_SURROGATE, at)
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), i + 6
        if 0xDC00 <= code <= 0xDFFF:
            raise parse_error(ERR_SURROGATE, at)
        return chr(code), i

    def hex4(self, i: int, at: int) -> int:
        digits = self.data[i : i + 4]
        if len(digits) != 4 or not all(ch in b"0123456789abcdefABCDEF" for ch in digits):
            raise parse_error(ERR_HEX, at)
        return int(digits, 16)

    def utf8(self, raw: bytes, offset: int) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            # TF Serving passes such bytes through; a Python server cannot hold them in a str key,
            # and a client sending them is almost certainly confused about its encoding.
            raise parse_error(ERR_ENCODING, offset + e.start) from None

    def numeric_array(self, i: int, budget: int, tensor: bool = False) -> tuple[Any, int] | None:
        """The array at `i` in one piece, when it holds only numbers, booleans and nulls.

        A `tensor` array is first offered to `_jsonnum.scan`, which declines anything unusual.
        `budget`: how many levels the array may nest (what is left of `max_depth`); a deeper one
        is refused here, before it is parsed.
        """
        if i < self.no_fast_before:
            return None
        data = self.data
        if i + budget < self.n and data[i + budget] == 0x5B and data.startswith(b"[" * (budget + 1), i):
            # the plain attack, found before any scan
            raise depth_error(self.max_depth, i + budget)
        stop = self.n
        for ch in _REGION_STOPS:
            k = data.find(ch, i, stop)
            if k != -1:
                stop = k
        end = data.rfind(b"]", i, stop)
        if end == -1:
            self.no_fast_before = stop
            return None
        if tensor:
            numbers = _jsonnum.scan(data, i, end + 1)
            if numbers is not None and len(numbers.shape) <= budget:
                return numbers, end + 1
        if end + 1 - i > 2 * budget:  # (n bytes of brackets nest at most n / 2 deep)
            deepest = nesting_overflow(data, i, end + 1, budget)
            if deepest is not None:
                raise depth_error(self.max_depth, deepest)
        region = data[i : end + 1]
        try:
            parsed = orjson.loads(region)
        except orjson.JSONDecodeError:
            self.no_fast_before = stop
            return None
        result = NumList(parsed)
        result.has_float = any(ch in region for ch in (b".", b"e", b"E"))
        result.has_literal = any(ch in region for ch in (b"t", b"f", b"n"))
        return result, end + 1
