"""sigserve as a Ray Serve application on a real Ray (`ray.init(num_cpus=2)`), two replicas behind
Ray Serve's HTTP and gRPC proxies, answering TF Serving's own clients (`tensorflow_serving.apis`
stubs over grpcio, REST over httpx) and sigserve's (`sigserve.client`); and a version added on disk
while clients keep calling is served by every replica with no failed request."""

from __future__ import annotations

import os
import pathlib
import shutil
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

ray = pytest.importorskip("ray")
ray_serve = pytest.importorskip("sigserve.integrations.ray_serve")

from sigserve.server.options import ServerOptions  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.servers import write_model_config  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.tf]

SLOPES = {1: 0.5, 2: 1.5}  # y = a x + 2 in version v of model "lin"


def export_linear(base: pathlib.Path, version: int) -> pathlib.Path:
    """A SavedModel y = a*x + 2 (input x [-1, 1], output y) whose slope says which version answered."""
    import tensorflow as tf

    class Linear(tf.Module):
        def __init__(self, slope: float) -> None:
            super().__init__()
            self.slope = tf.Variable(slope)

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": self.slope * x + 2.0}

    module = Linear(SLOPES[version])
    export_dir = base / str(version)
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})
    return export_dir


class Cluster:
    def __init__(self, rest: str, grpc_target: str, lin_base: pathlib.Path, staging: pathlib.Path) -> None:
        self.rest = rest
        self.grpc_target = grpc_target
        self.lin_base = lin_base
        self.staging = staging


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, exported_models: dict[str, pathlib.Path]
) -> Iterator[Cluster]:
    from ray import serve

    root = tmp_path_factory.mktemp("ray_serve")
    lin = root / "lin"
    lin.mkdir()
    export_linear(lin, 1)
    staging = root / "staging"
    export_linear(staging, 2)  # moved in by the hot-reload test
    config = root / "models.config"
    write_model_config(config, [("lin", lin, {}), ("tf1", exported_models["tf1"].parent, {})])
    options = ServerOptions(model_config_file=str(config), file_system_poll_wait_seconds=0.5)
    rest_port, grpc_port = free_port(), free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        application = ray_serve.build_app(options, num_replicas=2, ray_actor_options={"num_cpus": 0.5})
        ray_serve.run(application, http_port=rest_port, grpc_port=grpc_port)
        yield Cluster(f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}", lin, staging)
    finally:
        serve.shutdown()
        ray.shutdown()


def predict_rest(client: httpx.Client, url: str, xs: list[float]) -> tuple[str, list[float]]:
    r = client.post(f"{url}/v1/models/lin:predict", json={"instances": [[x] for x in xs]})
    assert r.status_code == 200, r.text
    return r.headers[ray_serve.REPLICA_HEADER.decode()], [row[0] for row in r.json()["predictions"]]


def test_rest_routes_through_the_proxy_on_both_replicas(cluster: Cluster) -> None:
    from sigserve.client import RestClient

    replicas = set()
    with httpx.Client(timeout=30) as client:
        for _ in range(40):
            replica, ys = predict_rest(client, cluster.rest, [1.0, 4.0])
            assert ys == [2.5, 4.0]
            replicas.add(replica)
        assert len(replicas) == 2  # Ray Serve spreads calls over both replicas
        status = client.get(f"{cluster.rest}/v1/models/lin").json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        metadata = client.get(f"{cluster.rest}/v1/models/tf1/metadata").json()
        assert "classify_x" in metadata["metadata"]["signature_def"]["signature_def"]
        assert client.get(f"{cluster.rest}/readyz").status_code == 200
        bad = client.post(f"{cluster.rest}/v1/models/nope:predict", json={"instances": [1.0]})
        assert bad.status_code == 404 and "nope" in bad.json()["error"]
        # Each replica's own metrics page (sigserve's registry is per process).
        metrics = client.get(f"{cluster.rest}/monitoring/prometheus/metrics").text
        assert ":tensorflow:serving:request_count{" in metrics and 'model_name="lin"' in metrics
    regress = RestClient(cluster.rest).regress("tf1", [{"x": 2.0}], signature_name="regress_x")
    assert regress == [3.0]


def test_grpc_with_tf_serving_stubs_and_sigserve_client(cluster: Cluster) -> None:
    import grpc
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
        regression_pb2,
    )

    from sigserve.client import Client
    from tests.test_deploy_contract import _tensor_proto

    with grpc.insecure_channel(cluster.grpc_target) as channel:
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "lin"
        request.inputs["x"].CopyFrom(_tensor_proto(np.array([[2.0]], np.float32)))
        response = prediction.Predict(request, timeout=30)
        assert (
            response.model_spec.version.value == 1 and response.model_spec.signature_name == "serving_default"
        )
        assert list(response.outputs["y"].float_val) == [3.0]

        classify = classification_pb2.ClassificationRequest()
        classify.model_spec.name = "tf1"
        classify.model_spec.signature_name = "classify_x"
        classify.input.example_list.examples.add().features.feature["x"].float_list.value.append(0.0)
        result = prediction.Classify(classify, timeout=30).result.classifications[0].classes
        assert [(c.label, round(c.score, 6)) for c in result] == [("neg", 0.5), ("pos", 0.5)]

        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name = "tf1"
        regress.model_spec.signature_name = "regress_x"
        regress.input.example_list.examples.add().features.feature["x"].float_list.value.append(4.0)
        assert prediction.Regress(regress, timeout=30).result.regressions[0].value == 4.0

        meta = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        meta.model_spec.name = "lin"
        assert prediction.GetModelMetadata(meta, timeout=30).model_spec.version.value == 1

        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "lin"
        states = [v.state for v in models.GetModelStatus(status, timeout=30).model_version_status]
        assert get_model_status_pb2.ModelVersionStatus.AVAILABLE in states

        missing = predict_pb2.PredictRequest()
        missing.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as e:
            prediction.Predict(missing, timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert "Servable not found for request: Latest(nope)" in e.value.details()

        with pytest.raises(grpc.RpcError) as e:
            models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=30)
        assert (
            e.value.code() == grpc.StatusCode.UNIMPLEMENTED and "one Ray Serve replica" in e.value.details()
        )

    out = Client(cluster.grpc_target).predict("lin", {"x": np.array([[4.0]], np.float32)})
    np.testing.assert_array_equal(out["y"], [[4.0]])


def test_a_new_version_is_served_by_every_replica_with_no_failed_request(cluster: Cluster) -> None:
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tests.test_deploy_contract import _tensor_proto

    stop = threading.Event()
    failures: list[str] = []
    seen: dict[str, set[float]] = {}  # replica -> slopes it answered with
    grpc_versions: set[int] = set()
    counts = {"rest": 0, "grpc": 0}
    lock = threading.Lock()

    def rest_caller() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    replica, (y,) = predict_rest(client, cluster.rest, [1.0])
                    with lock:
                        seen.setdefault(replica, set()).add(y - 2.0)
                        counts["rest"] += 1
                except Exception as e:
                    failures.append(f"REST: {e!r}")

    def grpc_caller() -> None:
        with grpc.insecure_channel(cluster.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "lin"
            request.inputs["x"].CopyFrom(_tensor_proto(np.array([[1.0]], np.float32)))
            while not stop.is_set():
                try:
                    response = stub.Predict(request, timeout=30)
                    version = response.model_spec.version.value
                    assert list(response.outputs["y"].float_val) == [SLOPES[version] + 2.0]
                    with lock:
                        grpc_versions.add(version)
                        counts["grpc"] += 1
                except Exception as e:
                    failures.append(f"gRPC: {e!r}")

    callers = [threading.Thread(target=rest_caller) for _ in range(2)] + [
        threading.Thread(target=grpc_caller)
    ]
    for t in callers:
        t.start()
    try:
        time.sleep(1.0)
        os.rename(cluster.staging / "2", cluster.lin_base / "2")  # appears whole, as a finished copy would
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not failures:
            with lock:
                done = len(seen) == 2 and all(SLOPES[2] in s for s in seen.values()) and 2 in grpc_versions
            if done:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # keep calling on the new version for a while
    finally:
        stop.set()
        for t in callers:
            t.join(60)
    assert failures == []
    assert len(seen) == 2, seen
    for replica, slopes in seen.items():
        assert SLOPES[2] in slopes, f"replica {replica} never answered with version 2: {slopes}"
    assert grpc_versions == {1, 2}
    assert counts["rest"] > 20 and counts["grpc"] > 10, counts
    shutil.rmtree(cluster.staging, ignore_errors=True)
