"""Hostile input against a running `sigserve serve`: over 10,000 generated bodies, headers and URLs.

No 5xx except where the spec calls for one (501 for an unsupported dtype, 503, 504), every /v1
answer is a JSON body, the server keeps answering, and its memory stays bounded.
"""

from __future__ import annotations

import gzip
import json
import pathlib
import socket
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import ServerProcess, write_model_config

pytestmark = pytest.mark.slow

ALLOWED_5XX = {501, 503, 504}
N_BODIES, N_URLS, N_HEADERS = 4500, 3000, 2600  # 10,100 requests
MAX_BODY = 256 * 1024
SETTINGS = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def server(fixtures_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("hostile") / "models.config"
    write_model_config(
        config,
        [
            ("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu", {}),
            ("two", fixtures_dir / "saved_model_half_plus_two_2_versions", {"stable": 123}),
        ],
    )
    proc = ServerProcess([f"--model_config_file={config}", f"--max_request_body_bytes={MAX_BODY}"])
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        proc.cleanup()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        yield c


@pytest.fixture(scope="module")
def baseline_rss(server: ServerProcess, client: httpx.Client) -> int:
    for _ in range(50):
        check_alive(client)
    return server.rss_kib()


def check_alive(client: httpx.Client) -> None:
    r = client.post("/v1/models/half_plus_two:predict", json={"instances": [1.0, 2.0, 5.0]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}


def check_response(r: httpx.Response, path: str) -> None:
    assert r.status_code < 500 or r.status_code in ALLOWED_5XX, (r.status_code, path, r.text[:500])
    if path.lower().startswith("/v1/") and r.request.method not in ("OPTIONS", "HEAD"):
        assert r.headers.get("content-type") == "application/json", (path, r.headers)
        body = r.json()
        if r.status_code != 200:
            assert list(body) == ["error"], body


# -- generators --------------------------------------------------------------------------------------

KEYS = st.sampled_from(
    ["instances", "inputs", "signature_name", "examples", "context", "x", "b64", "inputs2", ""]
)
SIGNATURES = st.sampled_from(
    ["", "serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x2_to_y3", "nope", "\u0000"]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.builds(lambda s: {"b64": s}, st.text(max_size=8)),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
DOCUMENTS = st.one_of(
    st.dictionaries(KEYS, VALUES, max_size=4),
    st.fixed_dictionaries({"instances": VALUES}, optional={"signature_name": SIGNATURES}),
    st.fixed_dictionaries({"inputs": VALUES}, optional={"signature_name": SIGNATURES}),
    st.fixed_dictionaries(
        {"examples": st.lists(st.dictionaries(st.text(max_size=3), VALUES, max_size=3), max_size=3)},
        optional={"signature_name": SIGNATURES, "context": st.dictionaries(st.text(max_size=3), VALUES)},
    ),
    VALUES,
)


def _encode(doc: object) -> bytes:
    # NaN/Infinity tokens are part of TF Serving's JSON dialect (§0 item 7).
    return json.dumps(doc, allow_nan=True).encode()


RAW_BODIES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            b"{",
            b"[" * 5000,
            b'{"instances": ' + b"[" * 3000 + b"1.0" + b"]" * 3000 + b"}",
            b'{"instances": [1e999999, -1e999999, NaN, Infinity, -Infinity, Inf]}',
            b'{"instances": [1.0]} trailing garbage',
            b'{"instances": [1.0], "instances": "dup"}',
            b'{"instances": [18446744073709551616]}',
            b'{"signature_name": 5, "instances": [1.0]}',
            b'\xef\xbb\xbf{"instances": [1.0]}',
            b'{"instances": ["\xff\xfe"]}',
            b'{"examples": [{"x": 18446744073709551615}]}',
            b'{"examples": [{"x": [[1]]}]}',
            b'{"inputs": {"b64": "!!!"}}',
        ]
    ),
)
BODIES = st.one_of(DOCUMENTS.map(_encode), RAW_BODIES)
ENDPOINTS = st.sampled_from(
    [
        "/v1/models/half_plus_two:predict",
        "/v1/models/half_plus_two:classify",
        "/v1/models/half_plus_two:regress",
        "/v1/models/two/labels/stable:predict",
        "/v1/models/two/versions/124:regress",
        "/v1/models/nope:predict",
    ]
)

SEGMENT = st.one_of(
    st.sampled_from(
        [
            "v1",
            "models",
            "half_plus_two",
            "two",
            "versions",
            "labels",
            "metadata",
            "123",
            "stable",
            "%",
            "%zz",
        ]
    ),
    st.text(alphabet="abcXYZ019_-.~:%+?=&;@!$'()*,", max_size=10),
    st.text(max_size=6).map(lambda s: "".join(f"%{b:02X}" for b in s.encode())),
    st.integers(min_value=0, max_value=2**66).map(str),
)
VERB = st.sampled_from(["", ":predict", ":classify", ":regress", ":PREDICT", ":", "::predict"])
PATHS = st.builds(
    lambda prefix, segs, verb: prefix + "/".join(segs) + verb,
    st.sampled_from(["/v1/models/", "/v1/", "/V1/MODELS/", "/", "/v1/models", "//v1/models/"]),
    st.lists(SEGMENT, max_size=5),
    VERB,
)
METHODS = st.sampled_from(["GET", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])

HEADER_NAMES = st.one_of(
    st.sampled_from(["content-type", "content-encoding", "origin", "accept", "accept-encoding", "x-a"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=12),
)
HEADER_VALUES = st.one_of(
    st.sampled_from(
        ["gzip", "GZIP", "deflate, gzip", "identity", "br", "application/json", "text/plain", "*"]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
    ),
)


# -- the tests -----------------------------------------------------------------------------------------


def test_generated_bodies(client: httpx.Client, baseline_rss: int) -> None:
    @settings(SETTINGS, max_examples=N_BODIES)
    @given(path=ENDPOINTS, body=BODIES)
    def run(path: str, body: bytes) -> None:
        check_response(client.post(path, content=body), path)

    run()
    check_alive(client)


def test_generated_urls_and_methods(client: httpx.Client, baseline_rss: int) -> None:
    @settings(SETTINGS, max_examples=N_URLS)
    @given(method=METHODS, path=PATHS)
    def run(method: str, path: str) -> None:
        url = httpx.URL(client.base_url).copy_with(raw_path=path.encode("utf-8"))
        try:
            r = client.request(method, url, content=b'{"instances": [1.0]}' if method == "POST" else None)
        except httpx.RemoteProtocolError:
            # Only for request lines the HTTP parser itself rejects; the server must still answer.
            check_alive(client)
            return
        check_response(r, url.raw_path.decode("latin-1"))

    run()
    check_alive(client)


def test_generated_headers(client: httpx.Client, baseline_rss: int) -> None:
    @settings(SETTINGS, max_examples=N_HEADERS)
    @given(
        path=ENDPOINTS,
        body=BODIES,
        headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4),
        compress=st.booleans(),
    )
    def run(path: str, body: bytes, headers: dict[str, str], compress: bool) -> None:
        if compress:
            body = gzip.compress(body)
            headers = {**headers, "content-encoding": "gzip"}
        # Header values travel as raw bytes (latin-1), so any code point below 256 reaches the server.
        raw_headers = {
            k: v.encode("latin-1", "replace")
            for k, v in headers.items()
            if k not in ("content-length", "transfer-encoding", "host")
        }
        try:
            r = client.post(path, content=body, headers=raw_headers)
        except httpx.LocalProtocolError:
            return  # the client refuses to send it (e.g. a blank header value); nothing reached the server
        except httpx.RemoteProtocolError:
            check_alive(client)
            return
        check_response(r, path)

    run()
    check_alive(client)


def test_garbage_on_the_socket(server: ServerProcess, client: httpx.Client) -> None:
    """Not HTTP at all, truncated requests, a lying Content-Length: the server shrugs them off."""
    payloads = [
        b"\x00\x01\x02\x03" * 100 + b"\r\n\r\n",
        b"GET /v1/models/half_plus_two HTTP/1.1\r\n",  # never finished
        b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
        b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/models/half_plus_two HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 2000 + b"\r\n",
    ]
    for payload in payloads:
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=5) as s:
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(5)
                reply = s.recv(65536)
            except OSError:
                reply = b""
            if reply:
                status = int(reply.split(b" ", 2)[1])
                assert status < 500 or status in ALLOWED_5XX, reply[:200]
        check_alive(client)


def test_memory_stays_bounded(server: ServerProcess, client: httpx.Client, baseline_rss: int) -> None:
    """Runs after the generated requests (file order): RSS may not grow without bound."""
    for _ in range(200):
        client.post(
            "/v1/models/half_plus_two:predict", content=b'{"instances": [' + b"1.0," * 5000 + b"1.0]}"
        )
    check_alive(client)
    grown_mib = (server.rss_kib() - baseline_rss) / 1024
    assert grown_mib < 256, f"RSS grew by {grown_mib:.0f} MiB over the hostile run"
