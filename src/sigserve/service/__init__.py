"""The transport-neutral prediction service that every front end calls (README, Architecture).

REST, both gRPC transports, V2 and in-process hosts decode their wire format into a `ModelSpec` and
an `Inputs` adapter, call `PredictionService` inside `PredictionService.call`, and encode the result:
handle resolution, the short path on the event loop, deadlines and every request metric live here.
TensorFlow-free: the servables it calls come from the manager.
"""

from __future__ import annotations

from sigserve.service.calls import (
    DEFAULT_SIGNATURE,
    AnsweredCall,
    Authenticator,
    CallContext,
    CallObserver,
    Inputs,
    ModelMetadata,
    ModelSpec,
    PredictRequest,
    PredictResult,
    Readiness,
    Tensors,
)
from sigserve.service.inline import InlinePolicy
from sigserve.service.metrics import Metrics
from sigserve.service.prediction import PredictionService, model_spec_of

__all__ = [
    "DEFAULT_SIGNATURE",
    "AnsweredCall",
    "Authenticator",
    "CallContext",
    "CallObserver",
    "InlinePolicy",
    "Inputs",
    "Metrics",
    "ModelMetadata",
    "ModelSpec",
    "PredictRequest",
    "PredictResult",
    "PredictionService",
    "Readiness",
    "Tensors",
    "model_spec_of",
]
