"""`make demo` (examples/demo.py): a busy port is named with the variable that moves the demo, before
anything starts (no curl lines, no traceback); a free one serves the model quietly (issue 21, items
1 and 7). The busy ports are held by real listeners: a bare socket, and another `sigserve serve`."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, free_port
from tests.servers import ServerProcess

DEMO = ROOT / "examples" / "demo.py"
NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard", "Traceback")


@pytest.fixture
def listener() -> Iterator[int]:
    """A port held by a listening socket, the way another server holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _demo(rest: int, grpc: int, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEMO_REST_PORT=str(rest), DEMO_GRPC_PORT=str(grpc))
    return subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, env=env, timeout=timeout, cwd=str(ROOT)
    )


def _assert_busy(proc: subprocess.CompletedProcess[str], port: int, variable: str) -> None:
    assert proc.returncode == 1
    assert proc.stdout == ""  # nothing exported, no server command, no curl lines
    assert proc.stderr == (
        f"demo: port {port} is in use (another sigserve, or an earlier `make demo`?): stop it, or run "
        f"the demo on another port: {variable}={port + 100 if port < 65400 else port - 100} make demo\n"
    )


def test_busy_rest_port(listener: int) -> None:
    _assert_busy(_demo(listener, free_port()), listener, "DEMO_REST_PORT")


def test_busy_grpc_port(listener: int) -> None:
    _assert_busy(_demo(free_port(), listener), listener, "DEMO_GRPC_PORT")


def test_rest_port_held_by_another_sigserve() -> None:
    """The issue's case: another sigserve (without a `demo` model) on the port used to end in a 404
    traceback, after the demo had printed its curl lines."""
    other = ServerProcess(["--model_name=other", "--model_base_path=/nonexistent/other"], grpc=False)
    try:
        deadline = time.monotonic() + 120
        while "listening" not in other.output():
            assert other.proc.poll() is None and time.monotonic() < deadline, other.output()
            time.sleep(0.1)
        _assert_busy(_demo(other.rest_port, free_port()), other.rest_port, "DEMO_REST_PORT")
    finally:
        other.stop()
        other.cleanup()


def test_make_demo_runs_the_script(listener: int) -> None:
    """The Makefile target itself, where .venv is up to date (make would otherwise reinstall it)."""
    make = shutil.which("make")
    if make is None or not (ROOT / ".venv").is_dir():
        pytest.skip("no make, or no .venv to run `make demo` with")
    if subprocess.run([make, "-q", "venv"], cwd=str(ROOT), capture_output=True).returncode != 0:
        pytest.skip(".venv is older than pyproject.toml: `make demo` would reinstall it first")
    env = dict(os.environ, DEMO_REST_PORT=str(listener), DEMO_GRPC_PORT=str(free_port()))
    proc = subprocess.run(
        [make, "-s", "demo"], capture_output=True, text=True, env=env, timeout=120, cwd=str(ROOT)
    )
    assert proc.returncode != 0
    assert f"demo: port {listener} is in use" in proc.stderr
    assert "curl" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_demo_serves_quietly_and_stops_its_server(tmp_path: pathlib.Path) -> None:
    rest, grpc = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(DEMO_REST_PORT=str(rest), DEMO_GRPC_PORT=str(grpc), DEMO_MODEL_DIR=str(tmp_path / "demo"))
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(DEMO)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT)
        )
    try:
        deadline = time.monotonic() + 300
        while f"gRPC: localhost:{grpc}" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)  # e.g. `timeout`: the demo stops its server on the way out
        proc.wait(90)
    text = log.read_text()
    assert '{"predictions": [3.0, 5.0, 11.0]} came back for the first line.' in text
    assert f"curl localhost:{rest}/v1/models/demo/metadata" in text
    assert "sigserve: stopped" in text
    assert not [noise for noise in NOISE if noise in text], text
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", rest))  # the server is gone: its port is free again
