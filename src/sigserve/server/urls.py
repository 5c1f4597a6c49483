"""TF Serving's REST URL grammar (tfserving-api.md §1.2): a raw request path → an `ApiCall`.

Both patterns are matched case-insensitively against the *encoded* path (plus `?query` when there is
one, so a query string makes an API call malformed, as in TF Serving). Model names and labels are then
percent-decoded (`+` stays `+`). The verb and the `metadata` subresource are compared
case-sensitively afterwards, so `:PREDICT` is a malformed request, and `/METADATA` is a status call.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import unquote_to_bytes

from sigserve.errors import invalid_argument

API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.ASCII)
_POST = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE | re.ASCII,
)
_GET = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/([0-9]+)|/labels/([^/:]+))?(?:/(metadata|openapi\.json))?",
    re.IGNORECASE | re.ASCII,
)
_INT64_MAX = 2**63 - 1
VERBS = ("predict", "classify", "regress")


@dataclasses.dataclass(frozen=True)
class ApiCall:
    """One parsed /v1 call. `kind` is `status`, `metadata`, `predict`, `classify`, `regress` or
    `openapi` (sigserve's `GET /v1/models/<name>[/versions/<v>]/openapi.json`)."""

    kind: str
    model_name: str
    version: int | None = None
    label: str | None = None


def is_api_path(path: str) -> bool:
    """Whether TF Serving's dispatcher would hand this path (with its query) to the REST API handler."""
    return API_PATH.fullmatch(path) is not None


def _decode(raw: str, what: str) -> str:
    try:
        return unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except UnicodeError:
        raise invalid_argument(f"Failed to decode {what}:{raw}") from None


def parse(method: str, path: str) -> ApiCall:
    """Parse `path` (latin-1 text of the raw request bytes, `?query` included) for `method`.

    Raises INVALID_ARGUMENT with TF Serving's texts: `Malformed request: <METHOD> <path>`,
    `Failed to convert version: <v> to numeric.`, `Failed to decode model name:<name>`.
    """
    if method == "POST":
        m = _POST.fullmatch(path)
    elif method == "GET":
        m = _GET.fullmatch(path)
    else:
        m = None
    if m is None:
        raise malformed(method, path)
    raw_name, raw_version, raw_label, tail = m.groups()
    name = _decode(raw_name, "model name") if raw_name else ""
    version: int | None = None
    if raw_version:
        version = int(raw_version)
        if version > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {raw_version} to numeric.")
    label = _decode(raw_label, "model version label") if raw_label else None
    if method == "POST":
        if tail not in VERBS:  # the regex is case-insensitive, the dispatch is not
            raise malformed(method, path)
        return ApiCall(tail, name, version, label)
    if tail is not None and tail.lower() == "openapi.json":
        if tail != "openapi.json" or not name:  # not a TF Serving path: no case-folding quirk to keep
            raise malformed(method, path)
        return ApiCall("openapi", name, version, label)
    kind = "metadata" if tail == "metadata" else "status"
    return ApiCall(kind, name, version, label)


def malformed(method: str, path: str) -> Exception:
    try:
        text = path.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        text = path
    return invalid_argument(f"Malformed request: {method} {text}")
