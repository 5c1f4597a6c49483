"""Batching over the wire: `sigserve serve --enable_batching` answers mixed concurrent requests from
every front end (REST, V2 over REST, both gRPC transports, V2 over gRPC) exactly as without batching,
and a request waiting for its batch holds no front-end thread.

One server per gRPC transport serves the same SavedModel three times (per-model batching parameters):
`tf1` batched, `plain` without a `batching_params.pbtxt` (so not batched: the reference, served by the
fallback from the awaited path), and `wide`, batched with a 10 s batch timeout, so only a full batch
runs before then. `wide` is served with 2 REST and 2 gRPC threads: 16 concurrent one-row requests can
fill its batch only if waiting for it costs no thread. `zero` is batched with `batch_timeout_micros`
0, so once its steps are known to be short the loop lane runs its batches in the event loop's thread.
"""

from __future__ import annotations

import math
import pathlib
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from sigserve.batching.scheduler import LOOP_WINDOW
from tests import models
from tests.grpc_servers import grpc_target, tf_stubs
from tests.servers import ServerProcess, write_model_config

pytestmark = pytest.mark.tf

PARAMS = (
    "max_batch_size { value: 16 } batch_timeout_micros { value: 2000 } max_enqueued_batches { value: 100 }\n"
)
WIDE_TIMEOUT_S = 10
WIDE = (
    f"max_batch_size {{ value: 16 }} batch_timeout_micros {{ value: {WIDE_TIMEOUT_S * 1_000_000} }} "
    "max_enqueued_batches { value: 100 }\n"
)
ZERO = "max_batch_size { value: 16 } batch_timeout_micros { value: 0 } max_enqueued_batches { value: 100 }\n"
REQUESTS = 54  # 6 of each of the 9 kinds below
CLIENTS = 16


def _model_dirs(base: pathlib.Path) -> dict[str, pathlib.Path]:
    source = models.export_tf1(base / "export").parent  # the model dir, holding version 1
    dirs = {}
    for name, params in (("tf1", PARAMS), ("plain", None), ("wide", WIDE), ("zero", ZERO)):
        target = base / name
        shutil.copytree(source, target)
        if params is not None:
            (target / "1" / "batching_params.pbtxt").write_text(params)
        dirs[name] = target
    return dirs


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    return _model_dirs(tmp_path_factory.mktemp("batching_e2e"))


@pytest.fixture(scope="module", params=["native", "grpcio"])
def server(request: pytest.FixtureRequest, model_dirs: dict[str, pathlib.Path]) -> Iterator[ServerProcess]:
    base = next(iter(model_dirs.values())).parent
    config = base / f"models-{request.param}.txt"
    write_model_config(config, [(name, path, {}) for name, path in model_dirs.items()])
    global_params = base / "batching.txt"
    global_params.write_text("num_batch_threads { value: 2 }\n")
    monitoring = base / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true path: '/monitoring/prometheus/metrics' }\n")
    proc = ServerProcess(
        [
            f"--model_config_file={config}",
            "--enable_batching",
            "--enable_per_model_batching_parameters",
            f"--batching_parameters_file={global_params}",
            "--rest_api_num_threads=2",
            "--grpc_max_threads=2",
            f"--grpc_transport={request.param}",
            f"--monitoring_config_file={monitoring}",
        ],
        grpc=True,
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        proc.cleanup()


# -- the nine kinds of request, each answered as plain Python values --------------------------------


def _rows(i: int) -> list[float]:
    rng = np.random.default_rng(i)
    return [round(float(v), 4) for v in rng.standard_normal(1 + i % 4)]


def rest_predict_rows(c: Clients, model: str, i: int) -> Any:
    body = {"instances": [[v] for v in _rows(i)]}
    return c.rest_json(f"/v1/models/{model}:predict", body)


def rest_predict_columns(c: Clients, model: str, i: int) -> Any:
    body = {"inputs": {"x": [[v] for v in _rows(i)]}}
    return c.rest_json(f"/v1/models/{model}:predict", body)


def rest_classify(c: Clients, model: str, i: int) -> Any:
    body = {"signature_name": "classify_x", "examples": [{"x": v} for v in _rows(i)]}
    return c.rest_json(f"/v1/models/{model}:classify", body)


def rest_regress(c: Clients, model: str, i: int) -> Any:
    body = {"signature_name": "regress_x", "examples": [{"x": v} for v in _rows(i)]}
    return c.rest_json(f"/v1/models/{model}:regress", body)


def v2_rest_infer(c: Clients, model: str, i: int) -> Any:
    rows = _rows(i)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(rows), 1], "data": rows}]}
    answer = c.rest_json(f"/v2/models/{model}/infer", body)
    return [(o["name"], o["datatype"], o["shape"], o["data"]) for o in answer["outputs"]]


def grpc_predict(c: Clients, model: str, i: int) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[v] for v in _rows(i)], np.float32)))
    response = c.stubs.prediction.Predict(request, timeout=60)
    return {k: tf.make_ndarray(v).tolist() for k, v in response.outputs.items()}


def grpc_predict_multi(c: Clients, model: str, i: int) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    rows = _rows(i)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "multi"
    request.inputs["a"].CopyFrom(tf.make_tensor_proto(np.array(rows, np.float32)))
    request.inputs["b"].CopyFrom(tf.make_tensor_proto(np.arange(len(rows), dtype=np.int64) * (i - 20)))
    request.output_filter.extend(["sum", "label_bytes"])  # `count` is a scalar: not batchable
    response = c.stubs.prediction.Predict(request, timeout=60)
    return {k: tf.make_ndarray(v).tolist() for k, v in response.outputs.items()}


def grpc_classify_or_regress(c: Clients, model: str, i: int) -> Any:
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    request: Any = classification_pb2.ClassificationRequest() if i % 2 else regression_pb2.RegressionRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "classify_x" if i % 2 else "regress_x"
    for v in _rows(i):
        example = example_pb2.Example()
        example.features.feature["x"].float_list.value.append(v)
        request.input.example_list.examples.add().CopyFrom(example)
    if i % 2:
        response = c.stubs.prediction.Classify(request, timeout=60)
        return [[(k.label, k.score) for k in row.classes] for row in response.result.classifications]
    response = c.stubs.prediction.Regress(request, timeout=60)
    return [r.value for r in response.result.regressions]


def v2_grpc_infer(c: Clients, model: str, i: int) -> Any:
    from sigserve.protos import open_inference_pb2 as pb

    rows = _rows(i)
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[len(rows), 1])
    tensor.contents.fp32_contents.extend(rows)
    call = c.stubs.channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    response = call(request, timeout=60)
    outputs = [(o.name, o.datatype, list(o.shape)) for o in response.outputs]
    raw = [np.frombuffer(r, np.float32).tolist() for r in response.raw_output_contents]
    return outputs, raw, [list(o.contents.fp32_contents) for o in response.outputs]


KINDS: list[Callable[[Clients, str, int], Any]] = [
    rest_predict_rows,
    rest_predict_columns,
    rest_classify,
    rest_regress,
    v2_rest_infer,
    grpc_predict,
    grpc_predict_multi,
    grpc_classify_or_regress,
    v2_grpc_infer,
]


class Clients:
    def __init__(self, server: ServerProcess) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=60.0, limits=httpx.Limits(max_connections=64))
        self.stubs = tf_stubs(grpc_target(server))

    def rest_json(self, path: str, body: Any) -> Any:
        response = self.http.post(path, json=body)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    def close(self) -> None:
        self.http.close()
        self.stubs.close()


@pytest.fixture
def clients(server: ServerProcess) -> Iterator[Clients]:
    c = Clients(server)
    yield c
    c.close()


def assert_close(got: Any, want: Any, where: str = "") -> None:
    """Equal, floats to the last bit or two: TensorFlow's vectorized sigmoid may round a row
    differently depending on where it sits in a batch (TF Serving's batching does the same)."""
    if isinstance(want, float) or isinstance(got, float):
        assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-7), (where, got, want)
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), (where, got, want)
        for n, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{n}]")
    elif isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), (where, got, want)
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    else:
        assert got == want, (where, got, want)


@pytest.mark.parametrize("model", ["tf1", "zero"])
def test_mixed_concurrent_requests_from_every_front_end_equal_unbatched(clients: Clients, model: str) -> None:
    if model == "zero":  # a window of short steps for each kind's queue: the loop lane takes over
        for i in range(2 * LOOP_WINDOW * len(KINDS)):
            KINDS[i % len(KINDS)](clients, model, i)

    def both(i: int) -> tuple[Any, Any]:
        kind = KINDS[i % len(KINDS)]
        return kind(clients, model, i), kind(clients, "plain", i)

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(both, range(REQUESTS)))
    for i, (batched, unbatched) in enumerate(answers):
        assert_close(batched, unbatched, f"request {i} ({KINDS[i % len(KINDS)].__name__})")
    # A check against the model itself, not only against the other route: y = 0.5 x + 2.
    rows = _rows(0)
    assert_close(answers[0][0], {"predictions": [[0.5 * v + 2.0] for v in rows]})


def _batches_of_16(server: ServerProcess) -> float:
    """How many batches of exactly 16 rows the server has processed (the batching metric)."""
    text = httpx.get(server.url + "/monitoring/prometheus/metrics", timeout=30).text
    le16 = le8 = 0.0
    for line in text.splitlines():
        if line.startswith(":tensorflow:serving:batching_session:processed_batch_size_bucket"):
            if 'le="16.0"' in line:
                le16 = float(line.rsplit(" ", 1)[1])
            elif 'le="8.0"' in line:
                le8 = float(line.rsplit(" ", 1)[1])
    return le16 - le8


@pytest.mark.parametrize("front_end", [rest_predict_rows, v2_rest_infer, grpc_predict, v2_grpc_infer])
def test_a_request_waiting_for_its_batch_holds_no_thread(
    clients: Clients, server: ServerProcess, front_end: Callable[[Clients, str, int], Any]
) -> None:
    """16 one-row requests, 2 front-end threads: with a thread per waiting request the batch could
    never hold more than 2 rows and would close only at its 10 s timeout."""
    before = _batches_of_16(server)
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: front_end(clients, "wide", 4 * i), range(16)))
    elapsed = time.monotonic() - started
    assert len(answers) == 16
    assert elapsed < WIDE_TIMEOUT_S * 0.8, elapsed
    assert _batches_of_16(server) - before >= 1
