"""SavedModel warmup: replay `<version>/assets.extra/tf_serving_warmup_requests` before a version
becomes AVAILABLE, so the first real request does not pay for graph initialisation
(tfserving-api.md §4 "Warmup"; TF Serving's `saved_model_warmup.cc`, `saved_model_warmup_util.cc`).

The file is a TFRecord of `PredictionLog` messages (read here without TensorFlow, CRCs checked).
Predict, Classify, Regress and MultiInference logs are run against the new servable; a
`session_run_log` is UNIMPLEMENTED as in TF Serving, other log types are skipped. Any failure fails
the load, so a version whose warmup requests do not run is never served.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import BinaryIO

from sigserve.errors import Code, SigserveError, invalid_argument, unimplemented
from sigserve.manager import tfrecord
from sigserve.manager.lifecycle import ManagedServable
from sigserve.protos import prediction_log_pb2

logger = logging.getLogger("sigserve.manager")

ASSETS_EXTRA_DIRECTORY = "assets.extra"
REQUESTS_FILE_NAME = "tf_serving_warmup_requests"
MAX_NUM_RECORDS = 1000

# PredictionLog.log_type field numbers, which TF Serving prints in its "Unsupported log_type" error.
_LOG_TYPE_NUMBERS = {
    field.name: field.number
    for field in prediction_log_pb2.PredictionLog.DESCRIPTOR.oneofs_by_name["log_type"].fields
}


def warmup_file(export_dir: str) -> str:
    return os.path.join(export_dir, ASSETS_EXTRA_DIRECTORY, REQUESTS_FILE_NAME)


def iterations(num_request_iterations_for_warmup: int) -> int:
    """`--num_request_iterations_for_warmup`: 0 (the default) means once per record."""
    return num_request_iterations_for_warmup if num_request_iterations_for_warmup > 0 else 1


def run_warmup(servable: ManagedServable, export_dir: str, num_request_iterations: int = 1) -> int:
    """Replay the warmup file of `export_dir` against `servable`; returns the number of records.

    No file: nothing to do (warmup data is optional). More than 1000 records: INVALID_ARGUMENT.
    A file that is not a TFRecord of PredictionLogs: DATA_LOSS / INVALID_ARGUMENT naming the file.
    """
    path = warmup_file(export_dir)
    if not os.path.exists(path):
        logger.debug("No warmup data file found at %s", path)
        return 0
    started = time.monotonic()
    count = 0
    try:
        with open(path, "rb") as f:
            for record in _records(f, path):
                if count >= MAX_NUM_RECORDS:
                    raise invalid_argument(
                        f"Number of warmup records exceeds the maximum ({MAX_NUM_RECORDS}) at {path}"
                    )
                log = prediction_log_pb2.PredictionLog()
                try:
                    log.ParseFromString(record)
                except Exception:
                    raise invalid_argument(
                        f"Failed to parse warmup record {count} ({len(record)} bytes) from {path}: "
                        "not a tensorflow.serving.PredictionLog"
                    ) from None
                for _ in range(num_request_iterations):
                    run_request(servable, log)
                count += 1
    except OSError as e:
        raise SigserveError(
            Code.FAILED_PRECONDITION, f"Could not read warmup file {path}: {e.strerror}"
        ) from None
    logger.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
        "Elapsed time (microseconds): %d.",
        path,
        count,
        int((time.monotonic() - started) * 1e6),
    )
    return count


def _records(stream: BinaryIO, path: str) -> Iterator[bytes]:
    """The file's records; a malformed file is DATA_LOSS naming the file, with TF Serving's hint."""
    try:
        yield from tfrecord.read_records(stream)
    except SigserveError as e:
        raise SigserveError(
            Code.DATA_LOSS, f"{e.message} in {path}. Please verify your warmup data is in TFRecord format."
        ) from None


def run_request(servable: ManagedServable, log: prediction_log_pb2.PredictionLog) -> None:
    """Run one PredictionLog's request on `servable`; the response is discarded."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        from sigserve.codec.tensor import to_ndarray

        request = log.predict_log.request
        inputs = {alias: to_ndarray(proto, alias) for alias, proto in request.inputs.items()}
        servable.predict(
            inputs,
            signature_name=request.model_spec.signature_name or None,
            output_filter=list(request.output_filter) or None,
        )
    elif kind == "classify_log":
        request = log.classify_log.request
        servable.classify(request.input, signature_name=request.model_spec.signature_name or None)
    elif kind == "regress_log":
        request = log.regress_log.request
        servable.regress(request.input, signature_name=request.model_spec.signature_name or None)
    elif kind == "multi_inference_log":
        servable.multi_inference(log.multi_inference_log.request)
    elif kind == "session_run_log":
        raise unimplemented(f"Unsupported log_type for warmup: {_LOG_TYPE_NUMBERS[kind]}")
