"""What a front end hands the prediction service, whichever protocol it speaks: the ModelSpec, the call's
context (deadline, metadata, what to count it as) and the decoded request.

A request's tensors are decoded only once the servable is resolved (`Inputs.decode`), because REST's
JSON and V2's datatypes need the signature's dtypes to decode at all, and TF Serving checks the
signature before it parses a single tensor; a front end passes a small adapter that knows its wire
format, and the service calls it inside the handle.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sigserve.errors import Code, SigserveError
from sigserve.interfaces import Servable
from sigserve.protos import meta_graph_pb2, model_server_config_pb2

DEFAULT_SIGNATURE = "serving_default"
_NO_METADATA: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which model, which version (a number, a label, or the latest), which signature ("" is
    `serving_default`): TF Serving's ModelSpec, as every protocol names it."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""

    @property
    def signature(self) -> str:
        return self.signature_name or DEFAULT_SIGNATURE


class CallContext:
    """One API call as the service sees it: how to count it, how long it may take, what came with it.

    `entrypoint` and `api` are the request metrics' labels (`REST`/`predict`, `GRPC`/`Predict`, ...);
    `timeout` is the seconds the call may take from `started` (None: no deadline); `metadata` holds
    the request's headers or gRPC metadata, lower-case names. The service fills `model_name` and
    `signature` as it resolves them, so a failure is counted under what was known by then.
    `deadline_message` is the protocol's text for a missed deadline (TF Serving's REST and gRPC texts
    differ). `protocol` labels the request metrics: `tfserving` (TF Serving's APIs) or `v2`.
    """

    __slots__ = (
        "api",
        "deadline_message",
        "entrypoint",
        "metadata",
        "model_name",
        "protocol",
        "signature",
        "started",
        "timeout",
    )

    def __init__(
        self,
        entrypoint: str,
        api: str,
        timeout: float | None = None,
        *,
        model_name: str = "",
        metadata: Mapping[str, str] = _NO_METADATA,
        started: float | None = None,
        deadline_message: str = "Deadline Exceeded",
        protocol: str = "tfserving",
    ) -> None:
        self.entrypoint = entrypoint
        self.api = api
        self.timeout = timeout
        self.model_name = model_name
        self.signature = ""
        self.metadata = metadata
        self.started = time.perf_counter() if started is None else started
        self.deadline_message = deadline_message
        self.protocol = protocol

    def overdue(self) -> bool:
        return self.timeout is not None and time.perf_counter() - self.started > self.timeout

    def deadline_exceeded(self) -> SigserveError:
        return SigserveError(Code.DEADLINE_EXCEEDED, self.deadline_message)


class Inputs(Protocol):
    """A Predict request's tensors in their wire form, decoded against the resolved servable.

    `decode` raises the protocol's own errors (a REST body naming a signature the model lacks gets
    TF Serving's REST text, a gRPC one its gRPC text) and returns tensors keyed by input alias."""

    def decode(self, servable: Servable, signature_name: str) -> Mapping[str, np.ndarray]: ...


class Authenticator(Protocol):
    """Decides whether a call may run, from its `authorization` header / metadata value (None when
    absent); raises UNAUTHENTICATED if not (`sigserve.server.auth.TokenFile`)."""

    def check(self, header: str | None) -> None: ...


class Tensors:
    """`Inputs` that are already numpy arrays (in-process hosts such as Ray Serve, tests)."""

    __slots__ = ("tensors",)

    def __init__(self, tensors: Mapping[str, np.ndarray]) -> None:
        self.tensors = tensors

    def decode(self, servable: Servable, signature_name: str) -> Mapping[str, np.ndarray]:
        return self.tensors


@dataclass(slots=True)
class PredictRequest:
    spec: ModelSpec
    inputs: Inputs
    output_filter: Sequence[str] | None = None


@dataclass(slots=True)
class PredictResult:
    """Outputs by alias, and what served them (TF Serving echoes both in the response's ModelSpec)."""

    outputs: dict[str, np.ndarray]
    version: int
    signature_name: str


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    version: int
    signatures: Mapping[str, meta_graph_pb2.SignatureDef]


@dataclass(frozen=True, slots=True)
class Readiness:
    """`ready`: start-up has settled and every configured model has an AVAILABLE version; `models`:
    each configured model's best state (`AVAILABLE`, `LOADING`, ... or `NOT_FOUND: <why>`)."""

    ready: bool
    models: dict[str, str]


@dataclass(slots=True)
class AnsweredCall:
    """One successfully answered Predict / Classify / Regress / MultiInference, as the service hands it
    to a `CallObserver`. `request` / `response` by `api`:

    - "predict": input and output tensors by alias (`Mapping[str, np.ndarray]`), `output_filter`;
    - "classify", "regress": the `Input` / the `ClassificationResult` or `RegressionResult`;
    - "multi_inference": the `MultiInferenceRequest` / `MultiInferenceResponse`.

    Either may instead be the serialized request / response message. `version` and `signature` are
    what served the call; `requested_*` the request's own ModelSpec ("" / None where it named none).
    Nobody changes these objects after the call is handed over: an observer may read them later, in
    another thread."""

    api: str
    model: str
    version: int
    signature: str
    request: Any
    response: Any
    time: float
    requested_version: int | None = None
    requested_label: str | None = None
    requested_signature: str = ""
    output_filter: Sequence[str] = ()


class CallObserver(Protocol):
    """Told about answered calls, every protocol alike (the request logger is one).

    `sample(model)` runs on the request path for every answered call and must cost next to nothing:
    it returns a ticket when this call is to be observed, else None (then nothing else is built).
    `observe(ticket, call)` must neither block nor raise. `check(config)` raises INVALID_ARGUMENT for
    a ModelServerConfig the observer cannot apply (before the models change); `configure(config)`
    applies one that the manager has accepted."""

    def sample(self, model_name: str) -> Any | None: ...

    def observe(self, ticket: Any, call: AnsweredCall) -> None: ...

    def check(self, config: model_server_config_pb2.ModelServerConfig) -> None: ...

    def configure(self, config: model_server_config_pb2.ModelServerConfig) -> None: ...
