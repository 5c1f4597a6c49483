"""TensorFlow's C++ start-up lines, kept out of the user's terminal unless asked for.

`import tensorflow` prints about six lines on every process start (oneDNN, the CPU feature guard,
"All log messages before absl::InitializeLog() is called are written to STDERR"), and since
TensorFlow moved to absl logging, `TF_CPP_MIN_LOG_LEVEL` no longer filters the ones written before
absl's logging is initialised. So the first import runs with file descriptor 2 pointed at a
temporary file, and what it wrote is copied back to stderr without the lines below
`TF_CPP_MIN_LOG_LEVEL`: sigserve's default is 1 (no INFO; warnings and errors stay), and
`TF_CPP_MIN_LOG_LEVEL=0` (or `--verbose` on `run` and `serve`) shows everything, unfiltered.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Any

DEFAULT_LEVEL = "1"
# TensorFlow's glog-style prefix: severity letter, MMDD, time, thread, file:line].
_GLOG_LINE = re.compile(rb"^([IWEF])\d{4} [\d:.]+ +\d+ [^\]]*\] ")
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def min_log_level() -> int:
    """`TF_CPP_MIN_LOG_LEVEL` as TensorFlow reads it (set to sigserve's default when unset)."""
    text = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_LEVEL)
    try:
        return int(text)
    except ValueError:
        return 0


def filter_lines(data: bytes, level: int) -> bytes:
    """Drop glog lines (and their continuation lines) below `level`, and absl's preamble."""
    kept: list[bytes] = []
    dropping = False
    for line in data.splitlines(keepends=True):
        match = _GLOG_LINE.match(line)
        if match:
            dropping = _SEVERITY[match.group(1)] < level
        elif line.rstrip(b"\r\n") == _ABSL_PREAMBLE:
            dropping = False
            if level > 0:
                continue
        if not dropping:
            kept.append(line)
    return b"".join(kept)


def verbose() -> None:
    """Show every TensorFlow log line (`--verbose`); only effective before TensorFlow is imported."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


MISSING = (
    "TensorFlow is not installed, and running models needs it: pip install 'sigserve[tensorflow]' "
    "(or tensorflow-cpu / tensorflow). show, validate, signature and the clients work without it."
)


def require_tensorflow() -> None:
    """A clear error, before any work, where TensorFlow is missing (the core install)."""
    import importlib.util

    if "tensorflow" in sys.modules:
        return
    try:
        found = importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        from sigserve.errors import Code, SigserveError

        raise SigserveError(Code.FAILED_PRECONDITION, MISSING)


def import_tensorflow() -> Any:
    """`import tensorflow`, the first time with its start-up lines filtered (see the module doc)."""
    require_tensorflow()
    if "tensorflow" in sys.modules:
        import tensorflow

        return tensorflow
    level = min_log_level()
    if level <= 0:
        import tensorflow

        return tensorflow
    try:
        saved = os.dup(2)
    except OSError:  # no stderr descriptor to redirect
        import tensorflow

        return tensorflow
    with tempfile.TemporaryFile() as captured:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            rest = filter_lines(captured.read(), level)
            if rest:
                os.write(2, rest)
    return tensorflow
