"""`--log_format=json`: the server's own log as one JSON object per line, with the model, version and
request id where the code that logs knows them; the default stays human-readable."""

from __future__ import annotations

import io
import json
import logging
import pathlib
import re
import threading

import httpx
import pytest

from sigserve import logformat
from tests.servers import ServerProcess, run_serve

TENSORFLOW_CPP_LINE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|[IWEF]\d{4} )")


def _record(logger: logging.Logger, stream: io.StringIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logformat.JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def test_json_lines_carry_the_context_of_the_code_that_logs() -> None:
    stream = io.StringIO()
    log = logging.getLogger("sigserve.test.logformat")
    handler = _record(log, stream)
    try:
        log.info("plain %s", "line")
        with logformat.log_context(model="m", version=3):
            with logformat.log_context(request_id="abc-1", version=None):
                log.warning('quote " and newline\nstay inside the line')
            log.info("override", extra={"version": 4})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        worker = threading.Thread(target=lambda: log.info("another thread"))
        with logformat.log_context(model="not-inherited"):
            worker.start()
            worker.join()
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    seen = [json.loads(line) for line in lines]
    assert len(lines) == 5
    first = seen[0]
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["level"] == "INFO" and first["logger"] == "sigserve.test.logformat"
    assert first["message"] == "plain line"
    assert str(first["time"]).endswith("Z") and "T" in str(first["time"])
    assert seen[1]["message"] == 'quote " and newline\nstay inside the line'
    assert (seen[1]["model"], seen[1]["version"], seen[1]["request_id"]) == ("m", 3, "abc-1")
    assert (seen[2]["model"], seen[2]["version"]) == ("m", 4)
    assert "request_id" not in seen[2]
    assert seen[3]["level"] == "ERROR" and "ValueError: boom" in str(seen[3]["exception"])
    assert "model" not in seen[4]  # a context belongs to its own thread


def test_an_unknown_log_format_is_a_startup_failure() -> None:
    code, output = run_serve(["--model_base_path=/nonexistent", "--log_format=xml"])
    assert code == 1
    assert "--log_format must be one of text, json, not 'xml'" in output


def test_the_server_logs_json_lines(fixtures_dir: pathlib.Path) -> None:
    server = ServerProcess(
        [
            "--model_name=half_plus_two",
            f"--model_base_path={fixtures_dir / 'saved_model_half_plus_two_cpu'}",
            "--log_format=json",
        ]
    )
    try:
        server.wait_ready()
        response = httpx.post(server.url + "/v1/models/half_plus_two:predict", json={"instances": [1.0]})
        assert response.json() == {"predictions": [2.5]}
        assert server.stop() == 0
        lines = [line for line in server.output().splitlines() if line.strip()]
    finally:
        server.cleanup()
    # Every line is one JSON object, except what TensorFlow's C++ runtime writes to stderr itself.
    entries = [json.loads(line) for line in lines if not TENSORFLOW_CPP_LINE.match(line)]
    messages = [e["message"] for e in entries]
    assert any(m.startswith("Exporting HTTP/REST API at:localhost:") for m in messages)
    loading = [e for e in entries if e["logger"].startswith("sigserve.manager") and e.get("model")]
    assert loading and all(e["model"] == "half_plus_two" and e["version"] == 123 for e in loading)
    assert messages[-1] == "sigserve: stopped"


def test_the_default_log_stays_text(fixtures_dir: pathlib.Path) -> None:
    pytest.importorskip("tensorflow")
    server = ServerProcess(
        ["--model_name=half_plus_two", f"--model_base_path={fixtures_dir / 'saved_model_half_plus_two_cpu'}"]
    )
    try:
        server.wait_ready()
        assert server.stop() == 0
        output = server.output()
    finally:
        server.cleanup()
    assert "Exporting HTTP/REST API at:localhost:" in output
    assert not any(line.startswith("{") for line in output.splitlines())
