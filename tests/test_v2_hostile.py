"""Hostile V2 requests against a running `sigserve serve`: 2,400 generated inference requests over
REST JSON, REST binary framing and gRPC (the generators of tests/test_v2_codec.py, aimed at real
models). No 5xx but a deadline's 504, every REST error is `{"error": ...}`, no gRPC INTERNAL or
UNKNOWN, the server keeps answering, and its memory stays bounded."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import grpc
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.grpc_servers import CHANNEL_OPTIONS, grpc_target, serving
from tests.models import export_dtypes
from tests.servers import ServerProcess
from tests.test_v2_codec import HOSTILE_DOC, SETTINGS, body_of, hostile_binary, hostile_grpc

pytestmark = pytest.mark.slow

N_JSON, N_BINARY, N_GRPC = 900, 800, 700
MAX_BODY = 256 * 1024
MODELS = st.sampled_from(["half_plus_two", "tf1", "dtypes", "half_plus_two/versions/123", "nope"])


@pytest.fixture(scope="module")
def server(
    fixtures_dir: pathlib.Path,
    exported_models: dict[str, pathlib.Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("v2_hostile")
    models = [
        ("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu", {}),
        ("tf1", exported_models["tf1"].parent, {}),
        ("dtypes", export_dtypes(base / "models").parent, {}),
    ]
    with serving(base / "models.config", models, [f"--max_request_body_bytes={MAX_BODY}"]) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        yield c


@pytest.fixture(scope="module")
def baseline_rss(server: ServerProcess, client: httpx.Client) -> int:
    for _ in range(50):
        check_alive(client)
    return server.rss_kib()


def check_alive(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 1], "data": [1.0, 2.0, 5.0]}]}
    r = client.post("/v2/models/half_plus_two/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [2.5, 3.0, 4.5]


def check(r: httpx.Response) -> None:
    assert r.status_code < 500 or r.status_code == 504, (r.status_code, r.text[:500])
    if r.status_code != 200:
        assert r.headers["content-type"] == "application/json"
        assert list(r.json()) == ["error"], r.text[:500]


def test_hostile_json_bodies(client: httpx.Client, baseline_rss: int) -> None:
    @settings(SETTINGS, max_examples=N_JSON)
    @given(model=MODELS, doc=HOSTILE_DOC)
    def run(model: str, doc: dict[str, object]) -> None:
        check(client.post(f"/v2/models/{model}/infer", content=body_of(doc)))

    run()
    check_alive(client)


def test_hostile_binary_bodies(client: httpx.Client, baseline_rss: int) -> None:
    @settings(SETTINGS, max_examples=N_BINARY)
    @given(model=MODELS, case=hostile_binary())
    def run(model: str, case: tuple[bytes, str | None]) -> None:
        body, header = case
        headers = {"Content-Type": "application/octet-stream"}
        if header is not None and header.isprintable() and header.isascii():
            headers["Inference-Header-Content-Length"] = header
        check(client.post(f"/v2/models/{model}/infer", content=body, headers=headers))

    run()
    check_alive(client)


def test_hostile_grpc_requests(server: ServerProcess, client: httpx.Client, baseline_rss: int) -> None:
    with grpc.insecure_channel(grpc_target(server), options=CHANNEL_OPTIONS) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        @settings(SETTINGS, max_examples=N_GRPC)
        @given(data=hostile_grpc(), model=st.sampled_from(["half_plus_two", "tf1", "dtypes", ""]))
        def run(data: bytes, model: str) -> None:
            from sigserve.protos import open_inference_pb2 as pb

            try:  # aim the well-formed ones at a real model
                message = pb.ModelInferRequest.FromString(data)
                message.model_name = model
                data = message.SerializeToString()
            except Exception:
                pass
            try:
                infer(data, timeout=60)
            except grpc.RpcError as e:
                assert e.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), e.details()

        run()
    check_alive(client)


def test_memory_stays_bounded(server: ServerProcess, client: httpx.Client, baseline_rss: int) -> None:
    """Runs after the generated requests (file order): RSS may not grow without bound."""
    for _ in range(100):
        client.post(
            "/v2/models/half_plus_two/infer",
            content=b'{"inputs":[{"name":"x","datatype":"FP32","shape":[5000,1],"data":['
            + b"1.0," * 4999
            + b"1.0]}]}",
        )
    check_alive(client)
    grown_mib = (server.rss_kib() - baseline_rss) / 1024
    assert grown_mib < 256, f"RSS grew by {grown_mib:.0f} MiB over the hostile run"
