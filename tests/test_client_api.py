"""sigserve.client against `sigserve serve`: the gRPC `Client` and the `RestClient` run the same
calls (every RPC, success and error classes) and give the same numpy answers; `sigserve predict`."""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from sigserve.client import Client, ModelMetadata, RestClient
from sigserve.errors import Code, SigserveError
from tests.cli import sigserve
from tests.grpc_servers import fixture_models, grpc_target, start_server
from tests.servers import ServerProcess

TWO_VERSIONS = "saved_model_half_plus_two_2_versions"


@pytest.fixture(scope="module")
def server(
    fixtures_dir: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
    exported_models: dict[str, pathlib.Path],
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("client_api")
    proc = start_server(
        base / "models.config", [*fixture_models(fixtures_dir), ("tf1", exported_models["tf1"].parent, {})]
    )
    try:
        yield proc
    finally:
        proc.stop()
        proc.cleanup()


@pytest.fixture(scope="module", params=["grpc", "rest"])
def client(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[Any]:
    c: Any = (
        Client(grpc_target(server), timeout=60)
        if request.param == "grpc"
        else RestClient(server.url, timeout=60)
    )
    with c:
        yield c


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> Iterator[Client]:
    with Client(grpc_target(server), timeout=60) as c:
        yield c


def is_rest(client: Any) -> bool:
    return isinstance(client, RestClient)


def raises(call: Any, *args: Any, **kwargs: Any) -> SigserveError:
    with pytest.raises(SigserveError) as e:
        call(*args, **kwargs)
    return e.value


# -- predict ---------------------------------------------------------------------------------------


def test_predict(client: Any) -> None:
    out = client.predict("half_plus_two", {"x": np.array([[1.0], [2.0], [5.0]], np.float32)})
    assert list(out) == ["y"]
    assert out["y"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], np.float32([[2.5], [3.0], [4.5]]))


def test_predict_by_version_and_label(client: Any) -> None:
    x = {"x": np.float32([[1.0]])}
    for kwargs in ({}, {"version": 123}, {"version": 124}, {"label": "stable"}, {"label": "canary"}):
        np.testing.assert_array_equal(client.predict(TWO_VERSIONS, x, **kwargs)["y"], np.float32([[2.5]]))
    with pytest.raises(ValueError, match="cannot be supplied"):
        client.predict(TWO_VERSIONS, x, version=1, label="stable")


def test_predict_model_spec_of_the_answer(grpc_client: Client) -> None:
    _, spec = grpc_client.predict_with_spec(TWO_VERSIONS, {"x": np.float32([[1.0]])}, label="stable")
    assert (spec.name, spec.signature_name, spec.version.value) == (TWO_VERSIONS, "serving_default", 123)


def test_predict_several_dtypes_and_strings(client: Any) -> None:
    """tf1's `multi` signature: float + int64 in; float, bytes (alias *_bytes) and int64 scalar out."""
    out = client.predict("tf1", {"a": np.float32([0.5, 1.5]), "b": np.int64([1, 20])}, signature_name="multi")
    assert sorted(out) == ["count", "label_bytes", "sum"]
    np.testing.assert_array_equal(out["sum"], np.float32([1.5, 21.5]))
    assert out["sum"].dtype == np.float32
    assert out["label_bytes"].dtype == object
    assert out["label_bytes"].tolist() == [b"v1", b"v20"]
    assert out["count"].dtype == np.int64 and out["count"].shape == () and int(out["count"]) == 2


def test_predict_output_filter(client: Any) -> None:
    out = client.predict(
        "tf1", {"a": np.float32([1.0]), "b": np.int64([2])}, signature_name="multi", output_filter=["sum"]
    )
    assert list(out) == ["sum"]
    error = raises(
        client.predict,
        "tf1",
        {"a": np.float32([1.0]), "b": np.int64([2])},
        signature_name="multi",
        output_filter=["nope"],
    )
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message.startswith("output tensor alias not found in signature: nope")


def test_predict_python_lists_and_str_inputs(grpc_client: Client) -> None:
    out = grpc_client.predict("tf1", {"a": np.float32([1.0]), "b": [3]}, signature_name="multi")
    assert out["label_bytes"].tolist() == [b"v3"]


def test_predict_casts_lists_and_arrays_to_the_signature_dtype(client: Any) -> None:
    """`[[1.0]]`, float64 and int64 arrays for a DT_FLOAT input: what RestClient, `sigserve predict` and
    the REST API accept, the gRPC Client accepts too (it used to send them as DT_DOUBLE/DT_INT64)."""
    for value in ([[1.0]], np.array([[1.0]]), np.array([[1]]), [[1]], np.array([[1.0]], np.float16)):
        out = client.predict("half_plus_two", {"x": value})
        assert out["y"].dtype == np.float32
        np.testing.assert_array_equal(out["y"], np.float32([[2.5]]))
    out = client.predict("tf1", {"a": [0.5], "b": np.int32([3])}, signature_name="multi")
    assert out["label_bytes"].tolist() == [b"v3"]


def test_grpc_predict_never_truncates_floats_to_ints(grpc_client: Client) -> None:
    error = raises(grpc_client.predict, "tf1", {"a": [0.5], "b": [1.5]}, signature_name="multi")
    assert error.code == Code.INVALID_ARGUMENT
    assert "double" in error.message


def test_grpc_predict_sends_tensor_protos_as_given(grpc_client: Client) -> None:
    from sigserve.codec import tensor

    out = grpc_client.predict("half_plus_two", {"x": tensor.from_ndarray(np.float32([[1.0]]))})
    np.testing.assert_array_equal(out["y"], np.float32([[2.5]]))
    error = raises(grpc_client.predict, "half_plus_two", {"x": tensor.from_ndarray(np.float64([[1.0]]))})
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        "Expects arg[0] to be float but double is provided",
    )
    tf = pytest.importorskip("tensorflow")
    out = grpc_client.predict("half_plus_two", {"x": tf.make_tensor_proto(np.float32([[3.0]]))})
    np.testing.assert_array_equal(out["y"], np.float32([[3.5]]))


def test_grpc_client_reads_metadata_once_per_model(server: ServerProcess) -> None:
    with Client(grpc_target(server), timeout=60) as c:
        calls: list[tuple[Any, ...]] = []
        real = c.metadata
        c.metadata = lambda *a, **k: (calls.append(a), real(*a, **k))[1]  # type: ignore[method-assign]
        for _ in range(3):
            c.predict("half_plus_two", {"x": [[1.0]]})
        c.predict("half_plus_two", {"x": [[1.0]]}, version=123)
        assert [a[:3] for a in calls] == [("half_plus_two", None, None), ("half_plus_two", 123, None)]


def test_rest_client_takes_host_port_without_a_scheme(server: ServerProcess) -> None:
    with RestClient(f"127.0.0.1:{server.rest_port}", timeout=60) as c:
        assert c.base_url == f"http://127.0.0.1:{server.rest_port}"
        np.testing.assert_array_equal(c.predict("half_plus_two", {"x": [[1.0]]})["y"], np.float32([[2.5]]))


def test_wrong_protocol_for_the_port_says_which_to_use(server: ServerProcess) -> None:
    rest_target = f"127.0.0.1:{server.rest_port}"
    with Client(rest_target, timeout=30) as c:
        error = raises(c.predict, "half_plus_two", {"x": [[1.0]]})
    assert error.code == Code.UNAVAILABLE
    assert error.message.startswith(f"{rest_target} answers HTTP/1.x, not gRPC: is it the REST port?")
    with RestClient(grpc_target(server), timeout=30) as r:
        error = raises(r.predict, "half_plus_two", {"x": [[1.0]]})
    assert error.code == Code.UNAVAILABLE
    assert error.message.startswith(
        f"http://{grpc_target(server)} did not answer HTTP/1.1: is it the gRPC port?"
    )


@pytest.mark.parametrize(
    ("model", "kwargs", "code", "grpc_message", "rest_message"),
    [
        ("nope", {}, Code.NOT_FOUND, "Servable not found for request: Latest(nope)", None),
        (
            "half_plus_two",
            {"version": 999},
            Code.NOT_FOUND,
            "Servable not found for request: Specific(half_plus_two, 999)",
            None,
        ),
        (
            TWO_VERSIONS,
            {"label": "nope"},
            Code.INVALID_ARGUMENT,
            "Unrecognized servable version label: nope",
            None,
        ),
    ],
)
def test_predict_resolution_errors(
    client: Any, model: str, kwargs: dict[str, Any], code: Code, grpc_message: str, rest_message: str | None
) -> None:
    error = raises(client.predict, model, {"x": np.float32([[1.0]])}, **kwargs)
    assert error.code == code
    assert error.message == (rest_message if is_rest(client) and rest_message else grpc_message)


def test_predict_unknown_signature(client: Any) -> None:
    error = raises(client.predict, "half_plus_two", {"x": np.float32([[1.0]])}, signature_name="nope")
    if is_rest(client):
        assert (error.code, error.message) == (
            Code.INVALID_ARGUMENT,
            'Serving signature name: "nope" not found in signature def',
        )
    else:
        assert (error.code, error.message) == (
            Code.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        )


def test_predict_wrong_dtype(client: Any) -> None:
    error = raises(client.predict, "half_plus_two", {"x": np.array([[b"a"]], dtype=object)})
    assert error.code == Code.INVALID_ARGUMENT


# -- classify / regress / multi_inference ----------------------------------------------------------


def test_classify(client: Any) -> None:
    out = client.classify("half_plus_two", [{"x": 20.0}, {"x": 2.0}], signature_name="classify_x_to_y")
    assert out["classes"].tolist() == [[""], [""]]
    np.testing.assert_array_equal(out["scores"], np.float32([[12.0], [3.0]]))


def test_classify_example_messages(grpc_client: Client) -> None:
    from sigserve.protos import example_pb2

    example = example_pb2.Example()
    example.features.feature["x"].float_list.value.append(20.0)
    out = grpc_client.classify("half_plus_two", [example], signature_name="classify_x_to_y")
    np.testing.assert_array_equal(out["scores"], np.float32([[12.0]]))


def test_regress(client: Any) -> None:
    out = client.regress("half_plus_two", [{"x": 80.0}, {"x": 2.0}], signature_name="regress_x_to_y")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.float32([42.0, 3.0]))


def test_regress_with_context(client: Any) -> None:
    out = client.regress(
        "half_plus_three", [{"x": 2.0}, {}], signature_name="tensorflow/serving/regress", context={"x": 1.0}
    )
    np.testing.assert_array_equal(out, np.float32([4.0, 3.5]))


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_classify_and_regress_errors(client: Any, method: str) -> None:
    call = getattr(client, method)
    error = raises(call, "half_plus_two", [{"x": 1.0}], signature_name="nope")
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        "No signature was found with the name: nope",
    )
    error = raises(call, "nope", [{"x": 1.0}])
    assert (error.code, error.message) == (Code.NOT_FOUND, "Servable not found for request: Latest(nope)")


def test_multi_inference(grpc_client: Client) -> None:
    regress, classify = grpc_client.multi_inference(
        "half_plus_two",
        [{"x": 80.0}, {"x": 2.0}],
        [("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")],
    )
    np.testing.assert_array_equal(regress, np.float32([42.0, 3.0]))
    np.testing.assert_array_equal(classify["scores"], np.float32([[42.0], [3.0]]))
    error = raises(
        grpc_client.multi_inference,
        "half_plus_two",
        [{"x": 1.0}],
        [("serving_default", "tensorflow/serving/predict")],
    )
    assert (error.code, error.message) == (
        Code.UNIMPLEMENTED,
        "Unsupported signature method_name: tensorflow/serving/predict",
    )


# -- metadata / status / reload --------------------------------------------------------------------


def test_metadata(client: Any) -> None:
    meta = client.metadata(TWO_VERSIONS, version=123)
    assert isinstance(meta, ModelMetadata)
    assert (meta.name, meta.version) == (TWO_VERSIONS, 123)
    assert "serving_default" in meta.signatures
    sig = meta.signatures["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    assert sig.inputs["x"].name == "x:0" and sig.inputs["x"].dtype == 1
    assert [d.size for d in sig.inputs["x"].tensor_shape.dim] == [-1, 1]
    assert client.metadata(TWO_VERSIONS, label="canary").version == 124
    error = raises(client.metadata, "nope")
    assert (error.code, error.message) == (Code.NOT_FOUND, "Servable not found for request: Latest(nope)")


def test_metadata_is_the_same_over_grpc_and_rest(server: ServerProcess) -> None:
    with Client(grpc_target(server)) as g, RestClient(server.url) as r:
        a, b = g.metadata("half_plus_two"), r.metadata("half_plus_two")
    assert (a.name, a.version) == (b.name, b.version)
    assert {k: v.SerializeToString(deterministic=True) for k, v in a.signatures.items()} == {
        k: v.SerializeToString(deterministic=True) for k, v in b.signatures.items()
    }


def test_status(client: Any) -> None:
    statuses = client.status(TWO_VERSIONS)
    assert [(s.version, s.state, s.error_code, s.error_message) for s in statuses] == [
        (124, "AVAILABLE", Code.OK, ""),
        (123, "AVAILABLE", Code.OK, ""),
    ]
    assert [s.version for s in client.status(TWO_VERSIONS, version=123)] == [123]
    error = raises(client.status, "nope")
    assert (error.code, error.message) == (Code.NOT_FOUND, "Could not find any versions of model nope")
    error = raises(client.status, "half_plus_two", version=7)
    assert (error.code, error.message) == (Code.NOT_FOUND, "Could not find version 7 of model half_plus_two")


def test_reload_config_same_models_reports_metrics(grpc_client: Client, server: ServerProcess) -> None:
    config = pathlib.Path(server.cmd[-1].split("=", 1)[1]).read_text()
    got = grpc_client.reload_config(config, metric_names=["/tensorflow/serving/request_count"])
    assert got == {"/tensorflow/serving/request_count": 0}
    np.testing.assert_array_equal(
        grpc_client.predict("half_plus_two", {"x": np.float32([[1.0]])})["y"], [[2.5]]
    )


def test_reload_config_error(grpc_client: Client) -> None:
    from sigserve.protos import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    config.custom_model_config.type_url = "type.googleapis.com/x.Y"
    error = raises(grpc_client.reload_config, config)
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message.startswith("ServerModelConfig type not supported by HandleReloadConfigRequest.")


def test_unreachable_server_is_unavailable() -> None:
    from tests.conftest import free_port

    port = free_port()
    with Client(f"127.0.0.1:{port}", timeout=5) as c:
        error = raises(c.status, "m")
        assert error.code == Code.UNAVAILABLE
        assert error.message.startswith(f"nothing listens on 127.0.0.1:{port}: is the server running")
    with RestClient(f"http://127.0.0.1:{port}", timeout=5) as r:
        error = raises(r.status, "m")
        assert error.code == Code.UNAVAILABLE
        assert error.message.startswith(f"nothing answers at http://127.0.0.1:{port}: is the server running")


# -- sigserve predict ------------------------------------------------------------------------------


def sigserve_predict(*args: str) -> subprocess.CompletedProcess[str]:
    return sigserve("predict", *args)


@pytest.mark.parametrize("rest", [False, True])
def test_sigserve_predict_command(server: ServerProcess, rest: bool) -> None:
    target = f"127.0.0.1:{server.rest_port}" if rest else grpc_target(server)
    args = ["--server", target, "--model", "half_plus_two", "--input", "x=[[1.0], [2.0]]"]
    proc = sigserve_predict(*args, *(["--rest"] if rest else []))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Result for output key y:\n[[2.5]\n [3. ]]\n"


def test_sigserve_predict_npy_and_strings(server: ServerProcess, tmp_path: pathlib.Path) -> None:
    np.save(tmp_path / "a.npy", np.float32([1.0, 2.0]))
    proc = sigserve_predict(
        "--server", grpc_target(server), "--model", "tf1", "--signature_name", "multi",
        "--input", f"a={tmp_path / 'a.npy'}", "--input", "b=[5, 6]", "--output_filter", "label_bytes,sum",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout
        == "Result for output key label_bytes:\n[b'v5' b'v6']\nResult for output key sum:\n[6. 8.]\n"
    )


def test_sigserve_predict_error_is_one_line(server: ServerProcess) -> None:
    proc = sigserve_predict("--server", grpc_target(server), "--model", "nope", "--input", "x=[[1.0]]")
    assert proc.returncode == 1
    assert (
        proc.stderr.strip().splitlines()[-1]
        == "sigserve predict: error: Servable not found for request: Latest(nope)"
    )
    proc = sigserve_predict("--server", grpc_target(server), "--model", "m", "--input", "x")
    assert proc.returncode == 1
    assert "--input must be ALIAS=VALUE" in proc.stderr


def test_sigserve_predict_names_an_unknown_input_and_the_expected_ones(server: ServerProcess) -> None:
    for rest in (False, True):
        target = f"127.0.0.1:{server.rest_port}" if rest else grpc_target(server)
        proc = sigserve_predict(
            "--server",
            target,
            "--model",
            "half_plus_two",
            "--input",
            "z=[[1.0]]",
            *(["--rest"] if rest else []),
        )
        assert proc.returncode == 1
        assert proc.stderr == (
            "sigserve predict: error: --input z: signature 'serving_default' of half_plus_two has no input "
            "'z'; its inputs are: x (DT_FLOAT (-1, 1))\n"
        )
    proc = sigserve_predict(
        "--server",
        grpc_target(server),
        "--model",
        "half_plus_two",
        "--signature_name",
        "nope",
        "--input",
        "x=1",
    )
    assert proc.returncode == 1
    assert "has no signature 'nope'; choose one with --signature_name: classify_x_to_y," in proc.stderr


def test_sigserve_predict_on_the_rest_port_without_rest_suggests_it(server: ServerProcess) -> None:
    proc = sigserve_predict(
        "--server", f"127.0.0.1:{server.rest_port}", "--model", "half_plus_two", "--input", "x=1"
    )
    assert proc.returncode == 1
    assert "is it the REST port?" in proc.stderr and "`sigserve predict --rest`" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
