"""TFRecord files without TensorFlow: the container of TF Serving's warmup requests and of sigserve's
request logs (both are TFRecords of `PredictionLog`), read and written here and nowhere else.

Each record is `uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)`,
little-endian (TensorFlow's `record_writer.cc`). Both CRCs are checked, so a truncated or corrupted
file is reported as DATA_LOSS with the offset of the bad record (TensorFlow's texts) instead of being
parsed into garbage requests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

from sigserve.errors import Code, SigserveError

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_CHUNK = 1 << 20

# "c" when google-crc32c has its hardware-accelerated extension (SSE4.2 / ARMv8 CRC instructions):
# ~1 GB/s, where a table-driven loop in Python checked ~6 MB/s and made a 50 MB warmup file cost
# seconds at every load. The package falls back on its own pure-Python code elsewhere.
CRC_IMPLEMENTATION: str = google_crc32c.implementation


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of `data` (continuing from `crc`); crc32c(b"123456789") == 0xE3069283."""
    return int(google_crc32c.extend(crc, data))


def mask(crc: int) -> int:
    """TensorFlow's masked CRC: rotate right by 15 and add a constant (so CRCs of CRCs stay strong)."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


def encode(data: bytes) -> bytes:
    """One record, as TensorFlow's TFRecordWriter writes it (no compression); a file is records
    written one after another, so appending `encode(x)` to a file is writing a TFRecord file."""
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
