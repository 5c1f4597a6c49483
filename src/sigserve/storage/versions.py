"""Version discovery on an object store: which numbered version "directories" under a base path are
complete enough to load (README "Object storage"; tfserving-api.md §4 "Layout").

A store has no rename, so a version appears object by object while it uploads. A version counts
only when it is complete:

1. `saved_model.pb` (or `saved_model.pbtxt`) is there;
2. its variables are whole: `variables/variables.index` and every shard
   `variables/variables.data-<i>-of-<n>` for i < n. A version with nothing under `variables/`
   counts only if its MetaGraph has no saver (a model without variables): a `saved_model.pb`
   uploaded before its variables is never taken for a complete model;
3. the listing of the version (names, sizes, ETags) is the same as at the previous poll, so files
   still arriving (assets, warmup data) are waited for. With polling off
   (`--file_system_poll_wait_seconds=0`) rule 3 is skipped.

Objects appear on a store only once fully written, so these rules never see half a file.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

from sigserve.errors import Code, SigserveError
from sigserve.storage import filesystems
from sigserve.storage.uri import join

logger = logging.getLogger("sigserve.storage")

_VERSION = re.compile(r"[0-9]+")
_INT64_MAX = 2**63 - 1
_SHARD = re.compile(r"variables/variables\.data-([0-9]+)-of-([0-9]+)")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One object of a version: its path relative to the version, size and content tag."""

    rel: str
    size: int  # -1: the store does not say
    tag: str  # ETag / md5Hash / "" — whatever the store says identifies the content
    checksum: str = ""  # an S3 full-object checksum (e.g. "CRC32"), which the S3 client checks itself


def version_number(name: str) -> int | None:
    if not _VERSION.fullmatch(name):
        return None
    value = int(name)
    return value if value <= _INT64_MAX else None


def list_files(fs: Any, root: str, uri: str) -> list[RemoteFile]:
    """Every object under `root` (the fsspec path of `uri`), sorted."""
    try:
        fs.invalidate_cache(root)
        found = fs.find(root, detail=True)
    except Exception as e:
        raise filesystems.describe(e, uri) from None
    prefix = root.rstrip("/") + "/"
    out = []
    for path, info in found.items():
        if info.get("type") == "directory" or not path.startswith(prefix):
            continue
        tag = str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or "")
        size = info.get("size")
        if size is None:  # an HTTP directory listing gives names only: ask for each length
            try:
                size = fs.size(path)
            except Exception as e:
                raise filesystems.describe(e, uri) from None
        checksum = ""
        algorithms = info.get("ChecksumAlgorithm") or []
        if algorithms and info.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
            checksum = str(algorithms[0])
        out.append(RemoteFile(path[len(prefix) :], -1 if size is None else int(size), tag, checksum))
    return sorted(out, key=lambda f: f.rel)


def missing_parts(files: list[RemoteFile], read_pb: Any) -> str:
    """ "" when rules 1 and 2 hold, else what is missing. `read_pb(rel)` returns the bytes of the
    SavedModel file (read only for a version without variables)."""
    names = {f.rel for f in files}
    pb = next((n for n in SAVED_MODEL_FILES if n in names), "")
    if not pb:
        return "saved_model.pb"
    shards: dict[int, set[int]] = {}
    for name in names:
        match = _SHARD.fullmatch(name)
        if match:
            shards.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    has_index = "variables/variables.index" in names
    if shards or has_index:
        if not has_index:
            return "variables/variables.index"
        if not shards:
            return "variables/variables.data-00000-of-..."
        for total, present in sorted(shards.items()):
            absent = sorted(set(range(total)) - present)
            if absent:
                return f"variables/variables.data-{absent[0]:05d}-of-{total:05d}"
        return ""
    return "variables/" if _has_saver(read_pb(pb), pb) else ""


def _has_saver(data: bytes, name: str) -> bool:
    from sigserve.protos import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        if name.endswith(".pbtxt"):
            from google.protobuf import text_format

            text_format.Merge(data.decode("utf-8"), saved_model, allow_unknown_field=True)
        else:
            saved_model.ParseFromString(data)
    except Exception:
        return False  # not ours to judge: the load reports what is wrong with it
    return any(mg.saver_def.filename_tensor_name for mg in saved_model.meta_graphs)


class StoreSource:
    """The complete versions under one base path on a store, poll after poll (rule 3 needs the
    previous poll's listing). Not thread-safe: the manager polls from one thread."""

    def __init__(self, name: str, base_uri: str, *, require_stable: bool = True) -> None:
        self.name = name
        self.base_uri = base_uri.rstrip("/")
        self.require_stable = require_stable
        self._previous: dict[int, tuple[RemoteFile, ...]] = {}
        self._complete: dict[int, tuple[RemoteFile, ...]] = {}
        self._waiting: dict[int, str] = {}  # version -> what it waits for, as last logged

    @property
    def pending(self) -> dict[int, str]:
        """{version: what it waits for} of the versions seen at the last poll but not complete yet."""
        return dict(self._waiting)

    def list_versions(self) -> dict[int, str]:
        """{version: uri} of the complete versions. Store errors are SigserveErrors, one line each; a
        missing base path has TF Serving's text."""
        fs, base = filesystems.filesystem(self.base_uri)
        children = self._children(fs, base)
        for gone in set(self._previous) - children.keys():
            self._previous.pop(gone, None)
        for gone in set(self._complete) - children.keys():
            self._complete.pop(gone, None)
        for gone in set(self._waiting) - children.keys():
            self._waiting.pop(gone, None)
        versions: dict[int, str] = {}
        for version, child in sorted(children.items()):
            uri = join(self.base_uri, child)
            if version in self._complete:
                versions[version] = uri
                continue
            _, root = filesystems.filesystem(uri)
            files = tuple(list_files(fs, root, uri))
            missing = missing_parts(list(files), lambda rel, root=root, uri=uri: _cat(fs, root, rel, uri))
            stable = not self.require_stable or self._previous.get(version) == files
            self._previous[version] = files
            if not missing and stable:
                self._complete[version] = files
                self._waiting.pop(version, None)
                versions[version] = uri
                continue
            why = f"missing {missing}" if missing else "files still changing since the last poll"
            if files and self._waiting.get(version) != why:
                self._waiting[version] = why
                logger.info(
                    "Version %d of servable %s at %s is not complete yet (%s)", version, self.name, uri, why
                )
        return versions

    def _children(self, fs: Any, base: str) -> dict[int, str]:
        try:
            fs.invalidate_cache(base)  # s3fs and gcsfs cache listings; a poll must see the store now
            entries = fs.ls(base, detail=True)
        except FileNotFoundError as e:
            raise self._missing_base(fs, e) from None
        except Exception as e:
            raise filesystems.describe(e, self.base_uri) from None
        children: dict[int, str] = {}
        for entry in entries:
            name = str(entry.get("name", "")).rstrip("/").rsplit("/", 1)[-1]
            version = version_number(name)
            if version is None or entry.get("type") not in ("directory", None):
                continue
            children.setdefault(version, name)
        return children

    def _missing_base(self, fs: Any, error: FileNotFoundError) -> SigserveError:
        described = filesystems.describe(error, self.base_uri)
        if "bucket" in described.message:
            return described
        return SigserveError(
            Code.NOT_FOUND,
            f"Could not find base path {self.base_uri} for servable {self.name} with error "
            f"NOT_FOUND: {self.base_uri} not found",
        )


def _cat(fs: Any, root: str, rel: str, uri: str) -> bytes:
    try:
        return bytes(fs.cat_file(root.rstrip("/") + "/" + rel))
    except Exception as e:
        raise filesystems.describe(e, join(uri, rel)) from None
