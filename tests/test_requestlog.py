"""Request logging below the server: records (PredictionLog, JSON lines), sinks (rotation, failures)
and the logger (config, sampling, bounded queue, writer thread, close). The files are read back with
TensorFlow's own TFRecord reader and `tensorflow_serving.apis`' PredictionLog, and JSON lines with the
REST API's parsers."""

from __future__ import annotations

import errno
import logging
import os
import pathlib
import threading
from typing import Any

import numpy as np
import orjson
import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sigserve.codec import json as codec_json
from sigserve.errors import Code, SigserveError
from sigserve.manager import tfrecord
from sigserve.protos import (
    classification_pb2,
    example_pb2,
    inference_pb2,
    input_pb2,
    logging_pb2,
    model_server_config_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from sigserve.requestlog import Call, RequestLogger, Settings, calls, sinks
from sigserve.requestlog.logger import REQUEST_LOG_COUNT


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config_text(*models: str) -> Any:
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse("model_config_list {" + "".join(models) + "}", config)
    return config


def model(name: str, prefix: str, rate: float = 1.0, kind: str = "") -> str:
    return (
        f'config {{ name: "{name}" base_path: "/m/{name}" model_platform: "tensorflow" '
        f'logging_config {{ log_collector_config {{ type: "{kind}" filename_prefix: "{prefix}" }} '
        f"sampling_config {{ sampling_rate: {rate} }} }} }}"
    )


def predict_call(x: np.ndarray, *, model_name: str = "m", **extra: Any) -> Call:
    return Call(
        api="predict",
        model=model_name,
        version=3,
        signature="serving_default",
        request={"x": x},
        response={"y": x * 2},
        time=1_700_000_000.5,
        **extra,
    )


def read_tfrecords(paths: list[pathlib.Path]) -> list[bytes]:
    out = []
    for path in sorted(paths):
        with open(path, "rb") as f:
            out.extend(tfrecord.read_records(f))
    return out


def count(registry: CollectorRegistry, model_name: str, status: str) -> float:
    value = registry.get_sample_value(
        REQUEST_LOG_COUNT + "_total", {"model_name": model_name, "status": status}
    )
    return value or 0.0


# -- records -------------------------------------------------------------------------------------


def test_predict_log_reads_back_with_tensorflow(tmp_path: pathlib.Path) -> None:
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import prediction_log_pb2 as tfs_prediction_log_pb2

    x = np.array([[1.5], [-2.0]], np.float32)
    words = np.array([b"a", b"\xff\x00"], dtype=object)
    call = Call(
        api="predict",
        model="m",
        version=7,
        signature="serving_default",
        request={"x": x, "w": words},
        response={"y": x + 1, "count": np.int64(2)},
        time=1_700_000_123.9,
        requested_label="stable",
        output_filter=("y", "count"),
    )
    metadata = logging_pb2.LogMetadata(saved_model_tags=["serve"])
    metadata.sampling_config.sampling_rate = 0.5
    path = tmp_path / "log.tfrecord"
    path.write_bytes(tfrecord.encode(calls.prediction_log(call, metadata).SerializeToString()))

    (raw,) = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    log = tfs_prediction_log_pb2.PredictionLog.FromString(raw)
    assert log.log_metadata.model_spec.name == "m"
    assert log.log_metadata.model_spec.version.value == 7
    assert log.log_metadata.timestamp_secs == 1_700_000_123
    assert log.log_metadata.sampling_config.sampling_rate == 0.5
    assert list(log.log_metadata.saved_model_tags) == ["serve"]
    request = log.predict_log.request
    assert request.model_spec.version_label == "stable"
    assert request.model_spec.signature_name == ""
    assert list(request.output_filter) == ["y", "count"]
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["x"]), x)
    assert tf.make_ndarray(request.inputs["x"]).dtype == np.float32
    assert tf.make_ndarray(request.inputs["w"]).tolist() == [b"a", b"\xff\x00"]
    response = log.predict_log.response
    assert response.model_spec.signature_name == "serving_default"
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), x + 1)
    assert tf.make_ndarray(response.outputs["count"]) == 2


def test_serialized_messages_are_logged_as_they_are() -> None:
    request = prediction_log_pb2.PredictLog().request
    request.model_spec.name = "m"
    request.model_spec.version.value = 2
    request.inputs["x"].dtype = 1  # DT_FLOAT, a scalar
    request.inputs["x"].float_val.append(1.0)
    call = Call(
        api="predict",
        model="m",
        version=2,
        signature="serving_default",
        request=request.SerializeToString(),
        response={"y": np.float32([3.0])},
        time=0.0,
    )
    log = calls.prediction_log(call, logging_pb2.LogMetadata())
    assert log.predict_log.request == request
    line = orjson.loads(calls.json_line(call))
    assert line["request"] == {"inputs": {"x": 1.0}}
    assert line["response"] == {"outputs": {"y": [3.0]}}


def examples_input(*xs: float, context: bool = False) -> input_pb2.Input:
    out = input_pb2.Input()
    target = out.example_list_with_context if context else out.example_list
    for x in xs:
        target.examples.add().features.feature["x"].float_list.value.append(x)
    if context:
        out.example_list_with_context.context.features.feature["tag"].bytes_list.value.append(b"\xfe")
    return out


def test_classify_regress_and_multi_inference_logs() -> None:
    result = classification_pb2.ClassificationResult()
    result.classifications.add().classes.add(label="pos", score=0.75)
    classify = Call("classify", "m", 1, "classify_x", examples_input(2.0), result, 0.0)
    log = calls.prediction_log(classify, logging_pb2.LogMetadata())
    assert log.classify_log.request.input == examples_input(2.0)
    assert log.classify_log.response.result == result
    assert log.classify_log.response.model_spec.signature_name == "classify_x"

    regression = regression_pb2.RegressionResult()
    regression.regressions.add(value=3.5)
    regress = Call("regress", "m", 1, "regress_x", examples_input(1.0, context=True), regression, 0.0)
    assert calls.prediction_log(regress, logging_pb2.LogMetadata()).regress_log.response.result == regression
    line = orjson.loads(calls.json_line(regress))
    assert line["request"] == {"context": {"tag": [{"b64": "/g=="}]}, "examples": [{"x": [1.0]}]}
    assert line["response"] == {"results": [3.5]}

    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add().model_spec.name = "m"
    request.input.CopyFrom(examples_input(1.0))
    response = inference_pb2.MultiInferenceResponse()
    response.results.add().model_spec.name = "m"
    multi = Call("multi_inference", "m", 1, "", request, response, 0.0)
    log = calls.prediction_log(multi, logging_pb2.LogMetadata())
    assert log.multi_inference_log.request == request
    assert log.multi_inference_log.response == response
    assert orjson.loads(calls.json_line(multi))["request"]["tasks"] == [{"model_spec": {"name": "m"}}]


def test_json_line_is_a_rest_body_that_reads_back_to_the_same_tensors() -> None:
    x = np.array([[0.1], [np.nan], [np.inf]], np.float32)
    words = np.array([b"plain", b"\xff\xfe"], dtype=object)
    call = Call(
        api="predict",
        model="m",
        version=3,
        signature="multi",
        request={"x": x, "w": words},
        response={"y": np.int64([1, 2])},
        time=1_700_000_000.25,
        requested_version=3,
        requested_signature="multi",
    )
    line = calls.json_line(call)
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    head = orjson.loads(line.replace(b"NaN", b"null").replace(b"Infinity", b"null"))
    assert head["time"] == "2023-11-14T22:13:20.250000Z"
    assert (head["model"], head["version"], head["signature"], head["api"]) == ("m", 3, "multi", "predict")
    assert head["requested_version"] == 3
    assert head["request"]["inputs"]["w"] == ["plain", {"b64": "//4="}]
    assert head["response"] == {"outputs": {"y": [1, 2]}}
    # The request part is a REST predict body: the REST API's own parser gives the same tensors back.
    start = line.index(b'"request":') + len(b'"request":')
    end = line.index(b',"response":')
    body = codec_json.parse_predict(line[start:end])
    assert body.signature_name == "multi"
    inputs, _ = body.to_inputs({"x": 1, "w": 7})  # DT_FLOAT, DT_STRING
    np.testing.assert_array_equal(inputs["x"], x)
    assert inputs["w"].tolist() == [b"plain", b"\xff\xfe"]


features = st.dictionaries(
    st.text(min_size=1, max_size=5),
    st.one_of(
        st.lists(st.binary(max_size=6), max_size=3).map(lambda v: ("bytes_list", v)),
        st.lists(st.floats(width=32), max_size=3).map(lambda v: ("float_list", v)),
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3).map(lambda v: ("int64_list", v)),
    ),
    max_size=4,
)


@settings(max_examples=80, deadline=None)
@given(st.lists(features, min_size=1, max_size=3))
def test_logged_examples_read_back_with_the_rest_parser(examples: list[dict[str, Any]]) -> None:
    original = input_pb2.Input()
    for feature_map in examples:
        example = original.example_list.examples.add()
        for name, (kind, values) in feature_map.items():
            getattr(example.features.feature[name], kind).value.extend(values)
    call = Call("regress", "m", 1, "r", original, regression_pb2.RegressionResult(), 0.0)
    call.response.regressions.add(value=1.0)
    line = calls.json_line(call)
    start = line.index(b'"request":') + len(b'"request":')
    back = codec_json.parse_examples(line[start : line.index(b',"response":')], "regress").input

    def normal(e: example_pb2.Example) -> dict[str, Any]:
        # An empty list has no kind in JSON; NaN is not equal to itself.
        out = {}
        for name, feature in e.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value) if kind else []
            out[name] = [repr(v) for v in values]
        return out

    assert [normal(e) for e in back.example_list.examples] == [
        normal(e) for e in original.example_list.examples
    ]


# -- sinks -----------------------------------------------------------------------------------------


def test_files_rotate_by_size_and_by_age(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    sink = sinks.FileSink("tfrecord", str(tmp_path / "logs" / "m"), sinks.Rotation(100, 60.0), clock=clock)
    records = [sink.encode(bytes([i]) * 30) for i in range(5)]  # 46 bytes each
    assert sink.write(records) == (5, None)
    assert [len(pathlib.Path(p).read_bytes()) for p in sink.paths] == [92, 92, 46]
    clock.now += 59
    sink.write([sink.encode(b"late")])
    assert len(sink.paths) == 3
    clock.now += 1
    sink.write([sink.encode(b"new file")])
    assert len(sink.paths) == 4
    big = sink.encode(b"x" * 500)  # over the limit on its own: a file of its own, never split
    sink.write([big])
    assert pathlib.Path(sink.paths[-1]).read_bytes() == big
    clock.now += 60
    sink.close_if_due()
    assert not sink.is_open
    assert read_tfrecords([pathlib.Path(p) for p in sink.paths]) == [bytes([i]) * 30 for i in range(5)] + [
        b"late",
        b"new file",
        b"x" * 500,
    ]
    names = [os.path.basename(p) for p in sink.paths]
    assert names[0] == f"m-20231114-221320-{os.getpid()}-1.tfrecord"
    assert len(set(names)) == len(names)


def test_a_full_disk_loses_the_write_and_the_next_write_starts_a_new_file(tmp_path: pathlib.Path) -> None:
    full = {"on": True}

    def opener(path: str) -> int:
        if full["on"]:
            return os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC, as on a full disk
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    sink = sinks.FileSink(
        "jsonl", str(tmp_path / "m"), sinks.Rotation(1 << 20, 3600), clock=Clock(), opener=opener
    )
    written, error = sink.write([b"{}\n", b"{}\n"])
    assert written == 0 and error is not None and error.errno == errno.ENOSPC
    assert not sink.is_open
    full["on"] = False
    assert sink.write([b'{"a":1}\n']) == (1, None)
    assert pathlib.Path(sink.paths[-1]).read_bytes() == b'{"a":1}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (model("m", "/tmp/x", 1.0, "kafka"), 'Unknown log_collector_config type "kafka" for model m'),
        (model("m", "", 0.5), "log_collector_config.filename_prefix of model m is empty"),
        (model("m", "/tmp/x", 1.5), "sampling_rate 1.5 of model m is outside [0, 1]"),
    ],
)
def test_invalid_logging_configs_are_refused_and_change_nothing(
    tmp_path: pathlib.Path, text: str, message: str
) -> None:
    request_logger = RequestLogger()
    request_logger.update(config_text(model("keep", str(tmp_path / "keep"))))
    with pytest.raises(SigserveError) as info:
        request_logger.update(config_text(text))
    assert info.value.code == Code.INVALID_ARGUMENT
    assert message in info.value.message
    assert request_logger.models == ["keep"]
    request_logger.close()


# -- the logger ------------------------------------------------------------------------------------


def test_sampled_calls_are_written_off_the_request_path_and_close_loses_nothing(
    tmp_path: pathlib.Path,
) -> None:
    registry = CollectorRegistry()
    request_logger = RequestLogger(registry=registry)
    request_logger.update(
        config_text(
            model("m", str(tmp_path / "shared")),
            model("n", str(tmp_path / "shared")),  # the same files: one sink, one writer
            model("j", str(tmp_path / "json" / "j"), 1.0, "jsonl"),
            model("off", str(tmp_path / "off"), 0.0),
            'config { name: "plain" base_path: "/m/plain" model_platform: "tensorflow" }',
        )
    )
    assert request_logger.models == ["j", "m", "n"]
    assert request_logger.sample("off") is None
    assert request_logger.sample("plain") is None
    for i in range(300):
        for name in ("m", "n", "j"):
            route = request_logger.sample(name)
            assert route is not None
            request_logger.submit(route, predict_call(np.float32([i]), model_name=name))
    request_logger.close()
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r)
        for r in read_tfrecords(list(tmp_path.glob("shared-*")))
    ]
    assert len(logs) == 600
    by_model = {"m": [], "n": []}  # type: dict[str, list[float]]
    for log in logs:
        by_model[log.log_metadata.model_spec.name].append(log.predict_log.request.inputs["x"].tensor_content)
    assert by_model["m"] == [np.float32([i]).tobytes() for i in range(300)]
    lines = (tmp_path / "json").glob("j-*.jsonl")
    assert sum(len(p.read_bytes().splitlines()) for p in lines) == 300
    assert not list(tmp_path.glob("off*"))
    assert count(registry, "m", "OK") == 300
    assert count(registry, "j", "OK") == 300


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: pathlib.Path) -> None:
    entered = threading.Event()
    release = threading.Event()

    def slow_open(path: str) -> int:
        entered.set()
        release.wait(30)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)

    registry = CollectorRegistry()
    request_logger = RequestLogger(Settings(queue_size=5), registry=registry, opener=slow_open)
    request_logger.update(config_text(model("m", str(tmp_path / "m"))))
    route = request_logger.sample("m")
    assert route is not None
    request_logger.submit(route, predict_call(np.float32([0])))
    assert entered.wait(10)  # the writer holds that call and is stuck opening the file
    for i in range(1, 9):
        request_logger.submit(route, predict_call(np.float32([i])))
    assert count(registry, "m", "RESOURCE_EXHAUSTED") == 3
    release.set()
    request_logger.close()
    assert count(registry, "m", "OK") == 6
    assert len(read_tfrecords(list(tmp_path.glob("m-*")))) == 6


def test_an_unwritable_directory_is_counted_and_logged_once_per_interval(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    clock = Clock()
    registry = CollectorRegistry()
    request_logger = RequestLogger(Settings(error_log_interval=60), registry=registry, clock=clock)
    request_logger.update(config_text(model("m", str(blocker / "logs" / "m"))))
    route = request_logger.sample("m")
    assert route is not None
    caplog.set_level(logging.ERROR, logger="sigserve.requestlog")
    for _ in range(5):
        request_logger.submit(route, predict_call(np.float32([1])))
        assert request_logger.flush(10)
    assert count(registry, "m", "NOT_FOUND") == 5
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "Could not write request log files" in messages[0] and "requests are still served" in messages[0]
    clock.now += 60
    request_logger.submit(route, predict_call(np.float32([1])))
    assert request_logger.flush(10)
    assert len(caplog.records) == 2
    assert "(and 4 more time(s) in the last 60 s)" in caplog.records[1].getMessage()
    request_logger.close()


def test_a_reload_moves_models_between_files(tmp_path: pathlib.Path) -> None:
    request_logger = RequestLogger()
    request_logger.update(config_text(model("m", str(tmp_path / "a"))))
    route = request_logger.sample("m")
    assert route is not None
    request_logger.submit(route, predict_call(np.float32([1])))
    assert request_logger.flush(10)
    request_logger.update(config_text(model("m", str(tmp_path / "b"), 1.0, "jsonl")))
    route = request_logger.sample("m")
    assert route is not None
    request_logger.submit(route, predict_call(np.float32([2])))
    request_logger.update(config_text())
    assert request_logger.sample("m") is None
    request_logger.close()
    assert len(read_tfrecords(list(tmp_path.glob("a-*.tfrecord")))) == 1
    (jsonl,) = tmp_path.glob("b-*.jsonl")
    assert orjson.loads(jsonl.read_bytes())["request"] == {"inputs": {"x": [2.0]}}


def test_a_taken_file_name_is_never_overwritten(tmp_path: pathlib.Path) -> None:
    taken = tmp_path / f"m-20231114-221320-{os.getpid()}-1.jsonl"
    taken.write_bytes(b"someone else's\n")
    sink = sinks.FileSink("jsonl", str(tmp_path / "m"), sinks.Rotation(1 << 20, 3600), clock=Clock())
    assert sink.write([b"{}\n"]) == (1, None)
    sink.close()
    assert taken.read_bytes() == b"someone else's\n"
    assert sink.paths == [str(tmp_path / f"m-20231114-221320-{os.getpid()}-2.jsonl")]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_, np.float16, object]),
    st.lists(st.integers(0, 3), max_size=3),
    st.sampled_from([{}, {"requested_version": 0}, {"requested_version": 7}, {"requested_label": "l"}]),
    st.sampled_from(["", "sig"]),
    st.lists(st.sampled_from(["y", "z"]), max_size=2),
)
def test_predict_records_written_directly_equal_the_proto_builders(
    dtype: Any, shape: list[int], requested: dict[str, Any], signature: str, output_filter: list[str]
) -> None:
    size = int(np.prod(shape))
    if dtype is object:
        array = np.array([b"v%d" % i for i in range(size)], dtype=object).reshape(shape)
    else:
        array = np.arange(size).astype(dtype).reshape(shape)
    call = Call(
        "predict",
        "m",
        4,
        "serving_default",
        {"x": array, "w": np.float32([1.5])},
        {"y": np.int64(size)},
        1_700_000_000.9,
        requested_signature=signature,
        output_filter=tuple(output_filter),
        **requested,
    )
    metadata = logging_pb2.LogMetadata(saved_model_tags=["serve", "gpu"])
    metadata.sampling_config.sampling_rate = 0.25
    fast = calls.prediction_log_bytes(call, metadata.SerializeToString())
    assert prediction_log_pb2.PredictionLog.FromString(fast) == calls.prediction_log(call, metadata)
