"""Where logged calls go: files named from a model's `log_collector_config.filename_prefix`, rotated
by size and by age, written only by the request logger's writer thread.

`log_collector_config.type` picks the format (TF Serving leaves it to a registered collector, and
the open-source server registers none, hence its "No request-logger-creator provided"):

- `""` or `"tfrecord"`: TFRecord files of `PredictionLog`, the format of TF Serving's request logs
  and of `tf_serving_warmup_requests` (`<prefix>-<UTC time>-<pid>-<n>.tfrecord`);
- `"jsonl"`: one JSON object per line, the request and response in REST form (`.jsonl`).

A file is created when its first record is written (no empty files), closed and replaced when the
next record would take it over `max_file_bytes` or when it is `rotate_seconds` old, and never
reopened: a name is used once (created with O_EXCL). A write that fails (disk full, directory gone,
permissions) loses that write's records only: the file is cut back to its last whole record, so
every file stays readable by TensorFlow, and the next write starts a new file.
"""

from __future__ import annotations

import datetime
import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sigserve.errors import invalid_argument
from sigserve.manager import tfrecord

TFRECORD = "tfrecord"
JSONL = "jsonl"
TYPES = {"": TFRECORD, TFRECORD: TFRECORD, JSONL: JSONL}
_EXTENSIONS = {TFRECORD: ".tfrecord", JSONL: ".jsonl"}

Opener = Callable[[str], int]
"""Creates the file at a path and returns a writable descriptor (the default: O_CREAT | O_EXCL)."""


def sink_type(type_name: str, model: str) -> str:
    """The sink a `log_collector_config.type` names; INVALID_ARGUMENT for any other."""
    try:
        return TYPES[type_name.strip().lower()]
    except KeyError:
        raise invalid_argument(
            f'Unknown log_collector_config type "{type_name}" for model {model}: sigserve writes '
            f'"tfrecord" (PredictionLog TFRecord files, also when type is empty) or "jsonl" (JSON lines), '
            'e.g. log_collector_config { type: "jsonl" filename_prefix: "/var/log/sigserve/m" }'
        ) from None


def _create(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)


@dataclass(frozen=True)
class Rotation:
    """When a file is closed and the next one started."""

    max_file_bytes: int
    rotate_seconds: float


class FileSink:
    """The files of one (type, filename_prefix). Not thread-safe: the writer thread owns it."""

    def __init__(
        self,
        kind: str,
        prefix: str,
        rotation: Rotation,
        *,
        clock: Callable[[], float],
        opener: Opener | None = None,
    ) -> None:
        self.kind = kind
        self.prefix = prefix
        self.rotation = rotation
        self._clock = clock
        self._open = opener or _create
        self._fd: int | None = None
        self._path = ""
        self._size = 0
        self._opened_at = 0.0
        self._sequence = 0
        self.paths: list[str] = []  # every file created, oldest first (bounded: see `_remember`)

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def encode(self, record: bytes) -> bytes:
        """A serialized PredictionLog (TFRecord) or a JSON line as it goes into the file."""
        return tfrecord.encode(record) if self.kind == TFRECORD else record

    def write(self, records: Sequence[bytes]) -> tuple[int, OSError | None]:
        """Append encoded records; returns how many were written and the error that stopped the rest."""
        done = 0
        while done < len(records):
            try:
                if self._fd is None or self._due():
                    self._rotate()
                assert self._fd is not None
                limit = self.rotation.max_file_bytes
                end = done
                size = self._size
                while end < len(records) and (
                    (end == done and size == 0) or size + len(records[end]) <= limit
                ):
                    size += len(records[end])
                    end += 1
                if end == done:  # the next record does not fit: start a new file for it
                    self._rotate()
                    continue
                self._write_all(b"".join(records[done:end]))
                self._size = size
                done = end
            except OSError as e:
                self._abandon()
                return done, e
        return done, None

    def close_if_due(self) -> None:
        """Close a file that has reached its age, so that a quiet model's last file is complete."""
        if self._fd is not None and self._clock() - self._opened_at >= self.rotation.rotate_seconds:
            self.close()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        os.close(fd)

    # -- files -------------------------------------------------------------------------------------

    def _due(self) -> bool:
        rotation = self.rotation
        age = self._clock() - self._opened_at
        return self._size >= rotation.max_file_bytes or age >= rotation.rotate_seconds

    def _rotate(self) -> None:
        self.close()
        now = self._clock()
        directory = os.path.dirname(self.prefix)
        if directory:
            os.makedirs(directory, exist_ok=True)
        stamp = datetime.datetime.fromtimestamp(now, tz=datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        for _ in range(100):  # a name taken (an earlier process with this pid): the next number
            self._sequence += 1
            path = f"{self.prefix}-{stamp}-{os.getpid()}-{self._sequence}{_EXTENSIONS[self.kind]}"
            try:
                self._fd = self._open(path)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(errno.EEXIST, "every file name is taken", path)
        self._path = path
        self._size = 0
        self._opened_at = now
        self._remember(path)

    def _remember(self, path: str) -> None:
        self.paths.append(path)
        if len(self.paths) > 1000:
            del self.paths[:500]

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _abandon(self) -> None:
        """After a failed write: cut the file back to its last whole record and stop using it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, self._size)
        except OSError:
            pass
        try:
            os.close(fd)
        except OSError:
            pass
