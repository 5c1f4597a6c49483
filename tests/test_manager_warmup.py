"""SavedModel warmup (tfserving-api.md §4 "Warmup"): a warmup file written the way TF Serving users
write one (TensorFlow's TFRecordWriter, tensorflow-serving-api's PredictionLog) is replayed before the
version becomes AVAILABLE; a corrupt one fails the load with a clear error and leaves the serving
version alone."""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from sigserve.errors import Code
from sigserve.manager import LoadRequest, ServableState, ServerCore, tfrecord, warmup
from tests.manager_helpers import (
    POLL,
    Events,
    load,
    model_config,
    put_version,
    raises,
    running,
    status_of,
)

tf = pytest.importorskip("tensorflow")
S = ServableState


@pytest.fixture(scope="module")
def tf1_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """tests/models.py's TF1 export: predict `x`→`y`, `multi`, classify_x, regress_x."""
    from tests import models

    return models.export_tf1(tmp_path_factory.mktemp("warmup_export"))


def prediction_logs() -> list[Any]:
    """One log of each kind TF Serving replays, as a user builds them with tensorflow-serving-api."""
    from tensorflow_serving.apis import (
        classification_pb2,
        inference_pb2,
        model_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    def examples(target: Any, *xs: float) -> None:
        for x in xs:
            target.example_list.examples.add().features.feature["x"].float_list.value.append(x)

    def spec(signature: str) -> model_pb2.ModelSpec:
        return model_pb2.ModelSpec(name="m", signature_name=signature)

    predict = predict_pb2.PredictRequest(model_spec=spec(""))
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32([[1.0], [2.0]])))
    multi = predict_pb2.PredictRequest(model_spec=spec("multi"), output_filter=["sum"])
    multi.inputs["a"].CopyFrom(tf.make_tensor_proto(np.float32([1.0, 2.0])))
    multi.inputs["b"].CopyFrom(tf.make_tensor_proto(np.int64([3, 4])))
    classify = classification_pb2.ClassificationRequest(model_spec=spec("classify_x"))
    examples(classify.input, 0.0, 3.0)
    regress = regression_pb2.RegressionRequest(model_spec=spec("regress_x"))
    examples(regress.input, 4.0)
    inference = inference_pb2.MultiInferenceRequest()
    inference.tasks.add(model_spec=spec("classify_x"), method_name="tensorflow/serving/classify")
    inference.tasks.add(model_spec=spec("regress_x"), method_name="tensorflow/serving/regress")
    examples(inference.input, 1.0)
    return [
        prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=predict)),
        prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=multi)),
        prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=classify)),
        prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=regress)),
        prediction_log_pb2.PredictionLog(
            multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=inference)
        ),
    ]


def write_warmup(version_dir: pathlib.Path, records: list[bytes]) -> pathlib.Path:
    """The file as TF Serving's docs write it: tf.io.TFRecordWriter in assets.extra."""
    path = pathlib.Path(warmup.warmup_file(str(version_dir)))
    path.parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path


class CountingLoader:
    """The production loader, with each servable's TensorFlow runs counted through a runner wrapper
    (the same hook the batching layer uses), so the test sees what warmup ran before AVAILABLE."""

    def __init__(self) -> None:
        self.runs: dict[int, int] = {}
        self.lock = threading.Lock()

    def __call__(self, request: LoadRequest) -> Any:
        from sigserve import runtime

        self.runs[request.version] = 0

        def wrap(inner: Any) -> Any:
            def runner(feeds: Any, fetches: Any, timeout: float | None = None) -> Any:
                with self.lock:
                    self.runs[request.version] += 1
                return inner(feeds, fetches, timeout)

            return runner

        return runtime.load(request.path, name=request.name, version=request.version, runner_wrapper=wrap)


def test_tensorflow_and_sigserve_agree_on_tfrecords(tmp_path: pathlib.Path) -> None:
    records = [b"", b"a", bytes(range(256)) * 40, b"warmup"]
    written_by_tf = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(written_by_tf)) as writer:
        for record in records:
            writer.write(record)
    assert written_by_tf.read_bytes() == b"".join(tfrecord.encode(r) for r in records)
    with open(written_by_tf, "rb") as f:
        assert list(tfrecord.read_records(f)) == records
    written_by_us = tmp_path / "ours.tfrecord"
    written_by_us.write_bytes(b"".join(tfrecord.encode(r) for r in records))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(written_by_us))] == records


@pytest.mark.parametrize("iterations", [0, 3])
def test_warmup_requests_are_replayed_before_the_version_is_available(
    tmp_path: pathlib.Path, tf1_model: pathlib.Path, iterations: int
) -> None:
    base = tmp_path / "m"
    version_dir = put_version(base, 1, tf1_model)
    logs = prediction_logs()
    write_warmup(version_dir, [log.SerializeToString() for log in logs])
    loader = CountingLoader()
    at_available: list[int] = []
    core = ServerCore(
        model_config(("m", base)),
        loader=loader,
        file_system_poll_wait_seconds=POLL,
        max_num_load_retries=0,
        num_request_iterations_for_warmup=iterations,
    )
    core.subscribe(
        lambda name, version, state, error: state == S.AVAILABLE and at_available.append(loader.runs[1])
    )
    try:
        core.start()
        expected = len(logs) * max(1, iterations)  # 0 means once, as in TF Serving
        assert at_available == [expected]
        with core.handle("m") as servable:
            assert servable.predict({"x": np.float32([[4.0]])})["y"].tolist() == [[4.0]]
        assert loader.runs[1] == expected + 1
    finally:
        core.stop()


def test_warmup_off_ignores_the_file(tmp_path: pathlib.Path, tf1_model: pathlib.Path) -> None:
    base = tmp_path / "m"
    version_dir = put_version(base, 1, tf1_model)
    path = write_warmup(version_dir, [b"x"])
    path.write_bytes(b"not a tfrecord at all")
    loader = CountingLoader()
    with running(
        model_config(("m", base)), loader=loader, enable_model_warmup=False, max_num_load_retries=0
    ) as (
        core,
        _,
    ):
        assert core.ready()
        assert loader.runs[1] == 0


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x20
    return bytes(out)


def _corruptions() -> list[tuple[str, Callable[[bytes], bytes], Code, str]]:
    not_a_log = tfrecord.encode(b"\x0a\x05abc")
    return [
        ("bit flip", lambda d: _flip(d, len(d) - 20), Code.DATA_LOSS, "corrupted record at "),
        ("truncated", lambda d: d[: len(d) - 7], Code.DATA_LOSS, "truncated record at "),
        ("text file", lambda d: b"x=1.0\ny=2.0\n", Code.DATA_LOSS, "corrupted record at 0 in "),
        (
            "not a log",
            lambda d: not_a_log,
            Code.INVALID_ARGUMENT,
            "Failed to parse warmup record 0 (5 bytes) from ",
        ),
    ]


@pytest.mark.parametrize(("what", "corrupt", "code", "fragment"), _corruptions(), ids=lambda v: str(v)[:20])
def test_a_corrupt_warmup_file_fails_the_load_and_the_old_version_keeps_serving(
    tmp_path: pathlib.Path,
    tf1_model: pathlib.Path,
    what: str,
    corrupt: Callable[[bytes], bytes],
    code: Code,
    fragment: str,
) -> None:
    base = tmp_path / "m"
    put_version(base, 1, tf1_model)
    with running(model_config(("m", base)), file_system_poll_wait_seconds=POLL, max_num_load_retries=0) as (
        core,
        events,
    ):
        staging = put_version(tmp_path / "staging", 2, tf1_model)
        path = write_warmup(staging, [log.SerializeToString() for log in prediction_logs()])
        path.write_bytes(corrupt(path.read_bytes()))
        staging.rename(base / "2")
        events.wait("m", 2, S.END)
        error = events.error("m", 2)
        assert error is not None
        assert error.code == code, error
        assert fragment in error.message
        assert str(base / "2" / "assets.extra" / "tf_serving_warmup_requests") in error.message
        if code == Code.DATA_LOSS:
            assert error.message.endswith(". Please verify your warmup data is in TFRecord format.")
        assert status_of(core, "m") == [(2, "END", code.name, error.message), (1, "AVAILABLE", "OK", "")]
        with core.handle("m") as servable:
            assert servable.version == 1


def _failing_requests() -> list[tuple[str, Callable[[], list[bytes]], Code, str]]:
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    wrong_input = predict_pb2.PredictRequest()
    wrong_input.inputs["nope"].CopyFrom(tf.make_tensor_proto(np.float32([[1.0]])))
    wrong = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=wrong_input))
    session_run = prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog())
    return [
        ("rejected", lambda: [wrong.SerializeToString()], Code.INVALID_ARGUMENT, "not found in request"),
        ("session_run_log", lambda: [session_run.SerializeToString()], Code.UNIMPLEMENTED,
         "Unsupported log_type for warmup: 5"),
        ("1001 records", lambda: [b""] * 1001, Code.INVALID_ARGUMENT,
         "Number of warmup records exceeds the maximum (1000) at "),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "records", "code", "fragment"), _failing_requests(), ids=lambda v: str(v)[:20]
)
def test_warmup_that_cannot_run_fails_start_up(
    tmp_path: pathlib.Path,
    tf1_model: pathlib.Path,
    what: str,
    records: Callable[[], list[bytes]],
    code: Code,
    fragment: str,
) -> None:
    base = tmp_path / "m"
    write_warmup(put_version(base, 1, tf1_model), records())
    core = ServerCore(model_config(("m", base)), loader=load, max_num_load_retries=0)
    events = Events(core)
    try:
        error = raises(core.start)
    finally:
        core.stop()
    assert error.code == Code.UNKNOWN
    prefix = "1 model(s) did not become available: {{{name: m version: 1} due to error: " + code.name + ": "
    assert error.message.startswith(prefix), error.message
    assert fragment in error.message
    assert events.states("m") == [("m", 1, S.START), ("m", 1, S.LOADING), ("m", 1, S.END)]


def test_a_thousand_records_are_fine(tmp_path: pathlib.Path, tf1_model: pathlib.Path) -> None:
    """Records with no request (an unset log_type) are skipped, as TF Serving does; 1000 is the limit."""
    write_warmup(put_version(tmp_path, 1, tf1_model), [b""] * 1000)
    with running(model_config(("m", tmp_path)), max_num_load_retries=0) as (core, _):
        assert core.ready()
