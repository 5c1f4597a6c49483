"""`sigserve warmup build`: request logs (TFRecord and JSON lines, written by the request logger) in, a
warmup file out that TensorFlow reads as TF Serving's PredictionLogs and that the server's own warmup
replays at load; records that would fail the load are left out with their reason."""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

import numpy as np
import pytest

from sigserve import cli
from sigserve.manager import tfrecord
from sigserve.manager import warmup as server_warmup
from sigserve.protos import inference_pb2, input_pb2, prediction_log_pb2
from sigserve.requestlog import Call, RequestLogger, warmup
from tests.test_requestlog import config_text, model

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def tf1_export(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    from tests import models

    return models.export_tf1(tmp_path_factory.mktemp("warmup_build_export"))


def examples(*xs: float) -> input_pb2.Input:
    out = input_pb2.Input()
    for x in xs:
        out.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return out


def traffic() -> list[Call]:
    """What a server would log for the TF1 test model: predict of three shapes (one seen often),
    classify, regress, multi-inference, and two calls the next version cannot run."""
    calls: list[Call] = []

    def add(api: str, signature: str, request: Any, **extra: Any) -> None:
        calls.append(
            Call(api, "m", 1, signature or "serving_default", request, _response(api), 1.7e9, **extra)
        )

    for _ in range(5):
        add("predict", "serving_default", {"x": np.float32([[1.0]])})
    add("predict", "serving_default", {"x": np.float32([[1.0], [2.0], [3.0]])})
    add(
        "predict",
        "multi",
        {"a": np.float32([1, 2]), "b": np.int64([3, 4])},
        output_filter=("sum",),
        requested_signature="multi",
    )
    add("classify", "classify_x", examples(0.5, 1.5), requested_signature="classify_x")
    add("regress", "regress_x", examples(2.0), requested_signature="regress_x")
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add(method_name="tensorflow/serving/regress")
    task.model_spec.name = "m"
    task.model_spec.signature_name = "regress_x"
    multi.input.CopyFrom(examples(1.0))
    add("multi_inference", "", multi)
    add("predict", "gone", {"x": np.float32([[1.0]])}, requested_signature="gone")
    add("predict", "serving_default", {"z": np.float32([[1.0]])})
    return calls


def _response(api: str) -> Any:
    from sigserve.protos import classification_pb2, regression_pb2

    if api == "predict":
        return {"y": np.float32([[0.0]])}
    if api == "classify":
        result = classification_pb2.ClassificationResult()
        result.classifications.add().classes.add(label="pos", score=1.0)
        return result
    if api == "regress":
        result = regression_pb2.RegressionResult()
        result.regressions.add(value=1.0)
        return result
    return inference_pb2.MultiInferenceResponse()


def write_logs(directory: pathlib.Path, kind: str) -> list[pathlib.Path]:
    request_logger = RequestLogger()
    request_logger.update(config_text(model("m", str(directory / "m"), 1.0, kind)))
    for call in traffic():
        route = request_logger.sample("m")
        assert route is not None
        request_logger.submit(route, call)
    request_logger.close()
    return sorted(directory.glob("m-*"))


def version(tmp_path: pathlib.Path, export: pathlib.Path, number: int = 2) -> pathlib.Path:
    target = tmp_path / "base" / str(number)
    shutil.copytree(export, target)
    return target


@pytest.mark.parametrize("kind", ["tfrecord", "jsonl"])
def test_a_file_built_from_logs_is_tf_servings_format_and_replays_at_load(
    tmp_path: pathlib.Path, tf1_export: pathlib.Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = write_logs(tmp_path / "logs", kind)
    target = version(tmp_path, tf1_export)
    status = cli.main(
        [
            "warmup",
            "build",
            "--from",
            str(tmp_path / "logs" / "m-*"),
            "--model_base_path",
            str(tmp_path / "base"),
            "--version",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert logs
    assert "Wrote 10 warmup record(s) (6 distinct request shape(s), from 12 logged call(s))" in out
    assert 'left out 1: signature "gone" is not in this version' in out
    assert "left out 1: inputs ['z'] are not those of signature \"serving_default\"" in out
    assert "Replayed 10 record(s) as the server does at load" in out

    from tensorflow_serving.apis import prediction_log_pb2 as tfs_prediction_log_pb2

    path = pathlib.Path(server_warmup.warmup_file(str(target)))
    parsed = [
        tfs_prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))
    ]
    kinds = [p.WhichOneof("log_type") for p in parsed]
    # Every shape once (in the order first seen), then the often-seen one again.
    assert (
        kinds
        == ["predict_log"] * 3 + ["classify_log", "regress_log", "multi_inference_log"] + ["predict_log"] * 4
    )
    assert all(not p.HasField("log_metadata") for p in parsed)
    assert not parsed[0].predict_log.HasField("response")
    np.testing.assert_array_equal(tf.make_ndarray(parsed[1].predict_log.request.inputs["x"]), [[1], [2], [3]])
    assert list(parsed[2].predict_log.request.output_filter) == ["sum"]
    assert tf.make_ndarray(parsed[2].predict_log.request.inputs["b"]).dtype == np.int64

    from sigserve import runtime

    servable = runtime.load(str(target))
    try:
        assert server_warmup.run_warmup(servable, str(target)) == 10
    finally:
        servable.close()


def test_max_keeps_every_shape_before_repeating_one(tmp_path: pathlib.Path, tf1_export: pathlib.Path) -> None:
    write_logs(tmp_path / "logs", "tfrecord")
    target = version(tmp_path, tf1_export)
    report = warmup.build(sorted(str(p) for p in (tmp_path / "logs").glob("m-*")), str(target), max_records=4)
    assert report.written == 4 and report.shapes == 6
    with open(report.path, "rb") as f:
        logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in tfrecord.read_records(f)]
    assert [warmup.shape_key(log)[0] for log in logs] == ["predict_log"] * 3 + ["classify_log"]
    report = warmup.build(
        sorted(str(p) for p in (tmp_path / "logs").glob("m-*")), str(target), max_records=1000, overwrite=True
    )
    assert report.written == 10  # six shapes once, then the often-seen one again up to its five calls


def test_refusals(
    tmp_path: pathlib.Path, tf1_export: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_logs(tmp_path / "logs", "tfrecord")
    version(tmp_path, tf1_export)
    base = [
        "warmup",
        "build",
        "--from",
        str(tmp_path / "logs" / "m-*"),
        "--model_base_path",
        str(tmp_path / "base"),
        "--check",
        "false",
    ]
    assert cli.main([*base, "--version", "2"]) == 0
    capsys.readouterr()
    assert cli.main([*base, "--version", "2"]) == 1
    assert "tf_serving_warmup_requests exists; pass --overwrite" in capsys.readouterr().err
    assert cli.main([*base, "--version", "9"]) == 1
    assert f"No version 9 under {tmp_path / 'base'}" in capsys.readouterr().err
    assert cli.main([*base, "--version", "2", "--overwrite", "--max", "1001"]) == 1
    assert "--max must be between 1 and 1000" in capsys.readouterr().err
    assert cli.main([*base, "--version", "2", "--overwrite", "--model_name", "other"]) == 1
    assert "No logged request can warm up" in capsys.readouterr().err
    (tmp_path / "nothing.jsonl").write_text("")
    assert (
        cli.main([*base[:3], str(tmp_path / "nothing.jsonl"), *base[4:], "--version", "2", "--overwrite"])
        == 1
    )
    assert "No logged request can warm up" in capsys.readouterr().err
