"""The seven TF Serving RPCs as plain functions: serialized request in, serialized response out
(tfserving-api.md §2.3, §3).

They run in the gRPC front end's thread pool, not on the event loop: parsing a 256 MB request,
running TensorFlow and serializing the answer all take long enough to stall every other connection.
Taking and returning bytes (not messages) keeps even the protobuf work off the loop. The one
exception is `predict_inline`, for small Predicts on routes known to take microseconds (`inline.py`).

Every error is a `SigserveError` raised by the layer that knows; this module adds only the checks
TF Serving makes in its own gRPC layer (ModelSpec presence, metadata fields, the reload config kind)
and builds each response's `model_spec` the way TF Serving does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from sigserve.errors import Code, SigserveError, invalid_argument
from sigserve.protos import (
    SIGNATURE_DEF_MAP_TYPE_URL,
    classification_pb2,
    error_codes_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)
from sigserve.server.inline import InlinePolicy, Route
from sigserve.server.metrics import Metrics, prometheus_name

logger = logging.getLogger("sigserve.grpc")

DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"

# Request and response messages of the two tf.Example RPCs, by API name.
_EXAMPLE_RPCS: dict[str, tuple[Any, Any]] = {
    "classify": (classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse),
    "regress": (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
}

# The RPCs whose outcome TF Serving counts in request_count / request_latency (prediction_service_impl.cc).
COUNTED_RPCS = ("Predict", "Classify", "Regress")


def parse(message_class: Any, data: bytes) -> Any:
    """A request message from the wire; bytes that are not one are the caller's mistake."""
    try:
        return message_class.FromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        raise invalid_argument(
            f"Could not parse the request as a tensorflow.serving.{message_class.DESCRIPTOR.name}: {e}"
        ) from None


def model_spec_target(spec: Any) -> tuple[str, int | None, str | None]:
    """(name, version, label) of a ModelSpec, with ServerCore's empty-name check."""
    if not spec.name:
        raise invalid_argument("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.name, int(spec.version.value), None
    if choice == "version_label":
        return spec.name, None, spec.version_label
    return spec.name, None, None


def require_model_spec(request: Any) -> Any:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    return request.model_spec


def fill_model_spec(out: Any, name: str, signature_name: str | None, version: int) -> None:
    """TF Serving's MakeModelSpec: name, version, and the signature ("" → serving_default)."""
    out.name = name
    if signature_name is not None:
        out.signature_name = signature_name or DEFAULT_SIGNATURE
    out.version.value = int(version)


class PredictionServices:
    """The RPC bodies of PredictionService and ModelService over one ServerCore."""

    def __init__(self, core: Any, metrics: Metrics, *, tensor_content: bool = False) -> None:
        # Imported here so that importing the gRPC front end never needs the codec package.
        from sigserve.codec import example as codec_example
        from sigserve.codec import tensor as codec_tensor

        self.core = core
        self.metrics = metrics
        self.tensor_content = tensor_content
        # Which Predict routes take the short path: on the loop, the step in its thread (`inline.py`).
        self.steps = InlinePolicy()
        self._tensor = codec_tensor
        self._example = codec_example

    # -- PredictionService -----------------------------------------------------------------------

    def predict(self, data: bytes, timeout: float | None) -> tuple[bytes, str, str]:
        result = self._predict(data, timeout, inline=False)
        assert result is not None  # only an inline call declines
        return result

    def predict_inline(self, data: bytes, timeout: float | None) -> tuple[bytes, str, str] | None:
        """Predict on the event loop, or None (nothing done) unless the request is small, its deadline
        not tight, and its route on this very servable qualifies for the short path (`inline.py`)."""
        steps = self.steps
        if len(data) > steps.max_body or not steps.allows_timeout(timeout):
            return None
        return self._predict(data, timeout, inline=True)

    def _predict(self, data: bytes, timeout: float | None, inline: bool) -> tuple[bytes, str, str] | None:
        request = parse(predict_pb2.PredictRequest, data)
        spec = require_model_spec(request)
        name, version, label = model_spec_target(spec)
        signame = spec.signature_name or DEFAULT_SIGNATURE
        route: Route = (name, version, label, signame)
        if inline and not self.steps.likely(route):
            return None
        response = predict_pb2.PredictResponse()
        with self.core.handle(name, version, label) as servable:
            if inline and not self.steps.allows(route, servable):
                return None
            # The signature is looked up before any tensor is decoded, as in TF Serving.
            servable.get_signature(signame, "predict")
            to_ndarray = self._tensor.to_ndarray
            inputs = {alias: to_ndarray(proto, alias) for alias, proto in request.inputs.items()}
            output_filter = list(request.output_filter) or None
            del request, spec  # a large request's tensors now live in `inputs`: free the message
            outputs, runtime = self.steps.predict(
                route,
                servable,
                inputs,
                signature_name=signame,
                output_filter=output_filter,
                timeout=timeout,
                inline=inline,
            )
            # On the loop the step was not cancelled at the deadline: it is answered late instead.
            if inline and timeout is not None and runtime > timeout:
                raise SigserveError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
            self.metrics.observe_runtime(
                model_name=name, api="predict", signature=signame, latency_seconds=runtime
            )
            fill_model_spec(response.model_spec, name, signame, servable.version)
        del inputs
        from_ndarray = self._tensor.from_ndarray
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(from_ndarray(array, tensor_content=self.tensor_content))
        return response.SerializeToString(), name, signame

    def classify(self, data: bytes, timeout: float | None) -> tuple[bytes, str, str]:
        return self._run_examples(data, timeout, "classify")

    def regress(self, data: bytes, timeout: float | None) -> tuple[bytes, str, str]:
        return self._run_examples(data, timeout, "regress")

    def _run_examples(self, data: bytes, timeout: float | None, api: str) -> tuple[bytes, str, str]:
        """Classify or Regress (`api`): the same request shape, a different result message."""
        request_class, response_class = _EXAMPLE_RPCS[api]
        request = parse(request_class, data)
        spec = require_model_spec(request)
        name, version, label = model_spec_target(spec)
        signame = spec.signature_name or DEFAULT_SIGNATURE
        response = response_class()
        with self.core.handle(name, version, label) as servable:
            self.metrics.observe_examples(model_name=name, count=self._example.num_examples(request.input))
            run = servable.classify if api == "classify" else servable.regress
            started = time.perf_counter()
            result = run(request.input, signature_name=signame, timeout=timeout)
            self.metrics.observe_runtime(
                model_name=name,
                api=api,
                signature=signame,
                latency_seconds=time.perf_counter() - started,
            )
            response.result.CopyFrom(result)
            fill_model_spec(response.model_spec, name, signame, servable.version)
        return response.SerializeToString(), name, signame

    def multi_inference(self, data: bytes, timeout: float | None) -> bytes:
        request = parse(inference_pb2.MultiInferenceRequest, data)
        # TF Serving resolves the model from the first task (an absent one reads as an empty spec);
        # the runner then checks that every task names that same model.
        first = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        name, version, label = model_spec_target(first)
        with self.core.handle(name, version, label) as servable:
            response = servable.multi_inference(request, timeout=timeout)
            served = servable.version
        for task, result in zip(request.tasks, response.results, strict=False):
            fill_model_spec(result.model_spec, task.model_spec.name, task.model_spec.signature_name, served)
        return bytes(response.SerializeToString())

    def get_model_metadata(self, data: bytes) -> bytes:
        request = parse(get_model_metadata_pb2.GetModelMetadataRequest, data)
        spec = require_model_spec(request)
        fields = list(dict.fromkeys(request.metadata_field))
        if not fields:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in fields:
            if field != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {field} is not supported")
        name, version, label = model_spec_target(spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        with self.core.handle(name, version, label) as servable:
            for key, signature in servable.signatures.items():
                signature_map.signature_def[key].CopyFrom(signature)
            served = servable.version
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = int(served)
        # By hand, not Any.Pack: the type URL must name TF Serving's package, not ours.
        packed = response.metadata[SIGNATURE_DEF_FIELD]
        packed.type_url = SIGNATURE_DEF_MAP_TYPE_URL
        packed.value = signature_map.SerializeToString(deterministic=True)
        return bytes(response.SerializeToString())

    # -- ModelService ----------------------------------------------------------------------------

    def get_model_status(self, data: bytes) -> bytes:
        request = parse(get_model_status_pb2.GetModelStatusRequest, data)
        spec = require_model_spec(request)
        # A label does not narrow the status; a version does (get_model_status_impl.cc). An empty
        # name is left to the manager, whose answer is "Could not find any versions of model ".
        version = int(spec.version.value) if spec.WhichOneof("version_choice") == "version" else None
        response = self.core.model_status(spec.name, version)
        return bytes(response.SerializeToString())

    def handle_reload_config_request(self, data: bytes) -> bytes:
        request = parse(model_management_pb2.ReloadConfigRequest, data)
        names = list(dict.fromkeys(request.metric_names))
        before = read_int_metrics(self.metrics, names)
        error: SigserveError | None = None
        if request.config.WhichOneof("config") == "model_config_list":
            for index, config in enumerate(request.config.model_config_list.config):
                logger.info(
                    "Config entry index: %d path: %s name: %s platform: %s",
                    index,
                    config.base_path,
                    config.name,
                    config.model_platform,
                )
            try:
                self.core.reload_config(request.config)
            except SigserveError as e:
                error = e
        else:
            error = invalid_argument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        if error is not None:
            logger.error("ReloadConfig failed: %s", error.message)
            # TF Serving also fills response.status, but a non-OK gRPC status carries no response body.
            raise error
        after = read_int_metrics(self.metrics, names)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = error_codes_pb2.OK
        for metric_name in names:
            metric = response.metric.add()
            metric.name = metric_name
            metric.int64_value_increase = after[metric_name] - before[metric_name]
        return bytes(response.SerializeToString())


def read_int_metrics(metrics: Metrics, names: Iterable[str]) -> dict[str, int]:
    """Current integer value of each named counter or gauge (0 when there is no such metric).

    Names may be TF Serving's (`/tensorflow/serving/request_count`) or their Prometheus form
    (`:tensorflow:serving:request_count`). A metric with labels counts as the sum over its label sets.
    """
    wanted = {name: prometheus_name(name) if name.startswith("/") else name for name in names}
    totals = dict.fromkeys(wanted, 0)
    if not wanted:
        return totals
    by_prom: dict[str, list[str]] = {}
    for name, prom in wanted.items():
        by_prom.setdefault(prom, []).append(name)
    for family in _collect(metrics):
        if family.type not in ("counter", "gauge"):
            continue
        for sample in family.samples:
            sample_name = sample.name
            if family.type == "counter":
                if not sample_name.endswith("_total"):
                    continue  # `_created` timestamps
                # prometheus_client names the family without `_total`, its samples with it.
                matches = by_prom.get(family.name, []) + by_prom.get(sample_name, [])
            else:
                matches = by_prom.get(sample_name, [])
            for name in dict.fromkeys(matches):
                totals[name] += int(sample.value)
    return totals


def _collect(metrics: Metrics) -> list[Any]:
    return list(metrics.registry.collect())
