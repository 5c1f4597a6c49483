"""TFRecord files without TensorFlow: the container of TF Serving's warmup requests.

Each record is `uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)`,
little-endian (TensorFlow's `record_writer.cc`). Both CRCs are checked, so a truncated or corrupted
file is reported as DATA_LOSS with the offset of the bad record (TensorFlow's texts) instead of being
parsed into garbage requests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from sigserve.errors import Code, SigserveError

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_CHUNK = 1 << 20


def _make_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _make_table()


def crc32c_python(data: bytes, crc: int = 0) -> int:
    """CRC-32C of `data` (continuing from `crc`); crc32c(b"123456789") == 0xE3069283.

    About 11 MB/s: fine for warmup files, too slow for scoring data sets (`sigserve score`)."""
    table = _TABLE
    c = crc ^ _U32
    for byte in data:
        c = table[(c ^ byte) & 0xFF] ^ (c >> 8)
    return c ^ _U32


class Crc32c(Protocol):
    def __call__(self, data: bytes, crc: int = 0) -> int: ...


def _fast_crc32c() -> Crc32c | None:
    """google-crc32c's C implementation (~400x faster), when installed (the `ray` extra has it)."""
    try:
        import google_crc32c
    except ImportError:
        return None
    if getattr(google_crc32c, "implementation", "") != "c":
        return None

    def crc32c(data: bytes, crc: int = 0) -> int:
        return int(google_crc32c.extend(crc, data))

    return crc32c


crc32c: Crc32c = _fast_crc32c() or crc32c_python


def mask(crc: int) -> int:
    """TensorFlow's masked CRC: rotate right by 15 and add a constant (so CRCs of CRCs stay strong)."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


def encode(data: bytes) -> bytes:
    """One record, as TensorFlow's TFRecordWriter writes it."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", mask(crc32c(header))) + data + struct.pack("<I", mask(crc32c(data)))


def _data_loss(message: str) -> SigserveError:
    return SigserveError(Code.DATA_LOSS, message)


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    """Up to `n` bytes, read in chunks: a corrupt length cannot make us allocate it up front."""
    if n <= _CHUNK:
        return stream.read(n)
    parts = []
    left = n
    while left:
        part = stream.read(min(left, _CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_records(stream: BinaryIO) -> Iterator[bytes]:
    """The records of a TFRecord stream, in order. DATA_LOSS `truncated record at <offset>` or
    `corrupted record at <offset>` when the bytes are not a well-formed TFRecord file."""
    offset = 0
    while True:
        header = stream.read(12)
        if not header:
            return
        if len(header) < 12:
            raise _data_loss(f"truncated record at {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        (masked,) = struct.unpack("<I", header[8:])
        if unmask(masked) != crc32c(header[:8]):
            raise _data_loss(f"corrupted record at {offset}")
        data = _read_exactly(stream, length)
        footer = stream.read(4)
        if len(data) < length or len(footer) < 4:
            raise _data_loss(f"truncated record at {offset}")
        (masked,) = struct.unpack("<I", footer)
        if unmask(masked) != crc32c(data):
            raise _data_loss(f"corrupted record at {offset}")
        yield data
        offset += 12 + length + 4
