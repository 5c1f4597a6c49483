"""The web console's static files (shipped in the wheel; no CDN, no build step).

`assets()` maps each URL path the REST server answers with a file here (`/`, `/ui`, `/ui/<file>`)
to (content type, bytes), read once.
"""

from __future__ import annotations

import functools
from importlib import resources

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}
FILES = ("index.html", "console.js", "console.css")


@functools.cache
def assets() -> dict[str, tuple[bytes, bytes]]:
    root = resources.files(__name__)
    out: dict[str, tuple[bytes, bytes]] = {}
    for name in FILES:
        content_type = _TYPES[name[name.rindex(".") :]]
        out["/ui/" + name] = (content_type, root.joinpath(name).read_bytes())
    index = out["/ui/index.html"]
    for path in ("/", "/ui", "/ui/"):
        out[path] = index
    return out
