"""Model storage: base paths that are object-store URIs (`s3://`, `gs://`, `az://`, `http(s)://`,
`memory://`), read through fsspec (README "Object storage").

- `local_dir(path)`: a context manager yielding a local directory for any path or URI; what every
  `--dir` flag calls.
- `StoreSource(name, base_uri)`: the complete numbered versions under a base path on a store.
- `stage(uri, dest)`: download a version into the model cache, verified.
- `is_remote(path)`, `scheme_of(uri)`: URI routing; an unknown scheme or a missing extra is a clear
  error naming what to install.

TF-free, and fsspec is imported only when a URI is used.
"""

from __future__ import annotations

from sigserve.storage.staging import Staged, default_cache_dir, local_dir, stage
from sigserve.storage.uri import SCHEMES, is_remote, join, local_path, scheme_of
from sigserve.storage.versions import SAVED_MODEL_FILES, StoreSource

__all__ = [
    "SAVED_MODEL_FILES",
    "SCHEMES",
    "Staged",
    "StoreSource",
    "default_cache_dir",
    "is_remote",
    "join",
    "local_dir",
    "local_path",
    "scheme_of",
    "stage",
]
