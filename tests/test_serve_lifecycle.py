"""`sigserve serve` over its life: readiness while loading, the REST timeout, graceful SIGTERM."""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import ServerProcess


def test_readyz_is_503_until_the_model_is_available(
    fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Listeners open before the models load: /healthz says alive, /readyz says which model is missing."""
    base = tmp_path / "m"
    base.mkdir()
    server = ServerProcess(
        [f"--model_base_path={base}", "--model_name=m", "--file_system_poll_wait_seconds=0.2"], grpc=False
    )
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while True:
                assert time.monotonic() < deadline, server.output()
                assert server.proc.poll() is None, server.output()
                try:
                    r = client.get("/readyz")
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["status"] == "not ready"
            assert list(body["models"]) == ["m"]
            assert body["models"]["m"] != "AVAILABLE"
            assert client.get("/healthz").status_code == 200
            assert "Exporting HTTP/REST API" not in server.output()

            # A version appears: the server becomes ready and serves it.
            os.symlink(fixtures_dir / "saved_model_half_plus_two_cpu" / "00000123", base / "123")
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.2)
            r = client.post("/v1/models/m:predict", json={"instances": [1.0, 2.0, 5.0]})
            assert r.json() == {"predictions": [2.5, 3.0, 4.5]}
        assert f"Exporting HTTP/REST API at:localhost:{server.rest_port} ..." in server.output()
        assert server.stop() == 0
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def half_plus_two(fixtures_dir: pathlib.Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        [
            f"--model_base_path={fixtures_dir / 'saved_model_half_plus_two_cpu'}",
            "--model_name=half_plus_two",
            "--rest_api_num_threads=4",
        ]
    )
    try:
        server.wait_ready()
        yield server  # the SIGTERM test, last in this file, stops it
    finally:
        if server.proc.poll() is None:
            server.stop()
        server.cleanup()


def big_body(n: int) -> bytes:
    return b'{"instances": [' + b"1.0," * (n - 1) + b"1.0]}"


def test_slow_request_gets_504_and_the_server_keeps_serving(fixtures_dir: pathlib.Path) -> None:
    """--rest_api_timeout_in_ms=1: any real predict takes longer, and is answered 504 in JSON."""
    server = ServerProcess(
        [
            f"--model_base_path={fixtures_dir / 'saved_model_half_plus_two_cpu'}",
            "--model_name=half_plus_two",
            "--rest_api_timeout_in_ms=1",
        ],
        grpc=False,
    )
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for _ in range(3):
                r = client.post("/v1/models/half_plus_two:predict", content=big_body(200_000))
                assert r.status_code == 504, r.text[:300]
                assert r.headers["content-type"] == "application/json"
                assert list(r.json()) == ["error"]
            assert client.get("/healthz").status_code == 200
            metrics = client.get("/monitoring/prometheus/metrics").text
            assert 'model_name="half_plus_two",status="DEADLINE_EXCEEDED"' in metrics
        assert server.stop() == 0
    finally:
        server.cleanup()


def test_sigterm_answers_every_accepted_request(half_plus_two: ServerProcess) -> None:
    """Clients keep sending through a SIGTERM. Every request sent well before the signal is answered
    200 with the right result; later ones are either answered or refused at connect, never half-done
    or answered with an error; the server exits 0 after unloading."""
    server = half_plus_two
    n = 20_000  # a few tens of ms each: several are in flight when the signal lands
    body = big_body(n)
    expected_len = n
    records: list[tuple[float, float, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        with httpx.Client(base_url=server.url, timeout=60, headers={"Connection": "close"}) as client:
            refused = 0
            while not stop.is_set() and refused < 3:
                t0 = time.monotonic()
                try:
                    r = client.post("/v1/models/half_plus_two:predict", content=body)
                    if r.status_code == 200 and len(r.json()["predictions"]) == expected_len:
                        outcome = "ok"
                    else:
                        outcome = f"bad {r.status_code} {r.text[:200]}"
                except httpx.ConnectError:
                    outcome = "refused"
                    refused += 1
                except httpx.TransportError as e:
                    outcome = f"transport {type(e).__name__}"
                with lock:
                    records.append((t0, time.monotonic(), outcome))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    warm_deadline = time.monotonic() + 120
    while True:
        with lock:
            if sum(1 for r in records if r[2] == "ok") >= 12:
                break
            assert not any(r[2] != "ok" for r in records), records
        assert time.monotonic() < warm_deadline, server.output()
        time.sleep(0.01)
    t_signal = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    rc = server.wait_exit(60)
    stop.set()
    for t in threads:
        t.join(60)

    assert rc == 0, server.output()
    assert "shutting down" in server.output()
    for t0, _, outcome in records:
        assert not outcome.startswith("bad"), outcome
        if t0 < t_signal - 0.1:
            assert outcome == "ok", (t_signal - t0, outcome)
        else:  # sent around or after the signal: answered, or never accepted
            assert outcome in ("ok", "refused") or outcome.startswith("transport"), outcome
    in_flight = [r for r in records if r[0] < t_signal < r[1]]
    assert in_flight, "no request was in flight when SIGTERM landed; the test proves nothing"
    assert all(r[2] == "ok" for r in in_flight if r[0] < t_signal - 0.1)
