"""Which base paths are object-store URIs, and which fsspec filesystem (and sigserve extra) reads each
scheme. The table is the one place a scheme is named.

A local path, or `file:///models/m`, is a directory the manager lists and loads in place. Any other
known scheme (`s3://`, `gs://`, `az://`, `http(s)://`, `memory://`) is read through fsspec: listed on
each poll and each version downloaded to the model cache before it is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re

from sigserve.errors import Code, SigserveError, invalid_argument


@dataclasses.dataclass(frozen=True)
class Scheme:
    protocol: str  # fsspec's protocol name
    extra: str  # the sigserve extra that installs it ("" = always there)
    module: str  # the module fsspec needs for it ("" = fsspec itself)
    store: str  # how users call the store, for messages


SCHEMES: dict[str, Scheme] = {
    "file": Scheme("file", "", "", "the local file system"),
    "memory": Scheme("memory", "", "", "fsspec's in-memory file system"),
    "s3": Scheme("s3", "s3", "s3fs", "S3"),
    "s3a": Scheme("s3", "s3", "s3fs", "S3"),
    "gs": Scheme("gs", "gcs", "gcsfs", "Google Cloud Storage"),
    "gcs": Scheme("gs", "gcs", "gcsfs", "Google Cloud Storage"),
    "az": Scheme("az", "azure", "adlfs", "Azure Blob Storage"),
    "abfs": Scheme("abfs", "azure", "adlfs", "Azure Blob Storage"),
    "abfss": Scheme("abfs", "azure", "adlfs", "Azure Blob Storage"),
    "http": Scheme("http", "http", "aiohttp", "an HTTP server"),
    "https": Scheme("https", "http", "aiohttp", "an HTTP server"),
}

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_name(path: str) -> str:
    """ "s3" for `s3://bucket/m`, "" for a plain path."""
    match = _SCHEME.match(path)
    return match.group(1).lower() if match else ""


def is_remote(path: str) -> bool:
    """Whether `path` is read through fsspec (and staged) rather than used in place. Raises
    INVALID_ARGUMENT for a scheme sigserve does not know."""
    name = scheme_name(path)
    if not name:
        return False
    scheme_of(path)
    return name != "file"


def local_path(path: str) -> str:
    """A local base path as a directory: `file:///models/m` → `/models/m`."""
    return path[len("file://") :] if scheme_name(path) == "file" else path


def scheme_of(uri: str) -> Scheme:
    """The scheme of `uri`, installed: INVALID_ARGUMENT for an unknown one, UNIMPLEMENTED naming the
    extra to install when its fsspec implementation is missing."""
    name = scheme_name(uri)
    scheme = SCHEMES.get(name)
    if scheme is None:
        known = ", ".join(f"{s}://" for s in SCHEMES if s not in ("s3a", "gcs", "abfss"))
        raise invalid_argument(
            f"Unknown scheme '{name}://' in {uri}: sigserve reads local paths and {known} "
            "(e.g. s3://bucket/models/m)"
        )
    if scheme.module and importlib.util.find_spec(scheme.module) is None:
        raise SigserveError(
            Code.UNIMPLEMENTED,
            f"Reading {uri} needs {scheme.module}, which is not installed: "
            f"pip install 'sigserve[{scheme.extra}]'",
        )
    return scheme


def join(base: str, *parts: str) -> str:
    """`base` + "/" + parts, for URIs (os.path.join is for local paths)."""
    out = base.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out
