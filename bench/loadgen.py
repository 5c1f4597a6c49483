"""What bench/rest.py and bench/grpc.py share: ports, readiness, server CPU, and the two C load
generators, `wrk` (HTTP/1.1) and `h2load` (HTTP/2, for gRPC).

A C load generator matters on this 2-core machine: a Python client costs as much CPU per request
as the server it measures, so with one the numbers say more about the client than the server.
h2load is Debian's `nghttp2-client`; it sends the same pre-framed gRPC request on one HTTP/2
connection with `-m` streams in flight (what ghz does by default), and logs each request's latency.
It reads only the HTTP status, not gRPC's `grpc-status` trailer, so each bench checks the answer of
every server with a real client before measuring it.
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import struct
import subprocess
import tempfile
import time
import urllib.request

NAN = float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid`, all its threads (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return NAN
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- wrk -------------------------------------------------------------------------------------------


def _wrk_ms(text: str, pct: str) -> float:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not m:
        raise RuntimeError(f"wrk output has no {pct}% line:\n{text}")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _lua_string(data: bytes) -> str:
    """`data` as a Lua string literal (any bytes: binary bodies too)."""
    plain = set(range(0x20, 0x7F)) - {ord("\\"), ord('"')}
    return '"' + "".join(chr(b) if b in plain else f"\\{b:03d}" for b in data) + '"'


def run_wrk(
    url: str, body: bytes, concurrency: int, duration: float, headers: dict[str, str] | None = None
) -> tuple[float, float, float, int, int]:
    """POST `body` (JSON unless `headers` say otherwise): (req/s, p50 ms, p99 ms, errors, requests).
    wrk takes whole seconds."""
    script = 'wrk.method = "POST"\n' + f"wrk.body = {_lua_string(body)}\n"
    for name, value in ({"Content-Type": "application/json"} | (headers or {})).items():
        script += f"wrk.headers[{_lua_string(name.encode())}] = {_lua_string(value.encode())}\n"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        threads = min(concurrency, 2)
        seconds = max(1, round(duration))
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", f.name, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    return rps, _wrk_ms(out, "50"), _wrk_ms(out, "99"), errors, requests


# -- h2load ----------------------------------------------------------------------------------------


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def run_h2load(
    url: str, message: bytes, concurrency: int, duration: float, deadline_s: int = 30
) -> tuple[float, float, float, int, int]:
    """Unary gRPC calls of `message` to `url` (http://host:port/package.Service/Method), `concurrency`
    in flight on one connection, with a `grpc-timeout` as a client with a deadline sends:
    (req/s, p50 ms, p99 ms, HTTP errors, requests including a 1 s warm-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "request.bin")
        log = os.path.join(tmp, "requests.log")
        with open(data, "wb") as f:
            f.write(grpc_frame(message))
        command = ["h2load", "-c1", f"-m{concurrency}", f"-D{max(1, round(duration))}", "--warm-up-time=1"]
        command += ["-d", data, "--log-file", log, "-H", "content-type: application/grpc"]
        command += ["-H", "te: trailers", "-H", f"grpc-timeout: {deadline_s}S", url]
        out = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 60,
        ).stdout
        latencies_us = []
        errors = 0
        with open(log) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3:
                    errors += fields[1] != "200"
                    latencies_us.append(int(fields[2]))
    m = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    if not m or not latencies_us:
        raise RuntimeError(f"h2load gave no result:\n{out}")
    latencies_us.sort()
    n = len(latencies_us)
    p50 = statistics.median(latencies_us) / 1000
    p99 = latencies_us[min(n - 1, int(n * 0.99))] / 1000
    rps = float(m.group(1))
    # The server's CPU is read around the whole run, warm-up second included.
    return rps, p50, p99, errors, round(rps * (max(1, round(duration)) + 1))
