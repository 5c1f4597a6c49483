"""`sigserve serve --enable_batching --batching_parameters_file ...` as a process: a full batching
queue answers 503 over REST and UNAVAILABLE over gRPC with TensorFlow's message; a bad parameters
file stops the start-up with a message that shows the expected syntax."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.servers import ServerProcess, run_serve

pytestmark = pytest.mark.tf

FULL = (
    "The batch scheduling queue to which this task was submitted is full; currently 1 batches enqueued "
    "and max_enqueued_batches is 1"
)
# About a second of TensorFlow work per request on a 2-core CI machine.
SPIN = 150_000
CONCURRENT = 6


def export_batchable_spin(base: pathlib.Path) -> pathlib.Path:
    """`spin`: n int64 [None] -> i int64 [None]; TensorFlow counts to max(n) in a while loop, so the
    request picks how long the single batch thread stays busy. Each output row is max(n)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir = base / "spin" / "1"
    graph = tf.Graph()
    with graph.as_default():
        n = v1.placeholder(tf.int64, shape=[None], name="n")
        count = tf.while_loop(
            lambda i: i < tf.reduce_max(n), lambda i: i + 1, [tf.constant(0, tf.int64)], name="spin"
        )
        out = tf.add(n * 0, count, name="i")
        signature = v1.saved_model.signature_def_utils.predict_signature_def({"n": n}, {"i": out})
        with v1.Session(graph=graph) as sess:
            builder = v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()
    return export_dir.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("batching_serve")
    model_base = export_batchable_spin(base)
    params = base / "batching.txt"
    # One batch thread, one row per batch, one batch in the queue: the third concurrent request
    # finds the queue full.
    params.write_text(
        "max_batch_size { value: 1 }\nbatch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n"
    )
    monitoring = base / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true path: '/monitoring/prometheus/metrics' }\n")
    proc = ServerProcess(
        [
            "--model_name=spin",
            f"--model_base_path={model_base}",
            "--enable_batching",
            f"--batching_parameters_file={params}",
            f"--monitoring_config_file={monitoring}",
        ]
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        proc.cleanup()


def test_full_queue_is_503_over_rest(server: ServerProcess) -> None:
    url = server.url + "/v1/models/spin:predict"

    def one(i: int) -> httpx.Response:
        with httpx.Client(timeout=120) as client:
            return client.post(url, json={"instances": [SPIN + i]})

    with ThreadPoolExecutor(CONCURRENT) as pool:
        responses = list(pool.map(one, range(CONCURRENT)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, [r.text for r in responses]
    assert 503 in statuses and 200 in statuses, statuses
    for i, r in enumerate(responses):
        if r.status_code == 503:
            assert r.headers["content-type"].startswith("application/json")
            assert r.json() == {"error": FULL}
        else:
            assert r.json() == {"predictions": [SPIN + i]}


def test_full_queue_is_unavailable_over_grpc(server: ServerProcess) -> None:
    if not server.grpc_port:
        pytest.skip("sigserve.server.grpc_server is not available")
    import grpc
    from tensorflow_serving.apis import predict_pb2

    from tests.grpc_servers import grpc_target, tf_stubs

    stubs = tf_stubs(grpc_target(server))

    def one(i: int) -> tuple[grpc.StatusCode, str, list[int]]:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "spin"
        request.inputs["n"].CopyFrom(_int64_tensor([SPIN + i]))
        try:
            response = stubs.prediction.Predict(request, timeout=120)
        except grpc.RpcError as e:
            return e.code(), e.details() or "", []
        return grpc.StatusCode.OK, "", list(response.outputs["i"].int64_val)

    try:
        with ThreadPoolExecutor(CONCURRENT) as pool:
            results = list(pool.map(one, range(CONCURRENT)))
    finally:
        stubs.close()
    codes = {code for code, _, _ in results}
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, results
    assert grpc.StatusCode.UNAVAILABLE in codes and grpc.StatusCode.OK in codes, results
    for i, (code, details, values) in enumerate(results):
        if code == grpc.StatusCode.UNAVAILABLE:
            assert details == FULL
        else:
            assert values == [SPIN + i]


def _int64_tensor(values: list[int]) -> object:
    import tensorflow as tf

    return tf.make_tensor_proto(np.array(values, dtype=np.int64))


def test_batching_metrics_are_exported(server: ServerProcess) -> None:
    with httpx.Client(timeout=120) as client:
        assert client.post(server.url + "/v1/models/spin:predict", json={"instances": [1]}).status_code == 200
        text = client.get(server.url + "/monitoring/prometheus/metrics").text
    assert "# TYPE :tensorflow:serving:batching_session:queuing_latency histogram" in text
    for name in ("input_batch_size", "processed_batch_size", "padding_size", "wrapped_run_count"):
        assert f":tensorflow:serving:batching_session:{name}" in text


def _statuses(url: str) -> list[int]:
    def one(i: int) -> int:
        with httpx.Client(timeout=120) as client:
            r = client.post(url, json={"instances": [SPIN + i]})
            assert r.status_code in (200, 503), r.text
            if r.status_code == 503:
                assert r.json() == {"error": FULL}
            else:
                assert r.json() == {"predictions": [SPIN + i]}
            return r.status_code

    with ThreadPoolExecutor(CONCURRENT) as pool:
        return sorted(pool.map(one, range(CONCURRENT)))


def test_per_model_parameters_come_from_each_version(tmp_path: pathlib.Path) -> None:
    """`--enable_per_model_batching_parameters`: a version's `batching_params.pbtxt` batches it with
    its own (here: a one-batch queue, so concurrent requests find it full, which the defaults would
    not); another model's version without the file is not held to them: the same load all succeeds."""
    from sigserve.batching import PER_MODEL_FILE

    batched = export_batchable_spin(tmp_path / "batched")
    (batched / "1" / PER_MODEL_FILE).write_text(
        "max_batch_size { value: 1 }\nbatch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n"
    )
    plain = export_batchable_spin(tmp_path / "plain")
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'batched' base_path: '{batched}' model_platform: 'tensorflow' }}\n"
        f"  config {{ name: 'plain' base_path: '{plain}' model_platform: 'tensorflow' }}\n"
        "}\n"
    )
    proc = ServerProcess(
        [f"--model_config_file={config}", "--enable_batching", "--enable_per_model_batching_parameters"]
    )
    try:
        proc.wait_ready()
        assert 503 in _statuses(proc.url + "/v1/models/batched:predict")
        assert set(_statuses(proc.url + "/v1/models/plain:predict")) == {200}
    finally:
        proc.stop()
        proc.cleanup()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("max_batch_size: 128", 'Expected "{"'),
        ("max_batch_size { value: 8 } allowed_batch_sizes: [2, 4]", "Last entry in allowed_batch_sizes"),
        ("num_batch_threads { value: 0 }", "num_batch_threads must be positive; was 0"),
    ],
)
def test_bad_parameters_file_stops_the_start_up(tmp_path: pathlib.Path, content: str, needle: str) -> None:
    params = tmp_path / "batching.txt"
    params.write_text(content)
    rc, output = run_serve(
        [
            "--port=0",
            "--rest_api_port=0",
            "--grpc_socket_path=" + str(tmp_path / "sock"),
            "--model_name=m",
            f"--model_base_path={tmp_path / 'no-model-needed'}",
            "--enable_batching",
            f"--batching_parameters_file={params}",
        ]
    )
    assert rc != 0
    assert "Failed to start server" in output
    assert needle in output
    assert "INVALID_ARGUMENT" in output
