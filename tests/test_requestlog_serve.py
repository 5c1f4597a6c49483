"""Request logging and model management in a running `sigserve serve`: what REST and gRPC (both
transports) log reads back with TensorFlow's TFRecordDataset and tensorflow-serving-api's
PredictionLog as the request sent and the response received; sampling; SIGTERM under load loses no
sampled call; an unwritable directory fails no request; `/v1/config` reloads under load fail no
request to a model that stays."""

from __future__ import annotations

import concurrent.futures
import math
import pathlib
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.grpc_servers import grpc_target, metrics_text, tf_stubs
from tests.servers import ServerProcess

tf = pytest.importorskip("tensorflow")


def logging_config_text(
    models: list[tuple[str, pathlib.Path]], prefix: pathlib.Path | None, rate: float = 1.0, kind: str = ""
) -> str:
    parts = ["model_config_list {"]
    for name, base in models:
        parts.append(f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"')
        if prefix is not None and name == models[0][0]:
            parts.append(
                f'    logging_config {{ log_collector_config {{ type: "{kind}" filename_prefix: "{prefix}" }}'
                f" sampling_config {{ sampling_rate: {rate} }} }}"
            )
        parts.append("  }")
    parts.append("}")
    return "\n".join(parts) + "\n"


def serve(tmp_path: pathlib.Path, config: str, *args: str, grpc: bool = True) -> ServerProcess:
    path = tmp_path / "models.config"
    path.write_text(config)
    server = ServerProcess([f"--model_config_file={path}", *args], grpc=grpc)
    try:
        server.wait_ready()
    except BaseException:
        server.cleanup()
        raise
    return server


def read_logs(prefix: pathlib.Path) -> list[Any]:
    from tensorflow_serving.apis import prediction_log_pb2

    files = sorted(str(p) for p in prefix.parent.glob(prefix.name + "-*.tfrecord"))
    if not files:
        return []
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


@pytest.fixture
def half_plus_two(fixtures_dir: pathlib.Path) -> pathlib.Path:
    return fixtures_dir / "saved_model_half_plus_two_cpu"


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_logged_calls_read_back_as_the_request_sent_and_the_response_received(
    tmp_path: pathlib.Path, half_plus_two: pathlib.Path, transport: str
) -> None:
    from tensorflow_serving.apis import (
        classification_pb2,
        inference_pb2,
        predict_pb2,
    )

    prefix = tmp_path / "logs" / "m"
    server = serve(
        tmp_path, logging_config_text([("m", half_plus_two)], prefix), f"--grpc_transport={transport}"
    )
    stubs = tf_stubs(grpc_target(server))
    try:
        rest = httpx.post(server.url + "/v1/models/m:predict", json={"instances": [1.0, 2.0]}, timeout=30)
        assert rest.json() == {"predictions": [2.5, 3.0]}
        sent = predict_pb2.PredictRequest()
        sent.model_spec.name = "m"
        sent.model_spec.version.value = 123
        sent.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32([[5.0]])))
        received = stubs.prediction.Predict(sent, timeout=30)
        classify = classification_pb2.ClassificationRequest()
        classify.model_spec.name = "m"
        classify.model_spec.signature_name = "classify_x_to_y"
        classify.input.example_list.examples.add().features.feature["x"].float_list.value.append(4.0)
        classified = stubs.prediction.Classify(classify, timeout=30)
        multi = inference_pb2.MultiInferenceRequest()
        task = multi.tasks.add(method_name="tensorflow/serving/regress")
        task.model_spec.name = "m"
        task.model_spec.signature_name = "regress_x_to_y"
        multi.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
        multi_received = stubs.prediction.MultiInference(multi, timeout=30)
        assert server.stop() == 0
    finally:
        stubs.close()
        server.cleanup()

    logs = read_logs(prefix)
    assert [log.WhichOneof("log_type") for log in logs] == [
        "predict_log",
        "predict_log",
        "classify_log",
        "multi_inference_log",
    ]
    for log in logs:
        assert log.log_metadata.model_spec.name == "m"
        assert log.log_metadata.model_spec.version.value == 123
        assert log.log_metadata.sampling_config.sampling_rate == 1.0
        assert list(log.log_metadata.saved_model_tags) == ["serve"]
    rest_log, grpc_log, classify_log, multi_log = logs
    assert tf.make_ndarray(rest_log.predict_log.request.inputs["x"]).tolist() == [1.0, 2.0]
    assert not rest_log.predict_log.request.model_spec.HasField("version")
    assert tf.make_ndarray(rest_log.predict_log.response.outputs["y"]).tolist() == [2.5, 3.0]
    assert rest_log.predict_log.response.model_spec.signature_name == "serving_default"
    logged = grpc_log.predict_log
    assert logged.request.model_spec == sent.model_spec
    np.testing.assert_array_equal(tf.make_ndarray(logged.request.inputs["x"]), [[5.0]])
    assert logged.response.model_spec == received.model_spec
    np.testing.assert_array_equal(
        tf.make_ndarray(logged.response.outputs["y"]), tf.make_ndarray(received.outputs["y"])
    )
    assert classify_log.classify_log.request == classify
    assert classify_log.classify_log.response == classified
    assert multi_log.multi_inference_log.request == multi
    assert multi_log.multi_inference_log.response == multi_received


def test_sampling_and_a_warmup_file_built_from_the_logs(
    tmp_path: pathlib.Path, half_plus_two: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "logs" / "m"
    server = serve(tmp_path, logging_config_text([("m", half_plus_two)], prefix, 0.1), grpc=False)
    requests = 5000
    try:
        bodies = [b'{"instances": [%d.0]}' % i for i in range(4)] + [b'{"instances": [[1.0], [2.0]]}']

        def send(worker: int) -> int:
            ok = 0
            with httpx.Client(timeout=30) as client:
                for i in range(worker, requests, 8):
                    r = client.post(server.url + "/v1/models/m:predict", content=bodies[i % len(bodies)])
                    ok += r.status_code == 200
            return ok

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(send, range(8))) == requests
        assert server.stop() == 0
    finally:
        server.cleanup()
    logged = len(read_logs(prefix))
    sigma = math.sqrt(requests * 0.1 * 0.9)
    assert abs(logged - requests * 0.1) <= 3 * sigma, logged

    from sigserve import cli

    shutil.copytree(half_plus_two / "00000123", tmp_path / "next" / "124")
    argv = ["warmup", "build", "--from", f"{prefix}-*", "--model_base_path", str(tmp_path / "next")]
    assert cli.main([*argv, "--version", "124", "--check", "true"]) == 0
    out = capsys.readouterr().out
    assert "(2 distinct request shape(s)" in out
    assert "as the server does at load: the version loads warm" in out


def test_sigterm_under_load_loses_no_sampled_call(
    tmp_path: pathlib.Path, half_plus_two: pathlib.Path
) -> None:
    prefix = tmp_path / "logs" / "m"
    server = serve(tmp_path, logging_config_text([("m", half_plus_two)], prefix, 1.0), grpc=False)
    answered = [0] * 8
    stop = threading.Event()

    def hammer(worker: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post(server.url + "/v1/models/m:predict", content=b'{"instances": [1.0]}')
                except httpx.TransportError:
                    return
                if r.status_code == 200:
                    answered[worker] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        time.sleep(3)
        assert server.stop() == 0
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.cleanup()
    logged = len(read_logs(prefix))
    assert sum(answered) > 100
    # Every answered call is in the files; at most the calls in flight when the connections closed
    # were logged without their answer reaching the client.
    assert sum(answered) <= logged <= sum(answered) + len(threads)


def test_an_unwritable_log_directory_fails_no_request(
    tmp_path: pathlib.Path, half_plus_two: pathlib.Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    server = serve(tmp_path, logging_config_text([("m", half_plus_two)], blocker / "logs" / "m"), grpc=False)
    try:
        with httpx.Client(timeout=30) as client:
            for _ in range(50):
                r = client.post(server.url + "/v1/models/m:predict", json={"instances": [1.0]})
                assert r.json() == {"predictions": [2.5]}
        deadline = time.monotonic() + 30
        while 'request_log_count{model_name="m",status="NOT_FOUND"} 50' not in metrics_text(server):
            assert time.monotonic() < deadline, metrics_text(server)[-2000:]
            time.sleep(0.1)
        assert server.stop() == 0
        output = server.output()
    finally:
        server.cleanup()
    assert output.count("Could not write request log files") == 1  # once per minute, not per record


def config_body(half_plus_two: pathlib.Path, extra: Iterator[str] | list[str] = ()) -> str:
    models = [f'{{"name": "m", "base_path": "{half_plus_two}", "model_platform": "tensorflow"}}', *extra]
    return '{"model_config_list": {"config": [' + ", ".join(models) + "]}}"


def test_model_management_over_rest(tmp_path: pathlib.Path, fixtures_dir: pathlib.Path) -> None:
    half_plus_two = fixtures_dir / "saved_model_half_plus_two_cpu"
    three = fixtures_dir / "saved_model_half_plus_three"
    two_versions = fixtures_dir / "saved_model_half_plus_two_2_versions"
    off = serve(tmp_path, logging_config_text([("m", half_plus_two)], None), grpc=False)
    try:
        # Off (the default), /v1/config is any other /v1 path outside TF Serving's URL grammar.
        refused = httpx.get(off.url + "/v1/config", timeout=30)
        assert refused.status_code == 400 and "Malformed request" in refused.json()["error"]
    finally:
        off.stop()
        off.cleanup()

    server = serve(
        tmp_path,
        logging_config_text([("m", half_plus_two)], None),
        "--enable_model_management_api",
        grpc=True,
    )
    failures: list[str] = []
    served = [0]
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                r = client.post(server.url + "/v1/models/m:predict", content=b'{"instances": [1.0]}')
                served[0] += 1
                if r.status_code != 200:
                    failures.append(r.text)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        got = httpx.get(server.url + "/v1/config", timeout=30)
        assert got.json()["model_config_list"]["config"][0]["name"] == "m"
        text = httpx.get(server.url + "/v1/config", headers={"accept": "text/plain"}, timeout=30).text
        assert 'name: "m"' in text
        for t in threads:
            t.start()
        with httpx.Client(timeout=120) as client:
            for i in range(20):
                policy = '"model_version_policy": {"all": {}}'
                labels = f'"version_labels": {{"stable": {123 + i % 2}}}'
                extra = [
                    f'{{"name": "v", "base_path": "{two_versions}", "model_platform": "tensorflow", '
                    f"{policy}, {labels}}}"
                ]
                if i % 2 == 0:
                    extra.append(
                        f'{{"name": "three", "base_path": "{three}", "model_platform": "tensorflow"}}'
                    )
                r = client.post(server.url + "/v1/config", content=config_body(half_plus_two, extra))
                assert r.status_code == 200, r.text
                assert r.json() == {"status": {"error_code": "OK", "error_message": ""}}
                stable = client.post(
                    server.url + "/v1/models/v/labels/stable:predict", json={"instances": [1.0]}
                )
                assert stable.status_code == 200, stable.text
                added = client.post(server.url + "/v1/models/three:predict", json={"instances": [1.0]})
                assert added.status_code == (200 if i % 2 == 0 else 404), added.text
            # The same errors as gRPC HandleReloadConfigRequest, through the same service call.
            bad = client.post(
                server.url + "/v1/config",
                content=config_body(half_plus_two, [f'{{"name": "m", "base_path": "{three}"}}']),
            )
            assert bad.status_code == 400
            assert bad.json() == {"error": "Illegal to list model m multiple times in config list"}
            custom = client.post(
                server.url + "/v1/config",
                content=b"custom_model_config { type_url: 'x' }",
                headers={"content-type": "text/plain"},
            )
            assert custom.status_code == 400
            assert "Only ModelConfigList is currently supported" in custom.json()["error"]
            assert client.post(server.url + "/v1/config", content=b"{not json").status_code == 400
            text_reload = client.post(
                server.url + "/v1/config",
                content=f'model_config_list {{ config {{ name: "m" base_path: "{half_plus_two}" '
                f'model_platform: "tensorflow" }} }}'.encode(),
                headers={"content-type": "text/plain"},
            )
            assert text_reload.status_code == 200, text_reload.text
        stop.set()
        for t in threads:
            t.join()
        assert server.stop() == 0
    finally:
        stop.set()
        server.cleanup()
    assert served[0] > 20
    assert failures == []
