"""Hostile REST bodies against a running `sigserve serve` (issue 20 item 6), measured on loopback.

* JSON nested millions deep is refused with 400 at `--max_request_json_depth`, at once and without
  the memory a list per level would take (it used to cost seconds and gigabytes, then 504).
* An integer literal of more than 4,300 digits is TF Serving's 400 parse error, not a 500.
* A call answered 504 by `--rest_api_timeout_in_ms` stops using the CPU soon after: the codecs look
  at the deadline while they decode and encode.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.grpc_servers import serving_strings
from tests.servers import ServerProcess

MAX_DEPTH = 20  # the server's --max_request_json_depth: a non-default value, to see the flag work
TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = [f"--max_request_json_depth={MAX_DEPTH}", f"--rest_api_timeout_in_ms={TIMEOUT_MS}"]
    with serving_strings(tmp_path_factory.mktemp("rest_bounds"), args) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        yield c


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nested(depth: int, leaf: str = '"a"') -> str:
    return "[" * depth + leaf + "]" * depth


# -- nesting depth ------------------------------------------------------------------------------------


def test_the_flag_sets_the_depth_allowed(client: httpx.Client) -> None:
    # {"inputs": <rank 19>} nests 20 deep: allowed; one more level is not
    r = client.post("/v1/models/strings:predict", content='{"inputs": ' + nested(MAX_DEPTH - 1) + "}")
    assert r.status_code == 200, r.text
    assert r.json()["outputs"]["joined"] == "a"
    head = '{"inputs": '
    r = client.post("/v1/models/strings:predict", content=head + nested(MAX_DEPTH) + "}")
    assert r.status_code == 400
    assert r.json() == {
        "error": f"JSON Parse error: The document nests arrays and objects more than {MAX_DEPTH} levels "
        "deep (sigserve's limit, --max_request_json_depth; a tensor of rank N needs N + 1 to N + 4 "
        f"levels) at offset: {len(head) + MAX_DEPTH - 1}"
    }


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models/strings:predict", b'{"instances": ' + b"[" * 4_000_000 + b"]" * 4_000_000 + b"}"),
        ("/v1/models/strings:predict", b'{"instances": [' + b'["a",' * 1_000_000 + b"1" + b"]" * 1_000_001),
        ("/v1/models/strings:regress", b'{"examples": [' + b'{"x":' * 2_000_000),
        ("/v2/models/strings/infer", b'{"inputs": [{"name": "s", "data": ' + b"[" * 4_000_000),
    ],
    ids=["predict-8MB", "predict-interleaved", "regress-objects", "v2-data"],
)
def test_deep_bodies_are_refused_at_once_without_memory(
    server: ServerProcess, client: httpx.Client, path: str, body: bytes
) -> None:
    rss_before = server.rss_kib()
    cpu_before = cpu_seconds(server.proc.pid)
    started = time.perf_counter()
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    elapsed = time.perf_counter() - started
    assert r.status_code == 400, r.text[:300]
    assert f"more than {MAX_DEPTH} levels deep" in r.json()["error"]
    # Unbounded, 5,000,000 levels took 10 s and +850 MB; now the cost is reading the body.
    assert elapsed < 2.0, elapsed
    assert cpu_seconds(server.proc.pid) - cpu_before < 1.0
    assert server.rss_kib() - rss_before < 64 * 1024, (rss_before, server.rss_kib())


# -- long integer literals ------------------------------------------------------------------------------

LONG = "7" * 4301


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models/strings:predict", '{"instances": [' + LONG + "]}"),
        ("/v1/models/strings:predict", '{"inputs": {"s": [-' + LONG + "]}}"),
        ("/v1/models/strings:classify", '{"examples": [{"x": ' + LONG + "}]}"),
        ("/v1/models/strings:regress", '{"context": {"c": ' + LONG + '}, "examples": [{}]}'),
    ],
)
def test_long_integers_are_a_400_parse_error(client: httpx.Client, path: str, body: str) -> None:
    r = client.post(path, content=body)
    assert r.status_code == 400, r.text[:300]
    offset = body.index(LONG) - (body[body.index(LONG) - 1] == "-")
    assert r.json() == {
        "error": f"JSON Parse error: Number too big to be stored in double. at offset: {offset}"
    }


def test_long_integers_in_v2_data_are_a_400(client: httpx.Client) -> None:
    body = '{"inputs": [{"name": "s", "datatype": "INT64", "shape": [1], "data": [' + LONG + "]}]}"
    r = client.post("/v2/models/strings/infer", content=body)
    assert r.status_code == 400, r.text[:300]
    assert "Number too big to be stored in double" in r.json()["error"]


# -- work after the deadline -----------------------------------------------------------------------------


def settled_cpu(pid: int, quiet: float = 0.3, limit: float = 20.0) -> float:
    """CPU seconds once the process has used less than 30 ms in `quiet` seconds (or at `limit`)."""
    end = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < end:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now - last < 0.03:
            return now
        last = now
    return last


def test_a_call_answered_504_stops_using_the_cpu(server: ServerProcess, client: httpx.Client) -> None:
    """1.5 million strings take a REST worker about ten seconds to decode on this machine (parsed
    token by token, then one tensor per instance); the call is answered 504 after 1.5 s, and the
    worker must stop within a few milliseconds of work after that, not finish the decode."""
    body = b'{"instances": [' + b",".join([b'"ab"'] * 1_500_000) + b"]}"
    pid = server.proc.pid
    settled_cpu(pid)
    started = time.perf_counter()
    r = client.post("/v1/models/strings:predict", content=body)
    answered = time.perf_counter() - started
    assert r.status_code == 504, r.text[:300]
    assert r.json() == {
        "error": f"Deadline exceeded: the request took longer than --rest_api_timeout_in_ms={TIMEOUT_MS}"
    }
    at_504 = cpu_seconds(pid)
    after = settled_cpu(pid) - at_504
    assert after < 0.5, (
        f"the worker went on for {after:.2f} s of CPU after the 504 (answered in {answered:.2f} s)"
    )
    # and the server still answers
    assert client.post("/v1/models/strings:predict", json={"inputs": "ok"}).json()["outputs"]["text"] == "ok"
