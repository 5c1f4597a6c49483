"""The OpenAPI documents a live `sigserve serve` publishes: they validate, follow hot reloads, and
schemathesis, generating requests from them, finds no 5xx and no response that breaks them, on TF
Serving's fixtures and on the project's exported models (string, int, float, multi-input)."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from tests.servers import ServerProcess, write_model_config

# What schemathesis checks. Not its `positive_data_acceptance`: a request can fit the document and
# still fail in the model (random strings are not serialized tf.Examples), which TF Serving answers
# 400, as documented. Not `negative_data_rejection`: the documents are stricter than the server
# about shapes (known dimensions), so the server accepts some requests they exclude.
CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)


Models = list[tuple[str, pathlib.Path, dict[str, int]]]


@pytest.fixture(scope="module")
def config(
    fixtures_dir: pathlib.Path,
    exported_models: dict[str, pathlib.Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[pathlib.Path, Models]:
    """The model config file the server polls, and what it lists."""
    path = tmp_path_factory.mktemp("openapi_live") / "models.config"
    models: Models = [
        ("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu", {}),
        ("half_plus_three", fixtures_dir / "saved_model_half_plus_three", {}),
        ("two_versions", fixtures_dir / "saved_model_half_plus_two_2_versions", {"stable": 123}),
    ] + [(name, p.parent, {}) for name, p in sorted(exported_models.items())]
    write_model_config(path, models)
    return path, models


@pytest.fixture(scope="module")
def server(config: tuple[pathlib.Path, Models]) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        [f"--model_config_file={config[0]}", "--model_config_file_poll_wait_seconds=1"], grpc=False
    )
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


def test_server_document(client: httpx.Client) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    validate(doc)
    models = doc["x-sigserve-models"]
    assert models["two_versions"] == {"latest": 124, "versions": [123, 124]}
    assert set(models) == {
        "half_plus_two",
        "half_plus_three",
        "two_versions",
        "tf1",
        "tf2",
        "keras",
        "estimator",
    }
    for path in (
        "/v1/models/half_plus_two:predict",
        "/v1/models/two_versions/versions/123:predict",
        "/v1/models/tf1:classify",
        "/v1/models/estimator:regress",
        "/healthz",
        "/readyz",
        "/monitoring/prometheus/metrics",
    ):
        assert path in doc["paths"], path
    # Without --auth_token_file the document asks for nothing.
    assert "security" not in doc and "securitySchemes" not in doc["components"]


def test_model_documents(client: httpx.Client) -> None:
    latest = client.get("/v1/models/two_versions/openapi.json")
    assert latest.status_code == 200, latest.text
    validate(latest.json())
    paths = set(latest.json()["paths"])
    assert {"/v1/models/two_versions:predict", "/v1/models/two_versions/versions/123:predict"} <= paths
    assert not any(p.startswith("/v1/models/half_plus_two") for p in paths)
    one = client.get("/v1/models/two_versions/versions/123/openapi.json").json()
    validate(one)
    assert all(p.startswith("/v1/models/two_versions/versions/123") for p in one["paths"])
    labelled = client.get("/v1/models/two_versions/labels/stable/openapi.json").json()
    assert labelled["paths"].keys() == one["paths"].keys()
    # TF Serving's errors for what is not served, in its format.
    r = client.get("/v1/models/nope/openapi.json")
    assert r.status_code == 404 and r.json() == {"error": "Servable not found for request: Latest(nope)"}
    r = client.get("/v1/models/two_versions/versions/9/openapi.json")
    assert r.status_code == 404 and "Specific(two_versions, 9)" in r.json()["error"]
    r = client.get("/v1/models/two_versions/labels/nope/openapi.json")
    assert r.status_code == 400 and "Unrecognized servable version label: nope" in r.json()["error"]
    r = client.get("/v1/models/two_versions/OPENAPI.JSON")
    assert r.status_code == 400 and r.json()["error"].startswith("Malformed request: GET ")


def test_documents_follow_a_reload(config: tuple[pathlib.Path, Models], client: httpx.Client) -> None:
    """The model config file is re-read every second: a model added there appears in /openapi.json
    once it is AVAILABLE, and goes away with it."""
    path, models = config
    half_plus_two = next(path for name, path, _ in models if name == "half_plus_two")

    def names() -> set[str]:
        return set(client.get("/openapi.json").json()["x-sigserve-models"])

    def wait_for(predicate: Any) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if predicate(names()):
                return
            time.sleep(0.3)
        raise AssertionError(f"document did not follow the reload: {sorted(names())}")

    write_model_config(path, [*models, ("added", half_plus_two, {})])
    try:
        wait_for(lambda n: "added" in n)
        doc = client.get("/openapi.json").json()
        assert "/v1/models/added:predict" in doc["paths"]
    finally:
        write_model_config(path, models)
    wait_for(lambda n: "added" not in n)


@pytest.mark.slow
def test_schemathesis_finds_nothing(client: httpx.Client, server: ServerProcess) -> None:
    """Every operation of the server's own document, fuzzed from its schemas (plus its examples)."""
    schemathesis = pytest.importorskip("schemathesis")
    import schemathesis.checks as st_checks
    from hypothesis import HealthCheck, Phase, given, settings

    @schemathesis.deserializer("application/json")
    def tf_serving_json(ctx: Any, response: Any) -> Any:
        # TF Serving writes non-finite floats as the tokens NaN / Infinity / -Infinity (not JSON;
        # the documents say so). Where one appears it must stand where a number may: 0.5 is a
        # number that is no integer, so a token in an integer or string slot still fails.
        return json.loads(response.content, parse_constant=lambda token: 0.5)

    checks = [getattr(st_checks, name) for name in CHECK_NAMES]
    doc = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    statuses: dict[str, list[int]] = {}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 60

    def fuzz(operation: Any, seen: list[int]) -> None:
        posts = operation.method.upper() == "POST"

        @settings(
            max_examples=12 if posts else 1,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call_and_validate(base_url=server.url, checks=checks)
            seen.append(response.status_code)

        run()

    for operation in operations:
        try:
            fuzz(operation, statuses.setdefault(operation.label, []))
        except Exception as e:  # one line per failing operation, all reported together
            failures.append(f"{operation.label}: {str(e)[:2000]}")
    assert not failures, "\n\n".join(failures)
    # The documents describe requests that work: predicts on numeric signatures got 200s (the
    # estimator's take serialized tf.Examples, which random strings are not).
    for label, codes in statuses.items():
        if label.endswith(":predict") and "estimator" not in label:
            assert 200 in codes, (label, codes)
    assert all(code < 500 for codes in statuses.values() for code in codes)
