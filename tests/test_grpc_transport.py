"""The gRPC front end's own rules, without a model: status-code mapping, message truncation,
--grpc_channel_arguments, --ssl_config_file checks, listen addresses, metric_names lookup."""

from __future__ import annotations

import pathlib

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sigserve.errors import Code, SigserveError
from sigserve.server import grpc_methods, grpc_server
from sigserve.server.grpc_handlers import read_int_metrics
from sigserve.server.options import ServerOptions
from sigserve.service import Metrics, PredictionService


@pytest.mark.parametrize("code", list(Code))
def test_every_code_passes_through_with_the_same_number(code: Code) -> None:
    status = grpc_server.grpc_status(code)
    assert status.value[0] == int(code)
    assert status.name == code.name


@given(st.text(max_size=3000))
def test_messages_are_truncated_as_tf_serving_does(message: str) -> None:
    out = grpc_methods.truncate_message(message)
    if len(message) <= 1024:
        assert out == message
    else:
        assert out == message[:1024] + "...TRUNCATED"


def test_channel_arguments_ints_and_strings() -> None:
    assert grpc_server.parse_channel_arguments(
        "grpc.max_concurrent_streams=100, grpc.primary_user_agent=sigserve/1 ,x=2147483648,,y=-3"
    ) == [
        ("grpc.max_concurrent_streams", 100),
        ("grpc.primary_user_agent", "sigserve/1"),
        ("x", "2147483648"),  # outside int32: passed as a string, as TF Serving does
        ("y", -3),
    ]
    assert grpc_server.parse_channel_arguments("") == []


@pytest.mark.parametrize("bad", ["novalue", "=3", "a=1,b"])
def test_malformed_channel_arguments_are_a_clear_error(bad: str) -> None:
    with pytest.raises(SigserveError) as e:
        grpc_server.parse_channel_arguments(bad)
    assert e.value.code == Code.INVALID_ARGUMENT
    assert "--grpc_channel_arguments" in e.value.message and "e.g." in e.value.message


@given(
    st.lists(
        st.tuples(
            st.text(
                alphabet=st.characters(blacklist_characters=",=", blacklist_categories=("Cs", "Zs", "Cc")),
                min_size=1,
            ),
            st.one_of(st.integers(-(2**31), 2**31 - 1), st.from_regex(r"[a-z/._-]{1,10}", fullmatch=True)),
        ),
        max_size=5,
    )
)
def test_channel_arguments_round_trip(pairs: list[tuple[str, int | str]]) -> None:
    text = ",".join(f"{k}={v}" for k, v in pairs)
    assert grpc_server.parse_channel_arguments(text) == [(k.strip(), v) for k, v in pairs]


def test_user_channel_arguments_replace_the_defaults() -> None:
    options = ServerOptions(grpc_channel_arguments="grpc.max_receive_message_length=1024")
    got = dict(grpc_server.server_channel_options(options))
    assert got["grpc.max_receive_message_length"] == 1024
    assert got["grpc.max_send_message_length"] == 2**31 - 1
    assert list(dict(grpc_server.server_channel_options(ServerOptions())).values()).count(2**31 - 1) == 2


def test_listen_addresses() -> None:
    assert grpc_server.listen_addresses(ServerOptions(port=8500)) == ["0.0.0.0:8500"]
    assert grpc_server.listen_addresses(ServerOptions(port=1, grpc_host="::1")) == ["[::1]:1"]
    assert grpc_server.listen_addresses(ServerOptions(port=0, grpc_socket_path="/tmp/s.sock")) == [
        "unix:/tmp/s.sock"
    ]
    assert grpc_server.listen_addresses(ServerOptions(port=0)) == []


def test_ssl_config_file_errors(tmp_path: pathlib.Path) -> None:
    missing = ServerOptions(ssl_config_file=str(tmp_path / "nope.txt"))
    with pytest.raises(SigserveError, match="Could not read --ssl_config_file"):
        grpc_server.server_credentials(missing)

    bad = tmp_path / "bad.txt"
    bad.write_text("server_key: 12 12")
    with pytest.raises(SigserveError, match="Invalid protobuf file"):
        grpc_server.server_credentials(ServerOptions(ssl_config_file=str(bad)))

    no_cert = tmp_path / "no_cert.txt"
    no_cert.write_text('server_key: "k"')
    with pytest.raises(SigserveError, match="needs both server_key and server_cert"):
        grpc_server.server_credentials(ServerOptions(ssl_config_file=str(no_cert)))

    no_ca = tmp_path / "no_ca.txt"
    no_ca.write_text('server_key: "k" server_cert: "c" client_verify: true')
    with pytest.raises(SigserveError, match="client_verify: true without custom_ca"):
        grpc_server.server_credentials(ServerOptions(ssl_config_file=str(no_ca)))

    assert grpc_server.server_credentials(ServerOptions()) is None


def test_ssl_config_file_builds_credentials(tmp_path: pathlib.Path) -> None:
    from tests.grpc_servers import make_pki, write_ssl_config

    pki = make_pki()
    for verify in (False, True):
        path = write_ssl_config(tmp_path / f"ssl_{verify}.txt", pki, client_verify=verify)
        assert isinstance(
            grpc_server.server_credentials(ServerOptions(ssl_config_file=str(path))), grpc.ServerCredentials
        )


def test_metric_names_read_counters_by_tf_or_prometheus_name() -> None:
    metrics = Metrics()
    names = ["/tensorflow/serving/request_count", ":tensorflow:serving:request_count", "/nope"]
    assert read_int_metrics(metrics, names) == dict.fromkeys(names, 0)
    for model in ("a", "b", "b"):
        metrics.observe_request(
            model_name=model,
            api="Predict",
            entrypoint="GRPC",
            signature="s",
            code=Code.OK,
            latency_seconds=0.001,
        )
    metrics.observe_examples(model_name="a", count=5)
    got = read_int_metrics(metrics, [*names, "/tensorflow/serving/request_example_count_total"])
    assert got == {
        "/tensorflow/serving/request_count": 3,
        ":tensorflow:serving:request_count": 3,
        "/nope": 0,
        "/tensorflow/serving/request_example_count_total": 5,
    }


async def _create(options: ServerOptions) -> grpc_server.GrpcServer:
    return grpc_server.create_server(PredictionService(object(), Metrics()), options)  # type: ignore[arg-type]


def test_create_server_start_up_errors() -> None:
    """Checked before any model is served: a bad flag is a start-up failure, not a traceback."""
    import asyncio
    import socket

    with pytest.raises(SigserveError, match=r"At least one of server_options\.grpc_port"):
        asyncio.run(_create(ServerOptions(port=0)))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for transport in ("native", "grpcio"):
            with pytest.raises(SigserveError) as e:
                asyncio.run(
                    _create(ServerOptions(port=port, grpc_host="127.0.0.1", grpc_transport=transport))
                )
            assert e.value.code == Code.UNAVAILABLE
            assert f"Could not bind the gRPC API to 127.0.0.1:{port}" in e.value.message
    with pytest.raises(SigserveError, match="Unknown --grpc_transport 'h3': use native"):
        asyncio.run(_create(ServerOptions(port=0, grpc_socket_path="/tmp/x.sock", grpc_transport="h3")))
