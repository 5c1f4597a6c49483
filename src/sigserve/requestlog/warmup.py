"""Warmup from real traffic: request logs in, `assets.extra/tf_serving_warmup_requests` out.

The records are TF Serving's (a TFRecord of `PredictionLog`), read by the same reader the server
uses for TF Serving's own warmup fixtures (`manager/warmup.py`), so a file built here is one any TF
Serving reads too. Each kept record is checked against the version it is for, as far as that goes
without TensorFlow (the signature exists and is servable by that API, the input aliases and dtypes
are the signature's, the output filter names outputs): a warmup record that fails makes the server
fail the load, so a record that cannot run is left out here, with its reason in the report.

Which records: the request shapes seen in the logs, each once before any twice (a model compiles
and caches per signature and per input shape, and those first calls are what warmup is for), in the
order they were first seen, up to `max_records` (TF Serving reads at most 1000). Responses and log
metadata are dropped: warmup only sends the requests.
"""

from __future__ import annotations

import collections
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sigserve.errors import Code, SigserveError, invalid_argument
from sigserve.manager import tfrecord
from sigserve.manager import warmup as server_warmup
from sigserve.protos import meta_graph_pb2, prediction_log_pb2
from sigserve.saved_model import validate

DEFAULT_SIGNATURE = "serving_default"
MAX_RECORDS = server_warmup.MAX_NUM_RECORDS
# How many records per distinct request shape are held while reading (the logs may be gigabytes).
_KEEP_PER_SHAPE = MAX_RECORDS

PredictionLog = prediction_log_pb2.PredictionLog
Signatures = Mapping[str, meta_graph_pb2.SignatureDef]


@dataclass
class Report:
    """What `build` did: records read and kept, distinct request shapes, and why others were left out."""

    path: str
    read: int = 0
    written: int = 0
    shapes: int = 0
    models: set[str] = field(default_factory=set)
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)


# -- reading logs ----------------------------------------------------------------------------------


def _is_tfrecord(head: bytes) -> bool:
    """A TFRecord file starts with a length whose masked CRC-32C follows it."""
    if len(head) < 12:
        return False
    (masked,) = struct.unpack("<I", head[8:12])
    return tfrecord.unmask(masked) == tfrecord.crc32c(head[:8])


def read_logs(path: str, signatures: Signatures) -> Iterator[tuple[PredictionLog | None, str, str]]:
    """(log, model name, "") per record of a request log file, TFRecord or JSON lines; (None, model,
    reason) for a record that cannot be read back. JSON lines are typed by `signatures`."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            f.seek(0)
            if path.endswith(".jsonl") or not _is_tfrecord(head):
                for line in f:
                    if line.strip():
                        yield _from_json_line(line, signatures)
                return
            for record in tfrecord.read_records(f):
                log = PredictionLog()
                try:
                    log.ParseFromString(record)
                except Exception:
                    yield None, "", "not a tensorflow.serving.PredictionLog"
                    continue
                yield log, log.log_metadata.model_spec.name or _model_of(log), ""
    except OSError as e:
        raise invalid_argument(f"Could not read request log {path}: {e.strerror}") from None
    except SigserveError as e:
        raise SigserveError(e.code, f"{path}: {e.message}") from None


def _model_of(log: PredictionLog) -> str:
    kind = log.WhichOneof("log_type")
    if kind == "multi_inference_log":
        tasks = log.multi_inference_log.request.tasks
        return tasks[0].model_spec.name if tasks else ""
    if kind in ("predict_log", "classify_log", "regress_log"):
        return str(getattr(log, kind).request.model_spec.name)
    return ""


def _from_json_line(line: bytes, signatures: Signatures) -> tuple[PredictionLog | None, str, str]:
    from sigserve.codec import json_records
    from sigserve.codec.tensor import from_ndarray

    try:
        doc = json_records.read_record(line)
    except SigserveError as e:
        return None, "", f"not a JSON-lines request log record ({e.message})"
    model = str(doc.get("model", ""))
    api = doc.get("api")
    request = doc.get("request")
    if not isinstance(request, dict):
        return None, model, "a JSON line without a request object"
    log = PredictionLog()
    try:
        if api == "predict":
            name = str(doc.get("signature") or request.get("signature_name") or DEFAULT_SIGNATURE)
            signature = signatures.get(name)
            if signature is None:
                return None, model, f'signature "{name}" is not in this version'
            inputs = request.get("inputs")
            aliases = list(inputs) if isinstance(inputs, dict) else list(signature.inputs)
            dtypes = {a: signature.inputs[a].dtype for a in aliases if a in signature.inputs}
            if len(dtypes) != len(aliases):
                return None, model, f'inputs {sorted(aliases)} are not those of signature "{name}"'
            out = log.predict_log.request
            out.model_spec.name = model
            out.model_spec.signature_name = str(request.get("signature_name", ""))
            for alias, array in json_records.predict_inputs(request, dtypes).items():
                out.inputs[alias].CopyFrom(from_ndarray(array, dtypes[alias], tensor_content=True))
            out.output_filter.extend(str(o) for o in request.get("output_filter", []))
        elif api in ("classify", "regress"):
            entry: Any = log.classify_log if api == "classify" else log.regress_log
            entry.request.model_spec.name = model
            entry.request.model_spec.signature_name = str(request.get("signature_name", ""))
            entry.request.input.CopyFrom(json_records.examples_input(request))
        elif api == "multi_inference":
            from google.protobuf import json_format

            json_format.ParseDict(request, log.multi_inference_log.request)
        else:
            return None, model, f"unknown api {api!r}"
    except SigserveError as e:
        return None, model, f"request does not read back: {e.message}"
    except Exception as e:  # json_format's ParseError and friends
        return None, model, f"request does not read back: {e}"
    return log, model, ""


# -- checking and choosing -------------------------------------------------------------------------


def _dims(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d.size) for d in tensor.tensor_shape.dim)


def problem(log: PredictionLog, signatures: Signatures) -> str:
    """Why `log` would fail as a warmup record of a version with these signatures ("" if it would not,
    as far as can be told without running it)."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = signatures.get(name)
        if signature is None:
            return f'signature "{name}" is not in this version'
        verdict = validate.check_predict(signature)
        if not verdict.ok:
            return f'signature "{name}": {verdict.reason}'
        if set(request.inputs) != set(signature.inputs):
            return f'inputs {sorted(request.inputs)} are not those of signature "{name}"'
        for alias, tensor in request.inputs.items():
            if tensor.dtype != signature.inputs[alias].dtype:
                return f'input "{alias}" has another dtype than signature "{name}" expects'
        unknown = [o for o in request.output_filter if o not in signature.outputs]
        if unknown:
            return f'output_filter names {unknown}, not outputs of signature "{name}"'
        return ""
    if kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = signatures.get(name)
        if signature is None:
            return f'signature "{name}" is not in this version'
        check = validate.check_classify if kind == "classify_log" else validate.check_regress
        verdict = check(signature)
        return "" if verdict.ok else f'signature "{name}": {verdict.reason}'
    if kind == "multi_inference_log":
        for task in log.multi_inference_log.request.tasks:
            name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if name not in signatures:
                return f'signature "{name}" is not in this version'
        return "" if log.multi_inference_log.request.tasks else "a MultiInference request without tasks"
    return f"log type {kind} is not replayed by warmup"


def shape_key(log: PredictionLog) -> tuple[Any, ...]:
    """What makes two requests exercise different compiled paths: API, signature(s), input shapes."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        tensors = tuple(sorted((a, t.dtype, _dims(t)) for a, t in request.inputs.items()))
        return (kind, request.model_spec.signature_name, tensors, tuple(request.output_filter))
    from sigserve.codec.example import num_examples

    if kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        return (kind, request.model_spec.signature_name, num_examples(request.input))
    request = log.multi_inference_log.request
    signatures = tuple(t.model_spec.signature_name for t in request.tasks)
    return (kind, signatures, num_examples(request.input))


def choose(logs: Iterable[PredictionLog], max_records: int) -> tuple[list[PredictionLog], int]:
    """Up to `max_records` logs, every shape once before any shape twice; and the number of shapes."""
    groups: dict[tuple[Any, ...], list[PredictionLog]] = {}
    for log in logs:
        group = groups.setdefault(shape_key(log), [])
        if len(group) < min(_KEEP_PER_SHAPE, max_records):
            group.append(log)
    chosen: list[PredictionLog] = []
    depth = 0
    while len(chosen) < max_records:
        layer = [g[depth] for g in groups.values() if depth < len(g)]
        if not layer:
            break
        chosen.extend(layer[: max_records - len(chosen)])
        depth += 1
    return chosen, len(groups)


def request_only(log: PredictionLog) -> PredictionLog:
    """The log as a warmup record: the request, no response, no metadata."""
    kind = log.WhichOneof("log_type")
    out = PredictionLog()
    getattr(out, kind).request.CopyFrom(getattr(log, kind).request)
    return out


# -- the file --------------------------------------------------------------------------------------


def signatures_of(export_dir: str, tags: Iterable[str] = ("serve",)) -> Signatures:
    """The SignatureDefs of a version, read without TensorFlow."""
    from sigserve.saved_model import loader

    meta_graph = loader.get_meta_graph(loader.read_saved_model(export_dir), tags)
    return dict(meta_graph.signature_def)


def build(
    log_paths: Iterable[str],
    export_dir: str,
    *,
    model_name: str = "",
    max_records: int = MAX_RECORDS,
    overwrite: bool = False,
    tags: Iterable[str] = ("serve",),
) -> Report:
    """Write `export_dir`'s warmup file from the request logs at `log_paths` (see the module doc).

    INVALID_ARGUMENT when `max_records` is outside 1..1000, when the logs hold several models and
    `model_name` picks none, or when no record fits the version; ALREADY_EXISTS when the version has a
    warmup file and `overwrite` is off."""
    if not 1 <= max_records <= MAX_RECORDS:
        raise invalid_argument(f"--max must be between 1 and {MAX_RECORDS} (TF Serving reads at most that)")
    target = server_warmup.warmup_file(export_dir)
    if os.path.exists(target) and not overwrite:
        raise SigserveError(
            Code.ALREADY_EXISTS,
            f"{target} exists; pass --overwrite to replace it, or build another version's",
        )
    signatures = signatures_of(export_dir, tags)
    report = Report(path=target)
    kept: list[tuple[str, PredictionLog]] = []
    for path in log_paths:
        for log, model, reason in read_logs(path, signatures):
            report.read += 1
            if model_name and model != model_name:
                report.skipped[f"another model ({model})"] += 1
                continue
            if log is None:
                report.skipped[reason] += 1
                continue
            reason = problem(log, signatures)
            if reason:
                report.skipped[reason] += 1
                continue
            report.models.add(model)
            kept.append((model, request_only(log)))
            if len(kept) > 50 * MAX_RECORDS:  # bound memory: reduce to the shapes chosen so far
                chosen, _ = choose((log for _, log in kept), max_records)
                kept = [(model, log) for log in chosen]
    if len(report.models) > 1:
        raise invalid_argument(
            f"The logs hold calls of several models ({', '.join(sorted(report.models))}); "
            "pick one with --model_name"
        )
    chosen, report.shapes = choose((log for _, log in kept), max_records)
    if not chosen:
        reasons = "; ".join(f"{n} x {r}" for r, n in report.skipped.most_common(5)) or "the logs are empty"
        raise invalid_argument(f"No logged request can warm up {export_dir}: {reasons}")
    _write_atomically(target, (tfrecord.encode(log.SerializeToString()) for log in chosen))
    report.written = len(chosen)
    return report


def _write_atomically(path: str, records: Iterable[bytes]) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".tf_serving_warmup_requests.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for record in records:
                f.write(record)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
