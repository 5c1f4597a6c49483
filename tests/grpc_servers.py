"""Helpers for the gRPC and client tests: `sigserve serve` processes with gRPC on, TF Serving's own
Python stubs on a channel, certificates, and a model that runs for as long as it is asked to."""

from __future__ import annotations

import contextlib
import datetime
import pathlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import httpx

from tests.servers import ServerProcess, write_model_config

INT32_MAX = 2**31 - 1
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", INT32_MAX),
    ("grpc.max_send_message_length", INT32_MAX),
]


def fixture_models(fixtures_dir: pathlib.Path) -> list[tuple[str, pathlib.Path, dict[str, int]]]:
    """TF Serving's test models under the names the tests use; two versions with labels."""
    return [
        ("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu", {}),
        ("half_plus_three", fixtures_dir / "saved_model_half_plus_three", {}),
        (
            "saved_model_half_plus_two_2_versions",
            fixtures_dir / "saved_model_half_plus_two_2_versions",
            {"stable": 123, "canary": 124},
        ),
    ]


def start_server(
    config_path: pathlib.Path,
    models: Sequence[tuple[str, pathlib.Path, dict[str, int]]],
    extra_args: Sequence[str] = (),
) -> ServerProcess:
    """`sigserve serve` with gRPC on a free port, REST on another, these models; waits until ready."""
    write_model_config(config_path, models)
    proc = ServerProcess([f"--model_config_file={config_path}", *extra_args], grpc=True)
    try:
        proc.wait_ready()
    except BaseException:
        proc.cleanup()
        raise
    return proc


@contextlib.contextmanager
def serving(
    config_path: pathlib.Path,
    models: Sequence[tuple[str, pathlib.Path, dict[str, int]]],
    extra_args: Sequence[str] = (),
) -> Iterator[ServerProcess]:
    """`start_server` for a `with` block (a module fixture's body): stopped and cleaned up after."""
    proc = start_server(config_path, models, extra_args)
    try:
        yield proc
    finally:
        proc.stop()
        proc.cleanup()


def grpc_target(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.grpc_port}"


@dataclass
class Stubs:
    """TF Serving's own generated stubs (tensorflow-serving-api) on one channel."""

    channel: grpc.Channel
    prediction: Any
    model: Any

    def close(self) -> None:
        self.channel.close()


def tf_stubs(target: str, credentials: grpc.ChannelCredentials | None = None, **options: Any) -> Stubs:
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    opts = CHANNEL_OPTIONS + list(options.items())
    if credentials is None:
        channel = grpc.insecure_channel(target, options=opts)
    else:
        channel = grpc.secure_channel(target, credentials, options=opts)
    return Stubs(
        channel,
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )


def rpc_error(call: Callable[..., Any], request: Any, timeout: float = 60.0) -> grpc.RpcError:
    """The RpcError a call must fail with."""
    try:
        call(request, timeout=timeout)
    except grpc.RpcError as e:
        return e
    raise AssertionError(f"expected an RPC error for {type(request).__name__}")


def metrics_text(server: ServerProcess) -> str:
    r = httpx.get(server.url + "/monitoring/prometheus/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return r.text


def wait_for_metric(server: ServerProcess, needle: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = metrics_text(server)
        if needle in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not in the metrics after {timeout}s:\n{text[-3000:]}")


# -- a model that runs as long as asked ------------------------------------------------------------


def export_spin_model(base: pathlib.Path) -> pathlib.Path:
    """`spin`: serving_default counts from 0 to the int64 input `n` in a tf.while_loop and returns
    the count (`i`), so a caller picks how long TensorFlow runs (n = 10**12: hours)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir = base / "spin" / "1"
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        n = v1.placeholder(tf.int64, shape=[], name="n")
        i = tf.while_loop(lambda i: i < n, lambda i: i + 1, [tf.constant(0, tf.int64)], name="spin")
        out = tf.identity(i, name="i")
        signature = v1.saved_model.signature_def_utils.predict_signature_def({"n": n}, {"i": out})
        with v1.Session(graph=graph) as sess:
            builder = v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()
    return export_dir.parent


# -- certificates ----------------------------------------------------------------------------------


@dataclass
class Pki:
    ca_pem: bytes
    server_key_pem: bytes
    server_cert_pem: bytes
    client_key_pem: bytes
    client_cert_pem: bytes


def make_pki() -> Pki:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key() -> Any:
        return ec.generate_private_key(ec.SECP256R1())

    def pem_key(k: Any) -> bytes:
        return bytes(
            k.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = key()
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("sigserve test CA"))
        .issuer_name(name("sigserve test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: Any, san: Sequence[x509.GeneralName]) -> tuple[bytes, bytes]:
        k = key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return pem_key(k), cert.public_bytes(serialization.Encoding.PEM)

    import ipaddress

    server_key, server_cert = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key, client_cert = leaf("sigserve test client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Pki(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        server_key_pem=server_key,
        server_cert_pem=server_cert,
        client_key_pem=client_key,
        client_cert_pem=client_cert,
    )


def write_ssl_config(path: pathlib.Path, pki: Pki, *, client_verify: bool) -> pathlib.Path:
    """TF Serving's SSLConfig text proto (PEM strings inline)."""

    def quoted(pem: bytes) -> str:
        return '"' + pem.decode().replace("\n", "\\n") + '"'

    lines = [f"server_key: {quoted(pki.server_key_pem)}", f"server_cert: {quoted(pki.server_cert_pem)}"]
    if client_verify:
        lines += [f"custom_ca: {quoted(pki.ca_pem)}", "client_verify: true"]
    path.write_text("\n".join(lines) + "\n")
    return path
