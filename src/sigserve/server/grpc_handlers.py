"""The seven TF Serving RPCs as gRPC bodies: serialized request in, `PredictionService`, serialized
response out (tfserving-api.md §2.3, §3).

They run in the gRPC front end's thread pool, not on the event loop: parsing a 256 MB request,
running TensorFlow and serializing the answer all take long enough to stall every other connection.
Taking and returning bytes (not messages) keeps even the protobuf work off the loop. The one
exception is `predict_inline`, for small Predicts on routes known to take microseconds
(`service/inline.py`).

This module is the gRPC codec around the service: TF Serving's checks that belong to its gRPC layer
(ModelSpec presence, metadata fields, the reload config kind) and each response's `model_spec` built
the way TF Serving builds it. Resolution, the short path, deadlines and metrics are the service's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from sigserve.errors import SigserveError, invalid_argument
from sigserve.interfaces import Servable
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
from sigserve.service import (
    CallContext,
    ModelSpec,
    PredictionService,
    PredictRequest,
    PredictResult,
    model_spec_of,
)
from sigserve.service.metrics import Metrics, prometheus_name

logger = logging.getLogger("sigserve.grpc")

DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"


def parse(message_class: Any, data: bytes) -> Any:
    """A request message from the wire; bytes that are not one are the caller's mistake."""
    try:
        return message_class.FromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        raise invalid_argument(
            f"Could not parse the request as a tensorflow.serving.{message_class.DESCRIPTOR.name}: {e}"
        ) from None


def parse_counted(message_class: Any, data: bytes, ctx: CallContext) -> Any:
    """`parse` for the counted RPCs: the request metrics carry the model name even when the rest of
    the request does not parse (field 1 of every request message is its ModelSpec)."""
    try:
        request = parse(message_class, data)
    except SigserveError:
        try:
            ctx.model_name = get_model_status_pb2.GetModelStatusRequest.FromString(data).model_spec.name
        except Exception:
            pass
        raise
    ctx.model_name = request.model_spec.name
    return request


def require_model_spec(request: Any) -> model_pb2.ModelSpec:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    return request.model_spec  # type: ignore[no-any-return]


def fill_model_spec(out: model_pb2.ModelSpec, name: str, signature_name: str | None, version: int) -> None:
    """TF Serving's MakeModelSpec: name, version, and the signature ("" → serving_default)."""
    out.name = name
    if signature_name is not None:
        out.signature_name = signature_name or DEFAULT_SIGNATURE
    out.version.value = int(version)


class TensorProtoInputs:
    """A PredictRequest's `inputs` map, decoded once the servable is known: the signature is checked
    first (TF Serving looks it up before it parses a tensor), with the gRPC API's error texts."""

    __slots__ = ("protos",)

    def __init__(self, protos: Mapping[str, Any]) -> None:
        self.protos = protos

    def decode(self, servable: Servable, signature_name: str) -> dict[str, np.ndarray]:
        from sigserve.codec.tensor import to_ndarray

        servable.get_signature(signature_name, "predict")
        tensors = {alias: to_ndarray(proto, alias) for alias, proto in self.protos.items()}
        self.protos = {}  # a large request's tensors now live in `tensors`: let the message go
        return tensors


class PredictionServices:
    """The RPC bodies of PredictionService and ModelService, over one `PredictionService`.

    Every body takes the request bytes and the call's `CallContext` (built by the transport: its
    timeout and metadata) and returns the response bytes."""

    def __init__(self, service: PredictionService, *, tensor_content: bool = False) -> None:
        from sigserve.codec import tensor as codec_tensor

        self.service = service
        self.tensor_content = tensor_content
        self._from_ndarray = codec_tensor.from_ndarray

    @property
    def metrics(self) -> Metrics:
        return self.service.metrics

    # -- PredictionService -----------------------------------------------------------------------

    def predict(self, data: bytes, ctx: CallContext) -> bytes:
        out = self.service.call(ctx, self._predict, (data, ctx, False))
        assert out is not None  # only an inline call declines
        return out

    def predict_inline(self, data: bytes, ctx: CallContext) -> bytes | None:
        """Predict on the event loop, or None (nothing done) unless the request is small, its deadline
        not tight, and its route on this very servable qualifies for the short path."""
        if not self.service.may_run_inline(len(data), ctx):
            return None
        return self.service.call(ctx, self._predict, (data, ctx, True))

    def _predict(self, args: tuple[bytes, CallContext, bool]) -> bytes | None:
        data, ctx, inline = args
        spec, call = self._predict_request(data, ctx)
        result = self.service.predict(ctx, call, inline=inline)
        if result is None:
            return None
        del call
        return self._predict_response(spec, result)

    async def predict_awaited(self, data: bytes, ctx: CallContext) -> bytes | None:
        """Predict on the event loop when the server batches: the call awaits its batch. None
        (nothing counted) when it is too large to parse here or its servable does not batch."""
        if not self.service.may_await(len(data)):
            return None
        return await self.service.call_awaited(ctx, self._predict_awaited, (data, ctx))

    async def _predict_awaited(self, args: tuple[bytes, CallContext]) -> bytes | None:
        data, ctx = args
        spec, call = self._predict_request(data, ctx)
        result = await self.service.predict_awaited(ctx, call)
        if result is None:
            return None
        return self._predict_response(spec, result)

    @staticmethod
    def _predict_request(data: bytes, ctx: CallContext) -> tuple[ModelSpec, PredictRequest]:
        request = parse_counted(predict_pb2.PredictRequest, data, ctx)
        spec = model_spec_of(require_model_spec(request))
        call = PredictRequest(spec, TensorProtoInputs(request.inputs), list(request.output_filter) or None)
        return spec, call  # `call` holds the tensors until they are decoded

    def _predict_response(self, spec: ModelSpec, result: PredictResult) -> bytes:
        response = predict_pb2.PredictResponse()
        fill_model_spec(response.model_spec, spec.name, result.signature_name, result.version)
        from_ndarray = self._from_ndarray
        for alias, array in result.outputs.items():
            response.outputs[alias].CopyFrom(from_ndarray(array, tensor_content=self.tensor_content))
        return bytes(response.SerializeToString())

    def classify(self, data: bytes, ctx: CallContext) -> bytes:
        return self._examples(data, ctx, classification_pb2.ClassificationRequest)

    def regress(self, data: bytes, ctx: CallContext) -> bytes:
        return self._examples(data, ctx, regression_pb2.RegressionRequest)

    async def classify_awaited(self, data: bytes, ctx: CallContext) -> bytes | None:
        """Classify on the event loop when the server batches (see `predict_awaited`)."""
        return await self._examples_awaited(data, ctx, classification_pb2.ClassificationRequest)

    async def regress_awaited(self, data: bytes, ctx: CallContext) -> bytes | None:
        """Regress on the event loop when the server batches (see `predict_awaited`)."""
        return await self._examples_awaited(data, ctx, regression_pb2.RegressionRequest)

    def _examples(self, data: bytes, ctx: CallContext, request_class: Any) -> bytes:
        out = self.service.call(ctx, self._run_examples, (data, ctx, request_class))
        assert out is not None
        return out

    def _run_examples(self, args: tuple[bytes, CallContext, Any]) -> bytes:
        """Classify or Regress: the same request shape, a different result message."""
        data, ctx, request_class = args
        request = parse_counted(request_class, data, ctx)
        spec = model_spec_of(require_model_spec(request))
        if request_class is classification_pb2.ClassificationRequest:
            response: Any = classification_pb2.ClassificationResponse()
            result, version = self.service.classify(ctx, spec, request.input)
        else:
            response = regression_pb2.RegressionResponse()
            result, version = self.service.regress(ctx, spec, request.input)
        return _examples_response(response, spec, result, version)

    async def _examples_awaited(self, data: bytes, ctx: CallContext, request_class: Any) -> bytes | None:
        if not self.service.may_await(len(data)):
            return None
        return await self.service.call_awaited(ctx, self._run_examples_awaited, (data, ctx, request_class))

    async def _run_examples_awaited(self, args: tuple[bytes, CallContext, Any]) -> bytes | None:
        data, ctx, request_class = args
        request = parse_counted(request_class, data, ctx)
        spec = model_spec_of(require_model_spec(request))
        answer: tuple[Any, int] | None
        if request_class is classification_pb2.ClassificationRequest:
            response: Any = classification_pb2.ClassificationResponse()
            answer = await self.service.classify_awaited(ctx, spec, request.input)
        else:
            response = regression_pb2.RegressionResponse()
            answer = await self.service.regress_awaited(ctx, spec, request.input)
        if answer is None:
            return None
        return _examples_response(response, spec, *answer)

    def multi_inference(self, data: bytes, ctx: CallContext) -> bytes:
        request = parse(inference_pb2.MultiInferenceRequest, data)
        response, _ = self.service.multi_inference(ctx, request)
        return bytes(response.SerializeToString())

    def get_model_metadata(self, data: bytes, ctx: CallContext) -> bytes:
        request = parse(get_model_metadata_pb2.GetModelMetadataRequest, data)
        spec = require_model_spec(request)
        fields = list(dict.fromkeys(request.metadata_field))
        if not fields:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in fields:
            if field != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {field} is not supported")
        metadata = self.service.model_metadata(ctx, model_spec_of(spec))
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in metadata.signatures.items():
            signature_map.signature_def[key].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = metadata.name
        response.model_spec.version.value = int(metadata.version)
        # By hand, not Any.Pack: the type URL must name TF Serving's package, not ours.
        packed = response.metadata[SIGNATURE_DEF_FIELD]
        packed.type_url = SIGNATURE_DEF_MAP_TYPE_URL
        packed.value = signature_map.SerializeToString(deterministic=True)
        return bytes(response.SerializeToString())

    # -- ModelService ----------------------------------------------------------------------------

    def get_model_status(self, data: bytes, ctx: CallContext) -> bytes:
        request = parse(get_model_status_pb2.GetModelStatusRequest, data)
        spec = require_model_spec(request)
        # A label does not narrow the status; a version does (get_model_status_impl.cc). An empty
        # name is left to the manager, whose answer is "Could not find any versions of model ".
        version = int(spec.version.value) if spec.WhichOneof("version_choice") == "version" else None
        return bytes(self.service.model_status(ctx, spec.name, version).SerializeToString())

    def handle_reload_config_request(self, data: bytes, ctx: CallContext) -> bytes:
        request = parse(model_management_pb2.ReloadConfigRequest, data)
        names = list(dict.fromkeys(request.metric_names))
        before = read_int_metrics(self.metrics, names)
        # TF Serving also fills response.status, but a non-OK gRPC status carries no response body:
        # an error is raised as it is.
        self.service.reload_config(ctx, request.config)
        after = read_int_metrics(self.metrics, names)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = error_codes_pb2.OK
        for metric_name in names:
            metric = response.metric.add()
            metric.name = metric_name
            metric.int64_value_increase = after[metric_name] - before[metric_name]
        return bytes(response.SerializeToString())


def _examples_response(response: Any, spec: ModelSpec, result: Any, version: int) -> bytes:
    response.result.CopyFrom(result)
    fill_model_spec(response.model_spec, spec.name, spec.signature, version)
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
    for family in metrics.registry.collect():
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
