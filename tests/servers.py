"""`sigserve serve` as a subprocess on free loopback ports: the helper every server-level test
module shares (REST, gRPC, V2, storage, request logging)."""

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
