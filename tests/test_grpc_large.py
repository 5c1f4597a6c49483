"""A 256 MB tensor round-trips over gRPC (message size limit INT32_MAX both ways, tfserving-api.md §2.1),
with TF Serving's stubs and with sigserve.client. The server sends tensor_content
(--enable_serialization_as_tensor_content), as anyone moving tensors this large would configure."""

from __future__ import annotations

import gc
import pathlib
from collections.abc import Iterator

import numpy as np
import pytest

from sigserve.client import Client
from tests.grpc_servers import grpc_target, start_server, tf_stubs
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow

ROWS = 64 * 1024 * 1024  # float32 [ROWS, 1]: 256 MiB


@pytest.fixture(scope="module")
def server(fixtures_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("grpc_large")
    proc = start_server(
        base / "models.config",
        [("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu", {})],
        ["--enable_serialization_as_tensor_content", "--grpc_max_threads=2"],
    )
    try:
        yield proc
    finally:
        proc.stop()
        proc.cleanup()


def big_x() -> np.ndarray:
    # Values whose 0.5*x + 2 is exact in float32, so the check is equality.
    return (np.arange(ROWS, dtype=np.int32) % 4096).astype(np.float32).reshape(ROWS, 1)


def check_y(x: np.ndarray, y: np.ndarray) -> None:
    assert y.shape == (ROWS, 1)
    assert y.dtype == np.float32
    for start in range(0, ROWS, 8 * 1024 * 1024):  # chunked: no second 256 MB temporary
        chunk = slice(start, start + 8 * 1024 * 1024)
        assert np.array_equal(y[chunk], x[chunk] * np.float32(0.5) + np.float32(2.0))


def test_256mb_tensor_with_tf_serving_stubs(server: ServerProcess) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    x = big_x()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    assert request.ByteSize() > 256 * 1024 * 1024
    stubs = tf_stubs(grpc_target(server))
    try:
        response = stubs.prediction.Predict(request, timeout=300)
        del request
        gc.collect()
        y = np.frombuffer(response.outputs["y"].tensor_content, dtype=np.float32).reshape(ROWS, 1)
        check_y(x, y)
    finally:
        stubs.close()


def test_256mb_tensor_with_sigserve_client(server: ServerProcess) -> None:
    x = big_x()
    with Client(grpc_target(server), timeout=300) as client:
        y = client.predict("half_plus_two", {"x": x})["y"]
    check_y(x, y)
