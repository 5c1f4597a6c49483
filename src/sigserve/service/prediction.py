"""`PredictionService`: TF Serving's prediction and model APIs, once, for every front end.

TF Serving's REST handler calls the same Predict / Classify / Regress implementations as its gRPC
service; sigserve does the same, and V2 and hosts such as Ray Serve are more callers of this one
class. Each front end only decodes its wire format into a `ModelSpec` and an `Inputs` adapter,
calls a method here inside `call()`, and encodes the result. Everything that must behave the same
whichever protocol carried a request is here and nowhere else:

* resolving a ModelSpec to a loaded Servable (the manager's handle, held for the call);
* the short path: whether a small Predict runs on the event loop, its step in the loop's thread, or
  in the front end's pool (`inline.py`), and the deadline check such a call gets when it returns;
* the request metrics (`request_count`, `request_latency`), the runtime metric and the example
  counts, under TF Serving's names and labels;
* readiness: which configured models have an AVAILABLE version;
* access tokens: `authenticate(ctx)` (or a body wrapped by `guard`) is the one check every protocol
  makes before it reads a request, against the `Authenticator` given here (--auth_token_file).

Signature lookup for execution is the Servable's (`get_signature`, inside `Servable.predict`); the
decoders see the signature map only to learn dtypes, as TF Serving's REST JSON decoder does.

The methods are synchronous and thread-agnostic: a front end runs them on its event loop (only
`predict(..., inline=True)`, which declines by returning None) or in its thread pool, with its own
mechanics for waiting; what to run where, and what the answer is, is decided here. When the server
batches (`batching`), `predict_awaited`, `classify_awaited` and `regress_awaited` are the same calls
for an event loop: a request waiting for its batch is a future there, not a pool thread (they
decline with None, having done nothing, for a servable that does not batch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from sigserve.errors import Code, SigserveError, invalid_argument
from sigserve.interfaces import ModelManager, Servable
from sigserve.protos import (
    classification_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    model_server_config_pb2,
    regression_pb2,
)
from sigserve.service.calls import (
    DEFAULT_SIGNATURE,
    AnsweredCall,
    Authenticator,
    CallContext,
    CallObserver,
    ModelMetadata,
    ModelSpec,
    PredictRequest,
    PredictResult,
    Readiness,
)
from sigserve.service.inline import InlinePolicy, Route
from sigserve.service.metrics import Metrics

logger = logging.getLogger("sigserve.service")

P = TypeVar("P")
T = TypeVar("T")


class PredictionService:
    """The APIs over one model manager, recorded in one `Metrics`."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: Metrics,
        *,
        inline: InlinePolicy | None = None,
        observer: CallObserver | None = None,
        authenticator: Authenticator | None = None,
        batching: bool = False,
    ) -> None:
        self.manager = manager
        # The server batches (--enable_batching): front ends try the `*_awaited` calls first.
        self.batching = batching
        self.metrics = metrics
        self.inline = inline if inline is not None else InlinePolicy()
        # Told about every answered call and every new config (the request logger); None: no one.
        self.observer = observer
        self.authenticator = authenticator
        # Imported here so that importing the service never needs the codec package's numpy work.
        from sigserve.codec import example as codec_example

        self._num_examples = codec_example.num_examples

    # -- running a call --------------------------------------------------------------------------

    def call(self, ctx: CallContext, body: Callable[[P], T | None], payload: P) -> T | None:
        """`body(payload)` (decode, a method of this class, encode), counted in the request metrics
        under `ctx` (request_count always, request_latency on success). A body that returns None
        declined to run here (the short path said no) and is not counted: the pool call that
        follows is."""
        code = Code.OK
        try:
            result = body(payload)
        except SigserveError as e:
            code = e.code
            raise
        except BaseException:
            code = Code.INTERNAL
            raise
        finally:
            if code != Code.OK:
                self.record(ctx, code)
        if result is not None:
            self.record(ctx, code)
        return result

    async def call_awaited(
        self, ctx: CallContext, body: Callable[[P], Awaitable[T | None]], payload: P
    ) -> T | None:
        """`call` for a body that is awaited on an event loop (one that uses the `*_awaited` calls).
        A body cancelled while it waits (the client went away) is counted as CANCELLED."""
        code = Code.OK
        try:
            result = await body(payload)
        except SigserveError as e:
            code = e.code
            raise
        except asyncio.CancelledError:
            code = Code.CANCELLED
            raise
        except BaseException:
            code = Code.INTERNAL
            raise
        finally:
            if code != Code.OK:
                self.record(ctx, code)
        if result is not None:
            self.record(ctx, code)
        return result

    def may_await(self, size: int) -> bool:
        """Whether a Predict / Classify / Regress of `size` request bytes may take the awaited path
        (`predict_awaited`, ...): the server batches, and the request is small enough to parse on
        the event loop (`InlinePolicy.max_awaited_body`)."""
        return self.batching and size <= self.inline.max_awaited_body

    def record(self, ctx: CallContext, code: Code) -> None:
        """Count one finished call: `call()` does it for bodies; a front end calls it directly only
        for requests it refused before any body ran (a malformed URL, a body over the size limit)."""
        self.metrics.observe_request(
            model_name=ctx.model_name,
            api=ctx.api,
            entrypoint=ctx.entrypoint,
            signature=ctx.signature,
            code=code,
            latency_seconds=time.perf_counter() - ctx.started,
            protocol=ctx.protocol,
        )

    def authenticate(self, ctx: CallContext) -> None:
        """Raise UNAUTHENTICATED unless the call's `authorization` metadata carries an accepted token
        (nothing to check when the server runs without --auth_token_file). Front ends call this
        before they parse a request, so a client without a token learns that first."""
        if self.authenticator is not None:
            self.authenticator.check(ctx.metadata.get("authorization"))

    def guard(self, body: Callable[[P, CallContext], T]) -> Callable[[P, CallContext], T]:
        """`body(payload, ctx)` preceded by `authenticate(ctx)`; `body` itself when no tokens are
        configured, so a server without --auth_token_file pays nothing."""
        if self.authenticator is None:
            return body

        def checked(payload: P, ctx: CallContext) -> T:
            self.authenticate(ctx)
            return body(payload, ctx)

        return checked

    def may_run_inline(self, size: int, ctx: CallContext) -> bool:
        """Whether a Predict of `size` request bytes may try the short path at all (before it is
        parsed): small, and a deadline no tighter than a call on the loop can honour."""
        return size <= self.inline.max_body and self.inline.allows_timeout(ctx.timeout)

    # -- PredictionService -----------------------------------------------------------------------

    def predict(
        self, ctx: CallContext, request: PredictRequest, *, inline: bool = False
    ) -> PredictResult | None:
        """Run a Predict. `inline`: the caller is the event loop; returns None (having done nothing
        that matters) unless the route qualifies for the short path on this very servable, and
        answers DEADLINE_EXCEEDED when the step, which cannot be cancelled there, overran."""
        spec = request.spec
        signature = spec.signature
        ctx.model_name = spec.name
        ctx.signature = signature
        route: Route = (spec.name, spec.version, spec.label, signature)
        policy = self.inline
        if inline and not policy.likely(route):
            return None
        with self.manager.handle(spec.name, spec.version, spec.label) as servable:
            if inline and not policy.allows(route, servable):
                return None
            inputs = request.inputs.decode(servable, signature)
            outputs, runtime = policy.predict(
                route,
                servable,
                inputs,
                signature_name=signature,
                output_filter=request.output_filter,
                timeout=ctx.timeout,
                inline=inline,
            )
            version = servable.version
        if inline and ctx.overdue():
            raise ctx.deadline_exceeded()
        return self._predicted(request, inputs, outputs, version, runtime)

    async def predict_awaited(self, ctx: CallContext, request: PredictRequest) -> PredictResult | None:
        """`predict` from an event loop when the servable batches: the request waits for its batch
        as a future. None (nothing done) when the servable does not batch: the caller goes on as
        without batching (`predict(..., inline=True)`, then its pool). The deadline is the batching
        runner's (a call still queued at `ctx.timeout` fails), and is checked once more at the end."""
        spec = request.spec
        signature = spec.signature
        ctx.model_name = spec.name
        ctx.signature = signature
        with self.manager.handle(spec.name, spec.version, spec.label) as servable:
            if not servable.awaits_batches:
                return None
            inputs = request.inputs.decode(servable, signature)
            started = time.perf_counter()
            outputs = await servable.predict_awaited(
                inputs, signature_name=signature, output_filter=request.output_filter, timeout=ctx.timeout
            )
            runtime = time.perf_counter() - started
            version = servable.version
        if ctx.overdue():
            raise ctx.deadline_exceeded()
        return self._predicted(request, inputs, outputs, version, runtime)

    def _predicted(
        self,
        request: PredictRequest,
        inputs: Mapping[str, Any],
        outputs: dict[str, Any],
        version: int,
        runtime: float,
    ) -> PredictResult:
        """A Predict's answer, counted in the runtime metric and shown to the observer."""
        spec = request.spec
        signature = spec.signature
        self.metrics.observe_runtime(
            model_name=spec.name, api="predict", signature=signature, latency_seconds=runtime
        )
        observer = self.observer
        if observer is not None:
            ticket = observer.sample(spec.name)
            if ticket is not None:
                call = AnsweredCall("predict", spec.name, version, signature, inputs, outputs, time.time())
                call.output_filter = tuple(request.output_filter or ())
                observer.observe(ticket, _requested(call, spec))
        return PredictResult(outputs, version, signature)

    def classify(
        self, ctx: CallContext, spec: ModelSpec, input: input_pb2.Input
    ) -> tuple[classification_pb2.ClassificationResult, int]:
        """Classify: (the result, the version that served it)."""
        return self._examples(ctx, spec, input, "classify")  # type: ignore[return-value]

    def regress(
        self, ctx: CallContext, spec: ModelSpec, input: input_pb2.Input
    ) -> tuple[regression_pb2.RegressionResult, int]:
        """Regress: (the result, the version that served it)."""
        return self._examples(ctx, spec, input, "regress")  # type: ignore[return-value]

    async def classify_awaited(
        self, ctx: CallContext, spec: ModelSpec, input: input_pb2.Input
    ) -> tuple[classification_pb2.ClassificationResult, int] | None:
        """`classify` from an event loop when the servable batches; None (nothing done) otherwise."""
        return await self._examples_awaited(ctx, spec, input, "classify")  # type: ignore[return-value]

    async def regress_awaited(
        self, ctx: CallContext, spec: ModelSpec, input: input_pb2.Input
    ) -> tuple[regression_pb2.RegressionResult, int] | None:
        """`regress` from an event loop when the servable batches; None (nothing done) otherwise."""
        return await self._examples_awaited(ctx, spec, input, "regress")  # type: ignore[return-value]

    def _examples(
        self, ctx: CallContext, spec: ModelSpec, input: input_pb2.Input, api: str
    ) -> tuple[classification_pb2.ClassificationResult | regression_pb2.RegressionResult, int]:
        ctx.model_name = spec.name
        ctx.signature = spec.signature
        with self.manager.handle(spec.name, spec.version, spec.label) as servable:
            self.metrics.observe_examples(model_name=spec.name, count=self._num_examples(input))
            run = servable.classify if api == "classify" else servable.regress
            started = time.perf_counter()
            result = run(input, signature_name=spec.signature, timeout=ctx.timeout)
            runtime = time.perf_counter() - started
            version = servable.version
        return self._examined(spec, api, input, result, version, runtime)

    async def _examples_awaited(
        self, ctx: CallContext, spec: ModelSpec, input: input_pb2.Input, api: str
    ) -> tuple[classification_pb2.ClassificationResult | regression_pb2.RegressionResult, int] | None:
        ctx.model_name = spec.name
        ctx.signature = spec.signature
        with self.manager.handle(spec.name, spec.version, spec.label) as servable:
            if not servable.awaits_batches:
                return None
            self.metrics.observe_examples(model_name=spec.name, count=self._num_examples(input))
            run = _awaited_examples(servable, api)
            started = time.perf_counter()
            result = await run(input, signature_name=spec.signature, timeout=ctx.timeout)
            runtime = time.perf_counter() - started
            version = servable.version
        if ctx.overdue():
            raise ctx.deadline_exceeded()
        return self._examined(spec, api, input, result, version, runtime)

    def _examined(
        self,
        spec: ModelSpec,
        api: str,
        input: input_pb2.Input,
        result: classification_pb2.ClassificationResult | regression_pb2.RegressionResult,
        version: int,
        runtime: float,
    ) -> tuple[classification_pb2.ClassificationResult | regression_pb2.RegressionResult, int]:
        """A Classify / Regress answer, counted in the runtime metric and shown to the observer."""
        signature = spec.signature
        self.metrics.observe_runtime(
            model_name=spec.name, api=api, signature=signature, latency_seconds=runtime
        )
        observer = self.observer
        if observer is not None:
            ticket = observer.sample(spec.name)
            if ticket is not None:
                call = AnsweredCall(api, spec.name, version, signature, input, result, time.time())
                observer.observe(ticket, _requested(call, spec))
        return result, version

    def multi_inference(
        self, ctx: CallContext, request: inference_pb2.MultiInferenceRequest
    ) -> tuple[inference_pb2.MultiInferenceResponse, int]:
        """MultiInference: TF Serving resolves the model from the first task (an absent one reads as
        an empty spec, which fails); the runner then checks that every task names that same model."""
        spec = model_spec_of(request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec())
        ctx.model_name = spec.name
        with self.manager.handle(spec.name, spec.version, spec.label) as servable:
            response, version = servable.multi_inference(request, timeout=ctx.timeout), servable.version
        # TF Serving's response names, per task, the model, signature and version that ran it.
        for task, result in zip(request.tasks, response.results, strict=False):
            out = result.model_spec
            out.name = task.model_spec.name
            out.signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            out.version.value = int(version)
        observer = self.observer
        if observer is not None:
            ticket = observer.sample(spec.name)
            if ticket is not None:
                call = AnsweredCall("multi_inference", spec.name, version, "", request, response, time.time())
                observer.observe(ticket, _requested(call, spec))
        return response, version

    def model_metadata(self, ctx: CallContext, spec: ModelSpec) -> ModelMetadata:
        """The signatures of the version a ModelSpec names."""
        ctx.model_name = spec.name
        with self.manager.handle(spec.name, spec.version, spec.label) as servable:
            return ModelMetadata(spec.name, servable.version, servable.signatures)

    def served_versions(self, name: str | None = None) -> dict[str, list[ModelMetadata]]:
        """Every configured model (or just `name`) -> the signatures of each of its AVAILABLE
        versions: what the OpenAPI documents and the web console describe. A version that unloads
        meanwhile is left out; a model still loading has an empty list."""
        available = get_model_status_pb2.ModelVersionStatus.State.Value("AVAILABLE")
        out: dict[str, list[ModelMetadata]] = {}
        for model in [name] if name is not None else self.manager.model_names():
            versions = out.setdefault(model, [])
            try:
                statuses = self.manager.model_status(model).model_version_status
            except SigserveError:
                continue
            for status in statuses:
                if status.state != available:
                    continue
                try:
                    with self.manager.handle(model, int(status.version)) as servable:
                        versions.append(ModelMetadata(model, servable.version, servable.signatures))
                except SigserveError:
                    continue
        return out

    # -- ModelService ----------------------------------------------------------------------------

    def model_status(
        self, ctx: CallContext, name: str, version: int | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """Every version ever seen of `name` (a version narrows it; a label does not, as in TF
        Serving's get_model_status_impl.cc)."""
        ctx.model_name = name
        return self.manager.model_status(name, version)

    def reload_config(self, ctx: CallContext, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Serve exactly the models of `config` (HandleReloadConfigRequest, for gRPC and REST alike):
        availability-preserving, returns once the new models are AVAILABLE and the dropped ones out of
        service. Only a ModelConfigList is accepted; an observer that cannot apply the config (a bad
        logging_config) refuses it before any model changes."""
        try:
            if config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported"
                )
            for index, model in enumerate(config.model_config_list.config):
                logger.info(
                    "Config entry index: %d path: %s name: %s platform: %s",
                    index,
                    model.base_path,
                    model.name,
                    model.model_platform,
                )
            observer = self.observer
            if observer is not None:
                observer.check(config)
            self.manager.reload_config(config)
            if observer is not None:
                observer.configure(config)
        except SigserveError as e:
            logger.error("ReloadConfig failed: %s", e.message)
            raise

    def current_config(self) -> model_server_config_pb2.ModelServerConfig:
        """The ModelServerConfig now served (a copy)."""
        return self.manager.config

    # -- health ----------------------------------------------------------------------------------

    def readiness(self) -> Readiness:
        """Whether every configured model has an AVAILABLE version, and each model's best state."""
        detail: dict[str, str] = {}
        names = self.manager.model_names()
        for name in names:
            try:
                states = [s.state for s in self.manager.model_status(name).model_version_status]
            except SigserveError as e:
                detail[name] = f"NOT_FOUND: {e.message}"
                continue
            detail[name] = _best_state(states)
        ready = bool(self.manager.ready())
        return Readiness(ready and all(s == "AVAILABLE" for s in detail.values()), detail)

    def model_ready(self, spec: ModelSpec) -> bool:
        """Whether the version a ModelSpec names is loaded and serving now."""
        try:
            with self.manager.handle(spec.name, spec.version, spec.label):
                return True
        except SigserveError:
            return False


def _awaited_examples(servable: Servable, api: str) -> Callable[..., Awaitable[Any]]:
    return servable.classify_awaited if api == "classify" else servable.regress_awaited


def _requested(call: AnsweredCall, spec: ModelSpec) -> AnsweredCall:
    call.requested_version = spec.version
    call.requested_label = spec.label
    call.requested_signature = spec.signature_name
    return call


def model_spec_of(proto: model_pb2.ModelSpec) -> ModelSpec:
    """A ModelSpec proto (TF Serving's) → `ModelSpec`, with ServerCore's empty-name check."""
    if not proto.name:
        raise SigserveError(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
    choice = proto.WhichOneof("version_choice")
    if choice == "version":
        return ModelSpec(proto.name, int(proto.version.value), None, proto.signature_name)
    if choice == "version_label":
        return ModelSpec(proto.name, None, proto.version_label, proto.signature_name)
    return ModelSpec(proto.name, None, None, proto.signature_name)


def _best_state(states: Sequence[int]) -> str:
    enum = get_model_status_pb2.ModelVersionStatus.State
    if not states:
        return "START"
    if enum.Value("AVAILABLE") in states:
        return "AVAILABLE"
    return str(enum.Name(max(states, key=lambda s: (s != enum.Value("END"), s))))
