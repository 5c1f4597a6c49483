"""End to end: `sigserve serve` in a subprocess with TF Serving's own test models, every REST endpoint
and every error path of tfserving-api.md §1, checked with httpx."""

from __future__ import annotations

import gzip
import json
import pathlib
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import ServerProcess, write_model_config

MAX_BODY = 1 << 20  # this server's --max_request_body_bytes


@pytest.fixture(scope="module")
def server(fixtures_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("rest_api") / "models.config"
    write_model_config(
        config,
        [
            ("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu", {}),
            ("half_plus_three", fixtures_dir / "saved_model_half_plus_three", {}),
            ("default", fixtures_dir / "saved_model_half_plus_two_cpu", {}),
            (
                "saved_model_half_plus_two_2_versions",
                fixtures_dir / "saved_model_half_plus_two_2_versions",
                {"stable": 123, "canary": 124},
            ),
        ],
    )
    proc = ServerProcess(
        [
            f"--model_config_file={config}",
            "--rest_api_enable_cors_support",
            f"--max_request_body_bytes={MAX_BODY}",
            f"--monitoring_config_file={fixtures_dir / 'monitoring_config.txt'}",
        ]
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


def error_of(r: httpx.Response, status: int) -> str:
    """The `{"error": ...}` message of a response that must have this status and a JSON body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["error"], body
    return str(body["error"])


# -- the docs' examples ----------------------------------------------------------------------------


def test_docs_predict_example(client: httpx.Client) -> None:
    r = client.post("/v1/models/half_plus_two:predict", json={"instances": [1.0, 2.0, 5.0]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}


def test_docs_regress_example(client: httpx.Client) -> None:
    body = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}
    r = client.post("/v1/models/half_plus_three:regress", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [3.5, 4.0]}


@pytest.mark.parametrize(
    ("path", "fixture"),
    [
        (
            "/v1/models/saved_model_half_plus_two_2_versions/versions/123/metadata",
            "saved_model_half_plus_two_2_versions_metadata.json",
        ),
        ("/v1/models/default/metadata", "half_plus_two_model_metadata.json"),
    ],
)
def test_metadata_equals_tf_servings_json(
    client: httpx.Client, fixtures_dir: pathlib.Path, path: str, fixture: str
) -> None:
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == json.loads((fixtures_dir / fixture).read_text())


# -- model status (§1.5) ---------------------------------------------------------------------------


def test_status_all_versions_descending(client: httpx.Client) -> None:
    r = client.get("/v1/models/saved_model_half_plus_two_2_versions")
    assert r.status_code == 200, r.text
    ok = {"error_code": "OK", "error_message": ""}
    assert r.json() == {
        "model_version_status": [
            {"version": "124", "state": "AVAILABLE", "status": ok},
            {"version": "123", "state": "AVAILABLE", "status": ok},
        ]
    }


def test_status_one_version(client: httpx.Client) -> None:
    r = client.get("/v1/models/half_plus_two/versions/123")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def test_status_ignores_the_label(client: httpx.Client) -> None:
    r = client.get("/v1/models/saved_model_half_plus_two_2_versions/labels/stable")
    assert r.status_code == 200, r.text
    assert [s["version"] for s in r.json()["model_version_status"]] == ["124", "123"]


def test_status_errors(client: httpx.Client) -> None:
    assert "Could not find any versions of model nope" in error_of(client.get("/v1/models/nope"), 404)
    msg = error_of(client.get("/v1/models/half_plus_two/versions/999"), 404)
    assert "Could not find version 999 of model half_plus_two" in msg
    assert error_of(client.get("/v1/models"), 400) == "Missing model name in request."
    msg = error_of(client.get("/v1/models/half_plus_two/versions/18446744073709551615"), 400)
    assert msg == "Failed to convert version: 18446744073709551615 to numeric."


# -- metadata (§1.6) -------------------------------------------------------------------------------


def test_metadata_latest_version_and_labels(client: httpx.Client) -> None:
    base = "/v1/models/saved_model_half_plus_two_2_versions"
    assert client.get(base + "/metadata").json()["model_spec"]["version"] == "124"
    assert client.get(base + "/labels/stable/metadata").json()["model_spec"]["version"] == "123"
    assert client.get(base + "/labels/canary/metadata").json()["model_spec"]["version"] == "124"
    assert client.get(base + "/versions/123/metadata").json()["model_spec"] == {
        "name": "saved_model_half_plus_two_2_versions",
        "signature_name": "",
        "version": "123",
    }


def test_metadata_errors(client: httpx.Client) -> None:
    base = "/v1/models/saved_model_half_plus_two_2_versions"
    assert "Unrecognized servable version label: nope" in error_of(
        client.get(base + "/labels/nope/metadata"), 400
    )
    msg = error_of(client.get(base + "/versions/7/metadata"), 404)
    assert "Servable not found for request: Specific(saved_model_half_plus_two_2_versions, 7)" in msg
    assert "Servable not found for request: Latest(nope)" in error_of(
        client.get("/v1/models/nope/metadata"), 404
    )


# -- predict (§1.7, §1.8) --------------------------------------------------------------------------


def test_predict_versions_labels_and_columnar(client: httpx.Client) -> None:
    body = {"instances": [[1.0], [2.0]]}
    expected = {"predictions": [[2.5], [3.0]]}
    for path in (
        "/v1/models/half_plus_two/versions/123:predict",
        "/v1/models/saved_model_half_plus_two_2_versions/labels/stable:predict",
        "/v1/models/saved_model_half_plus_two_2_versions:predict",
        "/v1/MODELS/half_plus_two:predict",  # the URL grammar is case-insensitive
        "/v1/models/half%5Fplus%5Ftwo:predict",  # the model name is percent-decoded
    ):
        r = client.post(path, json=body)
        assert r.status_code == 200, (path, r.text)
        assert r.json() == expected, path
    r = client.post("/v1/models/half_plus_two:predict", json={"inputs": [[1.0], [3.0]]})
    assert r.status_code == 200, r.text
    assert r.json() == {"outputs": [[2.5], [3.5]]}


def test_predict_with_a_named_signature(client: httpx.Client) -> None:
    r = client.post(
        "/v1/models/half_plus_two:predict",
        json={"signature_name": "regress_x2_to_y3", "instances": [[4.0]]},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [[5.0]]}


def test_predict_errors(client: httpx.Client) -> None:
    url = "/v1/models/half_plus_two:predict"
    assert "JSON Parse error: The document is empty" in error_of(client.post(url, content=b""), 400)
    assert "JSON Parse error: Invalid value" in error_of(client.post(url, content=b"instances = [1, 2]"), 400)
    msg = error_of(client.post(url, json={"signature_name": "nope", "instances": [1.0]}), 400)
    assert msg == 'Serving signature name: "nope" not found in signature def'
    msg = error_of(client.post(url, json={"instances": [1.0], "inputs": [1.0]}), 400)
    assert "expecting only one of 'inputs' or 'instances' keys to exist" in msg
    assert "Missing 'inputs' or 'instances' key" in error_of(client.post(url, json={"x": 1}), 400)
    msg = error_of(client.post(url, json={"instances": ["a"]}), 400)
    assert 'JSON Value: "a" Type: String is not of expected type: float' in msg
    msg = error_of(client.post("/v1/models/nope:predict", json={"instances": [1.0]}), 404)
    assert msg == "Servable not found for request: Latest(nope)"
    msg = error_of(client.post("/v1/models/half_plus_two/versions/9:predict", json={"instances": [1.0]}), 404)
    assert msg == "Servable not found for request: Specific(half_plus_two, 9)"
    msg = error_of(
        client.post("/v1/models/half_plus_two/labels/nope:predict", json={"instances": [1.0]}), 400
    )
    assert "Unrecognized servable version label: nope" in msg


# -- classify / regress (§1.9) ---------------------------------------------------------------------


def test_classify_and_regress(client: httpx.Client) -> None:
    r = client.post(
        "/v1/models/half_plus_two:classify",
        json={"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [[["", 12.0]]]}
    r = client.post(
        "/v1/models/half_plus_two:regress",
        json={"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [42.0]}


def test_classify_and_regress_errors(client: httpx.Client) -> None:
    msg = error_of(client.post("/v1/models/half_plus_three:regress", json={"signature_name": "x"}), 400)
    assert "When method is classify, key 'examples' is expected and was not found" in msg
    msg = error_of(client.post("/v1/models/half_plus_three:regress", json={"examples": []}), 400)
    assert "'examples' value is an empty array" in msg
    msg = error_of(client.post("/v1/models/nope:classify", json={"examples": [{"x": 1.0}]}), 404)
    assert msg == "Servable not found for request: Latest(nope)"


# -- URL grammar, methods, transport (§1.1, §1.2) --------------------------------------------------

MALFORMED = [
    ("GET", "/v1/foo"),
    ("POST", "/v1/foo"),
    ("GET", "/v1/models/debug/model_name"),
    ("POST", "/v1/models"),
    ("GET", "/v1/models/foo:predict"),
    ("GET", "/v1/models/foo/version/50:predict"),
    ("POST", "/v1/models/foo/version/50:regress"),
    ("POST", "/v1/models/foo/versions/HELLO:regress"),
    ("POST", "/v1/models/foo/metadata"),
    ("POST", "/v1/models/foo/label/some_label:regress"),
    ("POST", "/v1/models/foo/versions/50/labels/some_label:regress"),
    ("POST", "/v1/models/foo/versions/some_label:regress"),
    ("POST", "/v1/models/half_plus_two:PREDICT"),  # the verb is compared case-sensitively
    ("POST", "/v1/models/half_plus_two:predict?x=1"),  # a query string breaks routing, as in TF Serving
    ("PUT", "/v1/models/half_plus_two:predict"),
    ("DELETE", "/v1/models/half_plus_two"),
    ("PATCH", "/v1/models/half_plus_two"),
]


@pytest.mark.parametrize(("method", "path"), MALFORMED)
def test_malformed_requests(client: httpx.Client, method: str, path: str) -> None:
    r = client.request(method, path, content=b"{}" if method != "GET" else None)
    assert error_of(r, 400) == f"Malformed request: {method} {path}"


def test_a_query_string_is_part_of_the_model_name(client: httpx.Client) -> None:
    """TF Serving matches `[^/:]+` against the path with its query: `m?x=1` is then the model name."""
    msg = error_of(client.get("/v1/models/half_plus_two?x=1"), 404)
    assert "Could not find any versions of model half_plus_two?x=1" in msg


def test_head_is_malformed_too(client: httpx.Client) -> None:
    r = client.head("/v1/models/half_plus_two")
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"


def test_paths_outside_v1_are_a_plain_404(client: httpx.Client) -> None:
    # ("/" is sigserve's web console, /v2 the Open Inference Protocol: see their own tests.)
    for path in ("/v3/models/half_plus_two", "/models/half_plus_two:predict", "/index.html"):
        r = client.get(path)
        assert r.status_code == 404
        assert r.headers["content-type"] != "application/json"


def test_cors_headers_and_preflight(client: httpx.Client) -> None:
    for r in (
        client.get("/v1/models/half_plus_two"),
        client.post("/v1/models/nope:predict", json={"instances": [1.0]}),
    ):
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.headers["access-control-allow-methods"] == "POST, GET"
        assert r.headers["access-control-allow-headers"] == "Content-Type"
    r = client.options("/v1/models/half_plus_two:predict", headers={"Origin": "https://example.com"})
    assert r.status_code == 200
    assert r.content == b""
    r = client.options("/v1/models/half_plus_two:predict")
    assert r.status_code == 400
    assert r.content == b""


def test_gzip_request_body(client: httpx.Client) -> None:
    body = gzip.compress(json.dumps({"instances": [1.0, 2.0, 5.0]}).encode())
    r = client.post("/v1/models/half_plus_two:predict", content=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}
    r = client.post(
        "/v1/models/half_plus_two:predict", content=b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    assert "Failed to decompress the gzip request body" in error_of(r, 400)


def test_request_body_limit_is_413(client: httpx.Client) -> None:
    big = b'{"instances": [' + b"1.0," * (MAX_BODY // 4) + b"1.0]}"
    msg = error_of(client.post("/v1/models/half_plus_two:predict", content=big), 413)
    assert f"limit of {MAX_BODY} bytes" in msg
    # A gzip bomb: tiny on the wire, over the limit once decoded.
    bomb = gzip.compress(b'{"instances": [' + b"1.0," * MAX_BODY + b"1.0]}")
    assert len(bomb) < MAX_BODY
    r = client.post("/v1/models/half_plus_two:predict", content=bomb, headers={"Content-Encoding": "gzip"})
    assert f"limit of {MAX_BODY} bytes" in error_of(r, 413)
    # The server is fine afterwards.
    r = client.post("/v1/models/half_plus_two:predict", json={"instances": [1.0]})
    assert r.json() == {"predictions": [2.5]}


# -- health and metrics ----------------------------------------------------------------------------


def test_healthz_and_readyz(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ready",
        "models": {
            "half_plus_two": "AVAILABLE",
            "half_plus_three": "AVAILABLE",
            "default": "AVAILABLE",
            "saved_model_half_plus_two_2_versions": "AVAILABLE",
        },
    }


def test_prometheus_metrics(client: httpx.Client) -> None:
    client.post("/v1/models/half_plus_two:predict", json={"instances": [1.0]})
    client.post("/v1/models/nope:predict", json={"instances": [1.0]})
    r = client.get("/monitoring/prometheus/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE :tensorflow:serving:request_count counter\n" in text
    assert (
        ':tensorflow:serving:request_count{model_name="half_plus_two",status="OK",signature="serving_default",'
        'protocol="tfserving"}' in text
    )
    assert (
        ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND",signature="",'
        'protocol="tfserving"}' in text
    )
    assert "# TYPE :tensorflow:serving:request_latency histogram\n" in text
    assert (
        ':tensorflow:serving:request_latency_count{model_name="half_plus_two",API="predict",entrypoint="REST",'
        'signature="serving_default",protocol="tfserving"}'
    ) in text
    assert (
        ':tensorflow:serving:runtime_latency_count{model_name="half_plus_two",API="Predict",runtime="TF1"'
        in text
    )
    assert "_total{" not in text.replace("request_example_count_total{", "")
    r = client.get("/monitoring/prometheus/metrics?x=1")
    assert r.status_code == 400
    assert (
        r.text
        == "Unexpected path: /monitoring/prometheus/metrics?x=1. Should be /monitoring/prometheus/metrics"
    )
