"""`sigserve serve` as a process: a helper the REST/serve test modules share, and the process-level
tests (flags, env vars, start-up failures, --version)."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import httpx
import pytest

from tests.conftest import ROOT, free_port

PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").is_dir() else sys.executable


def grpc_available() -> bool:
    try:
        import sigserve.server.grpc_server  # noqa: F401
    except ImportError:
        return False
    return True


def write_model_config(
    path: pathlib.Path, models: Sequence[tuple[str, pathlib.Path, dict[str, int]]]
) -> None:
    """A text ModelServerConfig: (name, base_path, version labels) per model; all versions served."""
    parts = ["model_config_list {"]
    for name, base, labels in models:
        parts.append("  config {")
        parts.append(f'    name: "{name}"')
        parts.append(f'    base_path: "{base}"')
        parts.append('    model_platform: "tensorflow"')
        if labels:
            parts.append("    model_version_policy { all {} }")
        for label, version in labels.items():
            parts.append(f'    version_labels {{ key: "{label}" value: {version} }}')
        parts.append("  }")
    parts.append("}")
    path.write_text("\n".join(parts) + "\n")


class ServerProcess:
    """`python -m sigserve.cli serve ...` on free loopback ports, with its log in a temp file."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None, grpc: bool | None = None):
        self.rest_port = free_port()
        use_grpc = grpc_available() if grpc is None else grpc
        self.grpc_port = free_port() if use_grpc else 0
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.log = tempfile.NamedTemporaryFile(prefix="sigserve-serve-", suffix=".log", delete=False)
        full_env = dict(os.environ)
        full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        self.cmd = [
            PYTHON,
            "-m",
            "sigserve.cli",
            "serve",
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            "--rest_api_host=127.0.0.1",
            "--grpc_host=127.0.0.1",
            *args,
        ]
        self.proc = subprocess.Popen(
            self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env, cwd=str(ROOT)
        )

    def output(self) -> str:
        return pathlib.Path(self.log.name).read_text(errors="replace")

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
                try:
                    if client.get(self.url + "/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server not ready after {timeout}s:\n{self.output()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not exit in {timeout}s:\n{self.output()}") from None

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        return rc

    def rss_kib(self) -> int:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        if os.path.exists(self.log.name):
            os.unlink(self.log.name)


def run_serve(
    args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[int, str]:
    """Run `sigserve serve` expecting it to exit by itself (start-up failure, --version)."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [PYTHON, "-m", "sigserve.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=str(ROOT),
    )
    return proc.returncode, proc.stdout + proc.stderr


# -- process-level tests ---------------------------------------------------------------------------


def test_version_prints_tf_servings_two_lines() -> None:
    rc, out = run_serve(["--version"])
    assert rc == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("TensorFlow ModelServer: ")
    assert lines[1].startswith("TensorFlow Library: 2.")


def test_no_model_is_a_startup_failure_with_tf_servings_message() -> None:
    rc, out = run_serve(["--port=0", f"--rest_api_port={free_port()}"])
    assert rc != 0
    assert "Failed to start server. Error: INVALID_ARGUMENT: Both server_options.model_base_path and " in out


def test_batching_file_without_enable_batching_is_rejected(fixtures_dir: pathlib.Path) -> None:
    rc, out = run_serve(
        [
            "--port=0",
            f"--rest_api_port={free_port()}",
            "--model_base_path=/nonexistent",
            f"--batching_parameters_file={fixtures_dir / 'batching_config.txt'}",
        ]
    )
    assert rc != 0
    assert "batching_parameters_file is set without setting server_options.enable_batching to true" in out


def test_bad_model_config_file_is_a_startup_failure(fixtures_dir: pathlib.Path) -> None:
    rc, out = run_serve(
        [
            "--port=0",
            f"--rest_api_port={free_port()}",
            f"--model_config_file={fixtures_dir / 'bad_model_config.txt'}",
        ]
    )
    assert rc != 0
    assert "Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file" in out


def test_busy_rest_port_is_a_startup_failure(fixtures_dir: pathlib.Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        rc, out = run_serve(
            [
                "--port=0",
                f"--rest_api_port={busy}",
                "--rest_api_host=127.0.0.1",
                f"--model_base_path={fixtures_dir / 'saved_model_half_plus_two_cpu'}",
            ]
        )
    assert rc != 0
    assert (
        f"Failed to start server. Error: UNAVAILABLE: Could not bind the REST API to 127.0.0.1:{busy}" in out
    )


def test_model_that_cannot_load_is_a_startup_failure(fixtures_dir: pathlib.Path) -> None:
    rc, out = run_serve(
        [
            "--port=0",
            f"--rest_api_port={free_port()}",
            "--rest_api_host=127.0.0.1",
            "--max_num_load_retries=0",
            f"--model_base_path={fixtures_dir / 'bad_half_plus_two'}",
        ]
    )
    assert rc != 0
    assert "Failed to start server. Error: " in out


def test_a_missing_base_path_fails_start_up_with_fail_if_no_model_versions_found(
    tmp_path: pathlib.Path,
) -> None:
    missing = tmp_path / "nope"
    rc, out = run_serve(
        [
            "--port=0",
            f"--rest_api_port={free_port()}",
            "--rest_api_host=127.0.0.1",
            "--model_name=m",
            f"--model_base_path={missing}",
            "--fail_if_no_model_versions_found",
        ]
    )
    assert rc == 1
    assert (
        f"Failed to start server. Error: NOT_FOUND: Could not find base path {missing} for servable m "
        f"with error NOT_FOUND: {missing} not found"
    ) in out
    assert "Traceback" not in out


def test_model_name_and_base_path_from_the_environment(fixtures_dir: pathlib.Path) -> None:
    """As TF Serving's Docker image: model_base_path = $MODEL_BASE_PATH/$MODEL_NAME."""
    server = ServerProcess(
        ["--rest_api_timeout_in_ms=60000"],
        env={"MODEL_NAME": "saved_model_half_plus_three", "MODEL_BASE_PATH": str(fixtures_dir)},
        grpc=False,
    )
    try:
        server.wait_ready()
        r = httpx.post(
            server.url + "/v1/models/saved_model_half_plus_three:regress",
            json={"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]},
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"results": [3.5, 4.0]}
        assert f"Exporting HTTP/REST API at:localhost:{server.rest_port} ..." in server.output()
        assert server.stop() == 0
    finally:
        server.cleanup()


@pytest.mark.parametrize(
    "flag", ["--enable_profiler=false", "--flush_filesystem_caches", "--num_load_threads=2"]
)
def test_tf_serving_flags_without_effect_are_accepted(flag: str) -> None:
    """Existing tensorflow_model_server command lines keep working."""
    rc, out = run_serve([flag, "--port=0", f"--rest_api_port={free_port()}"])
    assert "unrecognized arguments" not in out
    assert "accepted for compatibility, no effect" in out
    assert rc != 0  # no model given


def test_stopping_a_server_whose_models_never_loaded_is_clean() -> None:
    """SIGTERM while the manager still waits for a base path that does not exist: a normal stop,
    not asyncio's "Future exception was never retrieved" traceback (issue 21, item 4)."""
    server = ServerProcess(["--model_name=m", "--model_base_path=/nonexistent/m"], grpc=False)
    try:
        deadline = time.monotonic() + 120
        while "loading models" not in server.output():
            assert server.proc.poll() is None, server.output()
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        assert server.stop() == 0
        out = server.output()
        assert "sigserve: stopped" in out
        assert "Traceback" not in out and "never retrieved" not in out, out
    finally:
        server.cleanup()
