"""Staging: copy one version from a store into the local model cache, verified, before TensorFlow
loads it from there (README "Object storage"; scale-out.md §1.3, KServe's storage initializer).

Every file is checked against the store's listing: its size always, and its content where the store
vouches for it: an S3 object with a full-object checksum is checked by the S3 client as it streams
(botocore's flexible checksums); otherwise the copy's MD5 is compared with S3's ETag of a single-part
upload or GCS's md5Hash. A failed or
short download removes what was written and raises: the version ends in an error state, and the
versions being served are not touched. Large downloads log their progress.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sigserve.errors import Code, SigserveError
from sigserve.storage import filesystems
from sigserve.storage.uri import is_remote, join, local_path, scheme_of
from sigserve.storage.versions import RemoteFile, list_files

logger = logging.getLogger("sigserve.storage")

DOWNLOAD_THREADS = 4  # files fetched at once
PROGRESS_INTERVAL_SECONDS = 5.0  # how often a long download logs its progress
_HASH_CHUNK = 8 << 20
_MD5_HEX = re.compile(r"[0-9a-f]{32}")


@dataclasses.dataclass(frozen=True)
class Staged:
    """A version copied to `path`: `files` files, `bytes` bytes, in `seconds`."""

    uri: str
    path: str
    files: int
    bytes: int
    seconds: float


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "sigserve-model-cache")


def checked_in_transit(protocol: str, info: RemoteFile, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the S3 client verifies this object's full-object checksum (CRC32, CRC32C, SHA) as it
    reads it: botocore's flexible checksums do, unless AWS_RESPONSE_CHECKSUM_VALIDATION=when_required.
    Then hashing the copy again would only cost time."""
    env = os.environ if environ is None else environ
    validation = env.get("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_supported").strip().lower()
    return protocol == "s3" and bool(info.checksum) and validation == "when_supported"


def expected_md5(protocol: str, info: RemoteFile) -> str:
    """The MD5 (hex) the store vouches for, or "" when it gives none we can trust."""
    tag = info.tag.strip('"').strip()
    if protocol == "s3":
        return tag.lower() if _MD5_HEX.fullmatch(tag.lower()) else ""  # "<md5>-<parts>": multipart
    if protocol == "gs" and tag:
        try:
            return base64.b64decode(tag, validate=True).hex()
        except (binascii.Error, ValueError):
            return ""
    return ""


class _Progress:
    def __init__(self, uri: str, total: int) -> None:
        self.uri = uri
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._last_log = self.started
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last_log < PROGRESS_INTERVAL_SECONDS:
                return
            self._last_log = now
            done, elapsed = self.done, now - self.started
        logger.info(
            "Downloading %s: %.1f of %.1f MB (%d%%), %.0f MB/s",
            self.uri,
            done / 1e6,
            self.total / 1e6,
            100 * done // max(1, self.total),
            done / 1e6 / max(elapsed, 1e-9),
        )


def _callback(progress: _Progress) -> Any:
    from fsspec.callbacks import Callback

    class ProgressCallback(Callback):  # type: ignore[misc]
        def relative_update(self, inc: int = 1) -> None:
            progress.add(int(inc))

        def absolute_update(self, value: int) -> None:
            pass

    return ProgressCallback()


def stage(uri: str, dest: str, *, only: Sequence[str] | None = None) -> Staged:
    """Download the tree under `uri` into the new directory `dest` (or just the files of `only`, as
    paths relative to `uri`, that exist). On any error `dest` is removed and a one-line SigserveError
    is raised."""
    protocol = scheme_of(uri).protocol
    fs, root = filesystems.filesystem(uri)
    started = time.monotonic()
    files = list_files(fs, root, uri)
    if only is not None:
        files = [f for f in files if f.rel in set(only)]
    if not files:
        raise SigserveError(Code.NOT_FOUND, f"Nothing to read at {uri}: it does not exist or is empty")
    total = sum(f.size for f in files)
    progress = _Progress(uri, total)
    os.makedirs(dest)
    try:
        with concurrent.futures.ThreadPoolExecutor(DOWNLOAD_THREADS, "sigserve-download") as pool:
            jobs = [pool.submit(_fetch, fs, root, uri, f, dest, protocol, progress) for f in files]
            for job in concurrent.futures.as_completed(jobs):
                job.result()
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    seconds = time.monotonic() - started
    logger.info(
        "Downloaded %s: %d files, %.1f MB in %.2f s (%.0f MB/s) to %s",
        uri,
        len(files),
        total / 1e6,
        seconds,
        total / 1e6 / max(seconds, 1e-9),
        dest,
    )
    return Staged(uri, dest, len(files), total, seconds)


def _fetch(
    fs: Any, root: str, uri: str, info: RemoteFile, dest: str, protocol: str, progress: _Progress
) -> None:
    target = os.path.join(dest, *info.rel.split("/"))
    if os.path.relpath(target, dest).startswith(".."):
        raise SigserveError(Code.INVALID_ARGUMENT, f"{join(uri, info.rel)}: a name that leaves the version")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    source = root.rstrip("/") + "/" + info.rel
    where = join(uri, info.rel)
    try:
        fs.get_file(source, target, callback=_callback(progress))
    except Exception as e:
        raise filesystems.describe(e, where) from None
    size = os.path.getsize(target)
    if info.size >= 0 and size != info.size:
        raise SigserveError(
            Code.DATA_LOSS, f"Downloaded {where}: {size} bytes, but the store lists {info.size}; try again"
        )
    if checked_in_transit(protocol, info):
        # The bytes match the object the client read; make sure that is still the object listed.
        try:
            now = fs.info(source, refresh=True)
        except Exception as e:
            raise filesystems.describe(e, where) from None
        tag = str(now.get("ETag") or "")
        if info.tag and tag and tag != info.tag:
            raise SigserveError(
                Code.DATA_LOSS, f"{where} changed on the store while it was downloaded; try again"
            )
        return
    md5 = expected_md5(protocol, info)
    if md5:
        digest = hashlib.md5(usedforsecurity=False)
        with open(target, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != md5:
            raise SigserveError(
                Code.DATA_LOSS,
                f"Downloaded {where}: MD5 {digest.hexdigest()} does not match the store's {md5}; try again",
            )


@contextlib.contextmanager
def local_dir(path: str, *, only: Sequence[str] | None = None) -> Iterator[str]:
    """A local directory holding `path`: the path itself when it is local (or `file://`), else a
    temporary copy of the tree under the URI (only the files of `only`, when given), removed on exit.

        with local_dir("s3://bucket/models/m/1", only=SAVED_MODEL_FILES) as d:
            saved_model = loader.read_saved_model(d)
    """
    if not is_remote(path):
        yield local_path(path)
        return
    parent = tempfile.mkdtemp(prefix="sigserve-")
    try:
        staged = stage(path, os.path.join(parent, "model"), only=only)
        yield staged.path
    finally:
        shutil.rmtree(parent, ignore_errors=True)
