"""`sigserve serve` as a process: flags, env vars, start-up failures, --version."""

from __future__ import annotations

import pathlib
import time

import httpx
import pytest

from tests.conftest import free_port
from tests.servers import PYTHON, ServerProcess, grpc_available, run_serve, write_model_config  # noqa: F401

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
