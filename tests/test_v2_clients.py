"""Black-box: the real V2 clients (tritonclient HTTP and gRPC; KServe's InferenceRESTClient and
InferenceGRPCClient) against a running `sigserve serve`, on both gRPC transports. Every inference
result must equal what TF Serving's own Predict / Classify / Regress API (tensorflow-serving-api's
stubs) answers for the same model and inputs.

The clients pin protobuf<7 and their own grpcio, so they run in .venv-v2 as subprocesses
(tests/v2clients/); this process holds the plan, the TF Serving API calls and the assertions.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.grpc_servers import Stubs, export_spin_model, fixture_models, grpc_target, serving, tf_stubs
from tests.models import DTYPES, export_dtypes
from tests.servers import ServerProcess

V2_PYTHON = ROOT / ".venv-v2" / "bin" / "python"
CLIENTS = pathlib.Path(__file__).parent / "v2clients"
TWO = "saved_model_half_plus_two_2_versions"

pytestmark = pytest.mark.skipif(
    not V2_PYTHON.exists(), reason=f"{V2_PYTHON} is missing: run `make v2venv` (make test does)"
)


@pytest.fixture(scope="module", params=["native", "grpcio"])
def server(
    request: pytest.FixtureRequest,
    fixtures_dir: pathlib.Path,
    exported_models: dict[str, pathlib.Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("v2_clients")
    models = [
        *fixture_models(fixtures_dir),
        *((name, path.parent, {}) for name, path in exported_models.items()),
        ("dtypes", export_dtypes(base / "models").parent, {}),
        ("spin", export_spin_model(base / "models"), {}),
    ]
    with serving(base / "models.config", models, [f"--grpc_transport={request.param}"]) as proc:
        yield proc


@pytest.fixture(scope="module")
def stubs(server: ServerProcess) -> Iterator[Stubs]:
    s = tf_stubs(grpc_target(server))
    yield s
    s.close()


# -- TF Serving's API, the reference ------------------------------------------------------------------


def tfs_predict(
    stubs: Stubs, model: str, inputs: dict[str, np.ndarray], signature: str = "", version: str = ""
) -> dict[str, np.ndarray]:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version.isdigit():
        request.model_spec.version.value = int(version)
    elif version:
        request.model_spec.version_label = version
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    response = stubs.prediction.Predict(request, timeout=60)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def tfs_examples(stubs: Stubs, api: str, model: str, signature: str, values: list[float]) -> Any:
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    message = (
        classification_pb2.ClassificationRequest if api == "classify" else regression_pb2.RegressionRequest
    )()
    message.model_spec.name = model
    message.model_spec.signature_name = signature
    for v in values:
        message.input.example_list.examples.add().features.feature["x"].float_list.value.append(v)
    call = stubs.prediction.Classify if api == "classify" else stubs.prediction.Regress
    return call(message, timeout=60).result


# -- the plan ---------------------------------------------------------------------------------------

ALL = ["http", "http-json", "grpc"]
RNG = np.random.default_rng(7)


def dtype_inputs() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in DTYPES:
        if name == "string":
            out[name] = np.array([b"a", "é".encode(), b""], dtype=object)
        elif name == "bool":
            out[name] = np.array([True, False, True])
        elif name == "bfloat16":
            out[name] = np.array([1.5, -2.25, 3e38], dtype=ml_dtypes.bfloat16)
        elif name in ("half", "float32", "float64"):
            out[name] = np.array([0.1, -2.5, 65504.0], dtype=name if name != "half" else np.float16)
        else:
            info = np.iinfo(name)
            out[name] = np.array([info.min, 0, info.max], dtype=name)
    return out


def cases() -> list[dict[str, Any]]:
    """Each case: model, signature, version, inputs, the transports to run, and optional outputs."""
    return [
        {
            "name": "hp2",
            "model": "half_plus_two",
            "inputs": {"x": np.array([[1.0], [2.0], [5.0]], np.float32)},
            "id": "42",
        },
        {"name": "v123", "model": TWO, "version": "123", "inputs": {"x": np.array([[1.0]], np.float32)}},
        {"name": "stable", "model": TWO, "version": "stable", "inputs": {"x": np.array([[3.0]], np.float32)}},
        {"name": "canary", "model": TWO, "version": "canary", "inputs": {"x": np.array([[3.0]], np.float32)}},
        {
            "name": "y2",
            "model": TWO,
            "signature": "regress_x_to_y2",
            "inputs": {"inputs": np.array([b"junk"], object)},  # serialized examples, replaced below
        },
        {
            "name": "multi",
            "model": "tf1",
            "signature": "multi",
            "inputs": {"a": np.array([1.5, -2.0], np.float32), "b": np.array([3, 40], np.int64)},
        },
        {
            "name": "multi_filtered",
            "model": "tf1",
            "signature": "multi",
            "inputs": {"a": np.array([1.0], np.float32), "b": np.array([7], np.int64)},
            "outputs": ["label_bytes", "sum"],
        },
        {
            "name": "scale",
            "model": "tf2",
            "signature": "scale",
            "inputs": {"x": np.array([1.0, 2.0], np.float32), "factor": np.array(3.0, np.float32)},
        },
        {"name": "tf2", "model": "tf2", "inputs": {"x": RNG.standard_normal((4, 3)).astype(np.float32)}},
        {"name": "keras", "model": "keras", "inputs": {"features": np.array([[1.0, 2.0]], np.float32)}},
        {
            "name": "fp16",
            "model": "dtypes",
            "inputs": {"h": np.array([[1.5, -2.0], [0.1, 30000.0]], np.float16)},
        },
        {
            "name": "identity",
            "model": "dtypes",
            "signature": "identity",
            "inputs": dtype_inputs(),
            "transports": ["http", "grpc"],
        },
        {
            "name": "top2",
            "model": "dtypes",
            "signature": "scores",
            "inputs": {"x": np.array([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 5.0, 1.0]], np.float32)},
            "outputs": ["probabilities"],
            "classification": {"probabilities": 2},
        },
    ]


def example_cases() -> list[dict[str, Any]]:
    """Classify/Regress signatures through V2, features as named inputs."""
    return [
        {
            "name": "classify",
            "model": "estimator",
            "signature": "classification",
            "api": "classify",
            "x": [0.5, -1.0],
        },
        {
            "name": "regress",
            "model": "half_plus_three",
            "signature": "tensorflow/serving/regress",
            "api": "regress",
            "x": [1.0, 2.0],
        },
        {"name": "regress_tf1", "model": "tf1", "signature": "regress_x", "api": "regress", "x": [4.0]},
    ]


def run_client(
    script: str,
    tmp_path: pathlib.Path,
    server: ServerProcess,
    plan: dict[str, Any],
    arrays: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run a client script of tests/v2clients/ in .venv-v2 on `plan`; its outputs and report."""
    plan = dict(plan, rest=f"127.0.0.1:{server.rest_port}", grpc=grpc_target(server))
    paths = [tmp_path / n for n in ("plan.json", "inputs.npz", "out.npz", "report.json")]
    paths[0].write_text(json.dumps(plan))
    stored = {}
    for key, array in arrays.items():  # .npz has no bfloat16: its bits travel as uint16
        stored[key + "#bf16" if array.dtype.name == "bfloat16" else key] = (
            array.view(np.uint16) if array.dtype.name == "bfloat16" else array
        )
    np.savez(paths[1], **stored)
    proc = subprocess.run(
        [str(V2_PYTHON), str(CLIENTS / script), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    loaded = np.load(paths[2], allow_pickle=True)
    outputs = {
        key.removesuffix("#bf16"): loaded[key].view(ml_dtypes.bfloat16)
        if key.endswith("#bf16")
        else loaded[key]
        for key in loaded.files
    }
    return outputs, json.loads(paths[3].read_text())


def as_bytes(array: np.ndarray) -> np.ndarray:
    """A JSON BYTES output comes back as str: compare as bytes."""
    if array.dtype == object or array.dtype.kind == "U":
        flat = [v.encode() if isinstance(v, str) else v for v in array.reshape(-1).tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(array.shape)
    return array


def assert_same(got: np.ndarray, want: np.ndarray, where: str) -> None:
    got, want = as_bytes(got), as_bytes(np.asarray(want))
    assert got.shape == want.shape, (where, got.shape, want.shape)
    if want.dtype == object:
        assert got.tolist() == want.tolist(), where
        return
    assert got.dtype == want.dtype, (where, got.dtype, want.dtype)
    assert got.tobytes() == want.tobytes(), (where, got, want)


def classification_strings(scores: np.ndarray, k: int) -> list[list[bytes]]:
    """The classification extension computed here from TF Serving's scores."""
    rows = []
    for row in scores:
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
        rows.append([f"{str(np.float32(row[i])).removesuffix('.0')}:{i}".encode() for i in order])
    return rows


def reference(
    stubs: Stubs, transports: dict[str, list[str]]
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """The inference cases of the plan with the transports each runs on (`transports`: case name ->
    transports; cases left out are not run), their input arrays, and TF Serving's answers."""
    from sigserve.protos import example_pb2

    plan_cases: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    expected: dict[str, dict[str, np.ndarray]] = {}
    for case in cases():
        if case["name"] not in transports:
            continue
        inputs = case["inputs"]
        if case["name"] == "y2":  # a regress signature fed serialized tf.Examples by name
            ex = example_pb2.Example()
            ex.features.feature["x"].float_list.value.append(10.0)
            inputs = {"inputs": np.array([ex.SerializeToString()], object)}
        for name, value in inputs.items():
            arrays[f"{case['name']}/{name}"] = value
        want = tfs_predict(stubs, case["model"], inputs, case.get("signature", ""), case.get("version", ""))
        if case.get("outputs"):
            want = {k: want[k] for k in case["outputs"]}
        for out, k in case.get("classification", {}).items():
            want[out] = np.array(classification_strings(want[out], k), dtype=object)
        expected[case["name"]] = want
        plan_cases.append(
            {
                **{k: v for k, v in case.items() if k not in ("inputs", "transports")},
                "inputs": list(inputs),
                "transports": transports[case["name"]],
            }
        )
    return plan_cases, arrays, expected


def check_answers(
    plan_cases: list[dict[str, Any]],
    expected: dict[str, dict[str, np.ndarray]],
    outputs: dict[str, np.ndarray],
    report: dict[str, Any],
) -> int:
    """Every output of every case on every transport equals TF Serving's; returns how many."""
    checked = 0
    for name, want in expected.items():
        transports = next(c["transports"] for c in plan_cases if c["name"] == name)
        for transport in transports:
            key = f"{name}/{transport}"
            assert key in report["cases"], (key, report["errors"].get(key))
            assert set(k.rsplit("/", 1)[1] for k in outputs if k.startswith(key + "/")) == set(want), key
            for out, value in want.items():
                assert_same(outputs[f"{key}/{out}"], value, f"{key}/{out}")
                checked += 1
    return checked


def check_examples(
    stubs: Stubs, outputs: dict[str, np.ndarray], report: dict[str, Any], transports: list[str]
) -> None:
    """Classify/Regress signatures through V2 equal TF Serving's Classify/Regress APIs."""
    for case in example_cases():
        result = tfs_examples(stubs, case["api"], case["model"], case["signature"], case["x"])
        for transport in transports:
            key = f"{case['name']}/{transport}"
            assert key in report["cases"], (key, report["errors"].get(key))
            if case["api"] == "classify":
                scores = outputs[f"{key}/scores"]
                classes = as_bytes(outputs[f"{key}/classes"])
                want_scores = [[c.score for c in row.classes] for row in result.classifications]
                want_labels = [[c.label.encode() for c in row.classes] for row in result.classifications]
                assert scores.tolist() == want_scores and classes.tolist() == want_labels, key
            else:
                (alias,) = (k.rsplit("/", 1)[1] for k in outputs if k.startswith(key + "/"))
                got = outputs[f"{key}/{alias}"].reshape(-1).tolist()
                assert got == [r.value for r in result.regressions], key


def test_tritonclient_results_equal_the_tf_serving_api(
    server: ServerProcess, stubs: Stubs, tmp_path: pathlib.Path
) -> None:
    plan_cases, arrays, expected = reference(stubs, {c["name"]: c.get("transports", ALL) for c in cases()})
    for case in example_cases():
        arrays[f"{case['name']}/x"] = np.array(case["x"], np.float32)
        plan_cases.append({**case, "inputs": ["x"], "transports": ALL})
    slow = {
        "name": "slow",
        "model": "spin",
        "inputs": ["n"],
        "timeout_us": 300_000,
        "transports": ["http", "grpc"],
    }
    plan_cases.append(slow)
    arrays["slow/n"] = np.array(10**13, np.int64)
    plan_cases.append(
        {"name": "nope", "model": "no_such_model", "inputs": ["x"], "transports": ["http", "grpc"]}
    )
    arrays["nope/x"] = np.array([1.0], np.float32)
    plan_cases.append({"name": "fp64", "model": "half_plus_two", "inputs": ["x"], "transports": ALL})
    arrays["fp64/x"] = np.array([[1.0]], np.float64)
    plan = {
        "cases": plan_cases,
        "ready_checks": [
            ["half_plus_two", ""],
            [TWO, "123"],
            [TWO, "stable"],
            [TWO, "999"],
            ["no_such_model", ""],
        ],
        "metadata_checks": [
            ["half_plus_two", ""],
            [TWO, "123"],
            ["tf1", ""],
            ["dtypes", ""],
            ["no_such_model", ""],
        ],
    }
    outputs, report = run_client("triton_client.py", tmp_path, server, plan, arrays)

    assert check_answers(plan_cases, expected, outputs, report) >= 75
    assert report["cases"]["hp2/http"]["id"] == "42" and report["cases"]["hp2/grpc"]["id"] == "42"
    assert report["cases"]["v123/grpc"]["model_version"] == "123"
    assert report["cases"]["stable/http"]["model_version"] == "123"
    assert report["cases"]["canary/http-json"]["model_version"] == "124"
    check_examples(stubs, outputs, report, ALL)

    errors = report["errors"]
    assert errors["slow/http"]["status"] == "504", errors["slow/http"]
    assert "DEADLINE_EXCEEDED" in errors["slow/grpc"]["status"], errors["slow/grpc"]
    assert errors["nope/http"]["status"] == "404"
    assert "NOT_FOUND" in errors["nope/grpc"]["status"]
    for transport in ALL:
        error = errors[f"fp64/{transport}"]
        assert "input 'x' is FP64, but signature 'serving_default' takes FP32" in error["message"], error
    assert errors["fp64/http"]["status"] == "400"

    for transport in ("http", "grpc"):
        health = report["health"][transport]
        assert health["live"] is True and health["ready"] is True
        assert health["models"] == {
            "half_plus_two@": True,
            f"{TWO}@123": True,
            f"{TWO}@stable": True,
            f"{TWO}@999": False,
            "no_such_model@": False,
        }
        assert health["server"]["name"] == "sigserve"
        assert "binary_tensor_data" in health["server"]["extensions"]
        meta = report["metadata"]
        hp2 = meta[f"{transport}/half_plus_two@"]
        assert hp2["platform"] == "tensorflow_savedmodel" and hp2["versions"] == ["123"]
        assert hp2["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]
        if transport == "http":  # Triton's gRPC message has no `properties` (KServe's has)
            assert hp2["parameters"]["signature_name"] == "serving_default"
            assert "regress_x_to_y" in hp2["parameters"]["signatures"].split(",")
            signatures = meta[f"{transport}/tf1@"]["parameters"]["signatures"].split(",")
            assert signatures == ["classify_x", "multi", "regress_x", "serving_default"]
        assert meta[f"{transport}/{TWO}@123"]["versions"] == ["123", "124"]
        dtypes = meta[f"{transport}/dtypes@"]
        assert dtypes["inputs"] == [{"name": "h", "datatype": "FP16", "shape": [-1, 2]}]
        assert {o["name"]: o["datatype"] for o in dtypes["outputs"]} == {"doubled": "FP16", "total": "FP32"}
        assert "error" in meta[f"{transport}/no_such_model@"]


KSERVE_REST = ["rest", "rest-json", "grpc", "grpc-typed"]
KSERVE_TRANSPORTS = {
    "hp2": KSERVE_REST,
    "v123": ["grpc", "grpc-typed"],  # KServe's REST client puts no version in the URL
    "stable": ["grpc", "grpc-typed"],
    "multi": KSERVE_REST,
    "multi_filtered": KSERVE_REST,
    "scale": KSERVE_REST,
    "tf2": KSERVE_REST,
    "fp16": ["rest", "grpc"],  # KServe's clients send FP16 only as binary data
    "top2": KSERVE_REST,
}


def test_kserve_clients_results_equal_the_tf_serving_api(
    server: ServerProcess, stubs: Stubs, tmp_path: pathlib.Path
) -> None:
    plan_cases, arrays, expected = reference(stubs, KSERVE_TRANSPORTS)
    for case in example_cases():
        arrays[f"{case['name']}/x"] = np.array(case["x"], np.float32)
        plan_cases.append({**case, "inputs": ["x"], "transports": ["rest", "grpc-typed"]})
    plan_cases.append(
        {"name": "fp64", "model": "half_plus_two", "inputs": ["x"], "transports": ["rest", "grpc"]}
    )
    arrays["fp64/x"] = np.array([[1.0]], np.float64)
    outputs, report = run_client("kserve_client.py", tmp_path, server, {"cases": plan_cases}, arrays)
    assert check_answers(plan_cases, expected, outputs, report) >= 40
    assert report["cases"]["hp2/rest"]["id"] == "42"
    check_examples(stubs, outputs, report, ["rest", "grpc-typed"])
    assert report["errors"]["fp64/rest"]["status"] == "400"
    assert "INVALID_ARGUMENT" in report["errors"]["fp64/grpc"]["status"]
    assert "input 'x' is FP64" in report["errors"]["fp64/grpc"]["message"]
    for transport in ("rest", "grpc"):
        assert report["health"][transport] == {"live": True, "ready": True, "model_ready": True}
