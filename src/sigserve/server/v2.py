"""The Open Inference Protocol's calls over the prediction service, for both of its transports
(`v2_rest.py` on the REST port, `v2_grpc.py` in the gRPC method table).

V2 is one more front end of `PredictionService`: an inference request becomes a `ModelSpec` (the
version segment is a number or a label, the `signature_name` parameter picks the SignatureDef) and a
`V2Inputs` adapter, and goes through the same `predict` as TF Serving's Predict. So resolution,
the short path on the event loop, batching (a V2 request and a TF Serving request to the same
signature share batches: both reach the same servable runner), deadlines and metrics are the
service's; only the wire format and the signature checks below are V2's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

import sigserve
from sigserve.codec.v2 import examples, metadata
from sigserve.codec.v2.request import SIGNATURE_NAME, InferRequest, InferResponse, parse_version, response
from sigserve.errors import Code, SigserveError, invalid_argument
from sigserve.interfaces import Servable
from sigserve.protos import get_model_status_pb2, meta_graph_pb2
from sigserve.saved_model import signature_constants as sc
from sigserve.service import CallContext, ModelSpec, PredictionService, PredictRequest

SERVER_NAME = "sigserve"
# What `GET /v2` / ServerMetadata advertise (Triton's extension names).
EXTENSIONS = ("binary_tensor_data", "classification")
PROTOCOL = "v2"
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.Value("AVAILABLE")
_EXAMPLE_METHODS = (sc.CLASSIFY_METHOD_NAME, sc.REGRESS_METHOD_NAME)


class V2Inputs:
    """A V2 request's inputs as the signature's feeds, checked once the servable is resolved: names
    and datatypes against the SignatureDef, or, for a Classify/Regress signature, tf.Example
    features given as named inputs (`codec.v2.examples`)."""

    __slots__ = ("request",)

    def __init__(self, request: InferRequest) -> None:
        self.request = request

    def decode(self, servable: Servable, signature_name: str) -> Mapping[str, np.ndarray]:
        signature = servable.signatures.get(signature_name)
        if signature is None:
            known = ", ".join(sorted(servable.signatures)[:20])
            raise invalid_argument(
                f"model '{servable.name}' version {servable.version} has no signature '{signature_name}'; "
                f'its signatures: {known}. Pick one with the request parameter "{SIGNATURE_NAME}"'
            )
        request = self.request
        if signature.method_name in _EXAMPLE_METHODS and not self._serialized_examples(signature):
            if getattr(servable, "method_name_check", False):
                raise SigserveError(
                    Code.FAILED_PRECONDITION,
                    f"signature '{signature_name}' is a {signature.method_name} signature, which this "
                    "server (--enable_signature_method_name_check) runs only through TF Serving's "
                    "Classify/Regress APIs, e.g. POST /v1/models/<name>:classify",
                )
            if len(signature.inputs) != 1:
                raise invalid_argument(
                    f"signature '{signature_name}' has {len(signature.inputs)} inputs; a Classify or "
                    "Regress signature takes one tensor of serialized tf.Examples"
                )
            (alias,) = signature.inputs
            return {alias: examples.serialized_examples(request.inputs)}
        dtypes = {alias: info.dtype for alias, info in signature.inputs.items()}
        return request.feeds(dtypes, signature_name)

    def _serialized_examples(self, signature: meta_graph_pb2.SignatureDef) -> bool:
        """The request sends the signature's own input (serialized tf.Examples) under its name."""
        inputs = self.request.inputs
        aliases = list(signature.inputs)
        return len(inputs) == 1 and len(aliases) == 1 and inputs[0].name == aliases[0]


def model_spec(name: str, version: str, signature_name: str = "") -> ModelSpec:
    """The ModelSpec of a V2 model name and version segment ("" latest, digits, or a label)."""
    if not name:
        raise invalid_argument("the request names no model; give the model's name, e.g. /v2/models/m/infer")
    number, label = parse_version(version)
    return ModelSpec(name, number, label, signature_name)


class OpenInference:
    """The V2 calls (inference, metadata, readiness) over one `PredictionService`."""

    def __init__(self, service: PredictionService) -> None:
        self.service = service

    def infer(
        self, ctx: CallContext, request: InferRequest, name: str, version: str, *, inline: bool = False
    ) -> InferResponse | None:
        """Run `request` on model `name` at `version`. `inline`: the caller is the event loop, and
        None (nothing done) means "run me in the pool", as `PredictionService.predict` says."""
        if request.timeout is not None:
            timeout = request.timeout if ctx.timeout is None else min(ctx.timeout, request.timeout)
            if inline and not self.service.inline.allows_timeout(timeout):
                return None
        call = self._predict_request(ctx, request, name, version)
        result = self.service.predict(ctx, call, inline=inline)
        if result is None:
            return None
        return response(request, result.outputs, name, str(result.version))

    async def infer_awaited(
        self, ctx: CallContext, request: InferRequest, name: str, version: str
    ) -> InferResponse | None:
        """`infer` from an event loop when the server batches (`PredictionService.predict_awaited`):
        None (nothing done) when the model's servable does not batch."""
        result = await self.service.predict_awaited(ctx, self._predict_request(ctx, request, name, version))
        if result is None:
            return None
        return response(request, result.outputs, name, str(result.version))

    @staticmethod
    def _predict_request(ctx: CallContext, request: InferRequest, name: str, version: str) -> PredictRequest:
        """The Predict that serves `request`; its `timeout` parameter tightens the call's deadline."""
        spec = model_spec(name, version, request.signature_name)
        ctx.model_name = name
        if request.timeout is not None:
            ctx.timeout = request.timeout if ctx.timeout is None else min(ctx.timeout, request.timeout)
        return PredictRequest(spec, V2Inputs(request), request.output_filter())

    def model_metadata(self, ctx: CallContext, name: str, version: str) -> metadata.ModelMetadata:
        """The version's default signature, and every AVAILABLE version of the model."""
        found = self.service.model_metadata(ctx, model_spec(name, version))
        status = self.service.model_status(ctx, name)
        versions = [v.version for v in status.model_version_status if v.state == _AVAILABLE]
        return metadata.model_metadata(name, versions, found.signatures)

    def model_ready(self, name: str, version: str) -> bool:
        return self.service.model_ready(model_spec(name, version))

    def server_ready(self) -> bool:
        return self.service.readiness().ready

    @staticmethod
    def server_metadata() -> tuple[str, str, tuple[str, ...]]:
        return SERVER_NAME, sigserve.__version__, EXTENSIONS
