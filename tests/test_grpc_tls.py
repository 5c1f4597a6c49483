"""TLS from --ssl_config_file (TF Serving's SSLConfig text proto), with certificates made here:
server-only TLS, and mutual TLS with client_verify. TF Serving's stubs and sigserve.client both."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from sigserve.client import Client
from sigserve.errors import Code, SigserveError
from tests.grpc_servers import Pki, make_pki, rpc_error, start_server, tf_stubs, write_ssl_config
from tests.servers import ServerProcess


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def _server(
    fixtures_dir: pathlib.Path, base: pathlib.Path, pki: Pki, client_verify: bool, transport: str
) -> ServerProcess:
    ssl = write_ssl_config(base / "ssl.config", pki, client_verify=client_verify)
    return start_server(
        base / "models.config",
        [("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu", {})],
        [f"--ssl_config_file={ssl}", f"--grpc_transport={transport}"],
    )


@pytest.fixture(scope="module", params=["native", "grpcio"])
def tls_servers(
    request: pytest.FixtureRequest,
    fixtures_dir: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
) -> Iterator[dict[bool, ServerProcess]]:
    """Two servers: {False: TLS, True: TLS + client_verify}, for each gRPC transport."""
    servers: dict[bool, ServerProcess] = {}
    try:
        for verify in (False, True):
            base = tmp_path_factory.mktemp(f"tls_{verify}")
            servers[verify] = _server(fixtures_dir, base, pki, verify, request.param)
        yield servers
    finally:
        for s in servers.values():
            s.stop()
            s.cleanup()


def _predict_request() -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray([[1.0]], np.float32)))
    return request


def _target(server: ServerProcess) -> str:
    return f"localhost:{server.grpc_port}"


def test_tls_with_tf_serving_stubs(tls_servers: dict[bool, ServerProcess], pki: Pki) -> None:
    server = tls_servers[False]
    stubs = tf_stubs(_target(server), grpc.ssl_channel_credentials(root_certificates=pki.ca_pem))
    try:
        response = stubs.prediction.Predict(_predict_request(), timeout=60)
        assert list(response.outputs["y"].float_val) == [2.5]
    finally:
        stubs.close()


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_servers: dict[bool, ServerProcess]) -> None:
    stubs = tf_stubs(_target(tls_servers[False]))
    try:
        error: Any = rpc_error(stubs.prediction.Predict, _predict_request(), timeout=10)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stubs.close()


def test_client_that_does_not_trust_the_ca_is_refused(tls_servers: dict[bool, ServerProcess]) -> None:
    other = make_pki()
    stubs = tf_stubs(
        _target(tls_servers[False]), grpc.ssl_channel_credentials(root_certificates=other.ca_pem)
    )
    try:
        error: Any = rpc_error(stubs.prediction.Predict, _predict_request(), timeout=10)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stubs.close()


def test_mutual_tls_accepts_a_client_certificate(tls_servers: dict[bool, ServerProcess], pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_pem, private_key=pki.client_key_pem, certificate_chain=pki.client_cert_pem
    )
    stubs = tf_stubs(_target(tls_servers[True]), credentials)
    try:
        assert list(stubs.prediction.Predict(_predict_request(), timeout=60).outputs["y"].float_val) == [2.5]
    finally:
        stubs.close()
    with Client(_target(tls_servers[True]), credentials=credentials, timeout=60) as client:
        np.testing.assert_allclose(client.predict("half_plus_two", {"x": np.float32([[3.0]])})["y"], [[3.5]])


def test_mutual_tls_refuses_a_client_without_certificate(
    tls_servers: dict[bool, ServerProcess], pki: Pki
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_pem)
    with Client(_target(tls_servers[True]), credentials=credentials, timeout=10) as client:
        with pytest.raises(SigserveError) as e:
            client.predict("half_plus_two", {"x": np.float32([[3.0]])})
        assert e.value.code == Code.UNAVAILABLE


def test_sigserve_client_over_tls(tls_servers: dict[bool, ServerProcess], pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_pem)
    with Client(_target(tls_servers[False]), credentials=credentials, timeout=60) as client:
        np.testing.assert_allclose(client.predict("half_plus_two", {"x": np.float32([[1.0]])})["y"], [[2.5]])
        assert [s.state for s in client.status("half_plus_two")] == ["AVAILABLE"]
