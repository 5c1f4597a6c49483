"""Sources: which numbered versions a model's base path holds (tfserving-api.md §4 "Layout"; TF
Serving's `file_system_storage_path_source.cc`).

A local base path is listed in place: only directories count as versions (a stray file named `7` is
not a model), and a symlink to a directory is a directory (a common way to publish a version
atomically). A base path that is an object-store URI is listed by `sigserve.storage.StoreSource`,
which counts a version only once it is completely uploaded.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Protocol

from sigserve import storage
from sigserve.errors import Code, SigserveError

logger = logging.getLogger("sigserve.manager")

_VERSION = re.compile(r"[0-9]+")
_INT64_MAX = 2**63 - 1
_warned: set[tuple[str, str]] = set()  # duplicate version directories already reported (once each)


def parse_version(name: str) -> int | None:
    """The version a child directory name stands for (`00000123` → 123), or None.

    Base-10 ASCII digits only, within int64: `1.0`, `-1`, `v2` and `١` (a non-ASCII digit that
    Python's `int()` would accept) are not versions.
    """
    if not _VERSION.fullmatch(name):
        return None
    value = int(name)
    return value if value <= _INT64_MAX else None


def list_versions(name: str, base_path: str) -> dict[int, str]:
    """{version: directory} under `base_path`.

    Two names for one number (`1` and `001`): a warning, and the lexicographically first wins, so the
    choice is stable from one poll to the next. A missing base path is NOT_FOUND with TF Serving's text.
    """
    try:
        children = sorted(os.listdir(base_path))
    except FileNotFoundError:
        raise SigserveError(
            Code.NOT_FOUND,
            f"Could not find base path {base_path} for servable {name} with error "
            f"NOT_FOUND: {base_path} not found",
        ) from None
    except OSError as e:
        raise SigserveError(
            Code.FAILED_PRECONDITION,
            f"Could not list base path {base_path} for servable {name}: {e.strerror}",
        ) from None
    versions: dict[int, str] = {}
    for child in children:
        version = parse_version(child)
        if version is None:
            continue
        path = os.path.join(base_path, child)
        if not os.path.isdir(path):
            continue
        if version in versions:
            if (versions[version], path) in _warned:
                continue
            _warned.add((versions[version], path))
            logger.warning(
                "Duplicate version directories detected. Version %d of servable %s: %s and %s; using %s",
                version,
                name,
                versions[version],
                path,
                versions[version],
            )
            continue
        versions[version] = path
    return versions


def no_versions_message(name: str, base_path: str) -> str:
    return (
        f"No versions of servable {name} found under base path {base_path}. "
        "Did you forget to name your leaf directory as a number (eg. '/1/')?"
    )


def expected_layout(base_path: str) -> str:
    """What a base path should hold, for messages about one that holds nothing servable."""
    return (
        f"expected numbered version directories there, e.g. {storage.join(base_path, '1', 'saved_model.pb')}"
    )


class VersionSource(Protocol):
    def list_versions(self) -> dict[int, str]:
        """{version: path or URI} of the versions there now; SigserveError when it cannot be listed."""
        ...


class LocalSource:
    """A base path on the local file system (or `file://`)."""

    def __init__(self, name: str, base_path: str) -> None:
        self.name = name
        self.base_path = storage.local_path(base_path)

    def list_versions(self) -> dict[int, str]:
        return list_versions(self.name, self.base_path)


def for_base_path(name: str, base_path: str, *, polling: bool = True) -> VersionSource:
    """The source for a model's base path: local, or a store (whose completeness rule needs two polls
    of the same listing when `polling`)."""
    if storage.is_remote(base_path):
        return storage.StoreSource(name, base_path, require_stable=polling)
    return LocalSource(name, base_path)
