"""`Servable`: one loaded version of a SavedModel, running its signatures the way TF Serving's
predictor, classifier, regressor and multi-inference runner do (docs/architecture.md,
`sigserve.runtime`).

Every API method reaches TensorFlow through `self.runner(feeds, fetches, timeout)`: the session's own
call, or what a `runner_wrapper` made of it when the servable was built (the batching layer gives a
batching runner that way), and nothing else changes.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sigserve.codec.example import as_input
from sigserve.errors import Code, SigserveError
from sigserve.interfaces import AwaitableRunner, Runner, RunnerWrapper
from sigserve.protos import classification_pb2, inference_pb2, input_pb2, meta_graph_pb2, regression_pb2
from sigserve.runtime import inference, multi_inference, signatures
from sigserve.runtime.predict import PredictPlan
from sigserve.runtime.session import Session, legacy_export_hint, load_session
from sigserve.saved_model import signature_constants as sc

DEFAULT_TAGS = ("serve",)


class Servable:
    """A SavedModel MetaGraph in a TensorFlow session, plus its signatures.

    `meta_graph` is the loaded MetaGraphDef as a sigserve proto, without its `graph_def` (the graph
    lives in the session; keeping a second copy would double a large model's memory).
    """

    def __init__(
        self,
        session: Session,
        meta_graph: meta_graph_pb2.MetaGraphDef,
        *,
        export_dir: str,
        name: str = "",
        version: int = 0,
        method_name_check: bool = False,
        runner_wrapper: RunnerWrapper | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.export_dir = export_dir
        self.meta_graph = meta_graph
        self.method_name_check = method_name_check
        self.signatures: Mapping[str, meta_graph_pb2.SignatureDef] = types.MappingProxyType(
            dict(meta_graph.signature_def.items())
        )
        self._session = session
        # Given once, here: the runner never changes after construction, so a call can tell from
        # `runs_in_caller` alone whether its step runs in its own thread.
        self._runs_in_caller = runner_wrapper is None
        self.runner: Runner = session.run if runner_wrapper is None else runner_wrapper(session.run)
        self._awaitable: AwaitableRunner | None = (
            self.runner if isinstance(self.runner, AwaitableRunner) else None
        )
        self._predict_plans = {key: PredictPlan(sig) for key, sig in self.signatures.items()}
        # Structural plans are built on first use: a bad classify signature must only fail classify.
        self._classify_plans: dict[str, signatures.ClassifyPlan] = {}
        self._regress_plans: dict[str, signatures.RegressPlan] = {}

    def __repr__(self) -> str:
        return f"Servable(name={self.name!r}, version={self.version}, export_dir={self.export_dir!r})"

    # -- contract --------------------------------------------------------------------------------

    @property
    def runs_in_caller(self) -> bool:
        """True when `runner` is the session's own call: a step runs in the calling thread, with no
        batching queue in between (only then does `predict(..., in_caller_thread=True)` apply)."""
        return self._runs_in_caller

    @property
    def awaits_batches(self) -> bool:
        """True when `runner` batches and can be awaited (`predict_awaited` and friends)."""
        return self._awaitable is not None

    def get_signature(self, name: str | None, method: str) -> tuple[str, meta_graph_pb2.SignatureDef]:
        """Resolve `name` (or `serving_default`) for `method` ("predict" | "classify" | "regress"),
        with that API's not-found and method-name errors."""
        return signatures.resolve(self.signatures, name, method, self.method_name_check)

    def run(
        self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str], timeout: float | None = None
    ) -> list[np.ndarray]:
        """Feed and fetch by TensorInfo name (through `runner`, so batching applies)."""
        return self.runner(feeds, fetches, timeout)

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str | None = None,
        output_filter: Sequence[str] | None = None,
        timeout: float | None = None,
        *,
        in_caller_thread: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run a signature on tensors keyed by input alias; outputs keyed by output alias.

        `in_caller_thread`: a hint for small graphs that TensorFlow may run the step's ops in this
        thread (`Session.run`). It applies only without a `timeout` and without batching (a batching
        runner runs the batch in its own thread, so the hint has nothing to say there)."""
        feeds, names, aliases = self._predict_step(inputs, signature_name, output_filter)
        if in_caller_thread and timeout is None and self._runs_in_caller:
            outputs = self._session.run(feeds, names, None, in_caller_thread=True)
        else:
            outputs = self.runner(feeds, names, timeout)
        return dict(zip(aliases, outputs, strict=True))

    async def predict_awaited(
        self,
        inputs: Mapping[str, Any],
        signature_name: str | None = None,
        output_filter: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """`predict` from an event loop: the step is awaited, so no thread waits for its batch."""
        feeds, names, aliases = self._predict_step(inputs, signature_name, output_filter)
        outputs = await self._awaited_runner().run_awaited(feeds, names, timeout)
        return dict(zip(aliases, outputs, strict=True))

    def _predict_step(
        self, inputs: Mapping[str, Any], signature_name: str | None, output_filter: Sequence[str] | None
    ) -> tuple[dict[str, np.ndarray], Sequence[str], Sequence[str]]:
        """(feeds by tensor name, fetch names, their output aliases)."""
        plan = self._predict_plans.get(signature_name or sc.DEFAULT_SERVING_SIGNATURE_DEF_KEY)
        if plan is None or self.method_name_check:
            key, _ = self.get_signature(signature_name, signatures.PREDICT)
            plan = self._predict_plans[key]
        feeds = plan.feeds(inputs)
        aliases, names = plan.fetches(output_filter)
        return feeds, names, aliases

    def classify(
        self,
        input: input_pb2.Input | list[Any],
        signature_name: str | None = None,
        timeout: float | None = None,
    ) -> classification_pb2.ClassificationResult:
        plan, examples = self._examples_step(input, signature_name, signatures.CLASSIFY)
        outputs = self.runner({plan.input_name: examples}, plan.output_names, timeout)
        return inference.classification_result(plan, int(examples.shape[0]), plan.output_names, outputs)

    def regress(
        self,
        input: input_pb2.Input | list[Any],
        signature_name: str | None = None,
        timeout: float | None = None,
    ) -> regression_pb2.RegressionResult:
        plan, examples = self._examples_step(input, signature_name, signatures.REGRESS)
        outputs = self.runner({plan.input_name: examples}, plan.output_names, timeout)
        return inference.regression_result(plan, int(examples.shape[0]), plan.output_names, outputs)

    async def classify_awaited(
        self,
        input: input_pb2.Input | list[Any],
        signature_name: str | None = None,
        timeout: float | None = None,
    ) -> classification_pb2.ClassificationResult:
        """`classify` from an event loop, the step awaited."""
        plan, examples = self._examples_step(input, signature_name, signatures.CLASSIFY)
        runner = self._awaited_runner()
        outputs = await runner.run_awaited({plan.input_name: examples}, plan.output_names, timeout)
        return inference.classification_result(plan, int(examples.shape[0]), plan.output_names, outputs)

    async def regress_awaited(
        self,
        input: input_pb2.Input | list[Any],
        signature_name: str | None = None,
        timeout: float | None = None,
    ) -> regression_pb2.RegressionResult:
        """`regress` from an event loop, the step awaited."""
        plan, examples = self._examples_step(input, signature_name, signatures.REGRESS)
        runner = self._awaited_runner()
        outputs = await runner.run_awaited({plan.input_name: examples}, plan.output_names, timeout)
        return inference.regression_result(plan, int(examples.shape[0]), plan.output_names, outputs)

    def _examples_step(
        self, input: input_pb2.Input | list[Any], signature_name: str | None, method: str
    ) -> tuple[Any, np.ndarray]:
        """Classify / Regress before TensorFlow: (the signature's plan, the serialized examples)."""
        key, signature = self.get_signature(signature_name, method)
        cache: dict[str, Any] = self._classify_plans if method == signatures.CLASSIFY else self._regress_plans
        plan = cache.get(key)
        if plan is None:
            if method == signatures.CLASSIFY:
                plan = signatures.classify_plan(signature, self.method_name_check)
            else:
                plan = signatures.regress_plan(signature, self.method_name_check)
            cache[key] = plan
        return plan, inference.examples_tensor(as_input(input))

    def _awaited_runner(self) -> AwaitableRunner:
        runner = self._awaitable
        if runner is None:
            raise SigserveError(Code.FAILED_PRECONDITION, "This servable's runner cannot be awaited")
        return runner

    def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest, timeout: float | None = None
    ) -> inference_pb2.MultiInferenceResponse:
        return multi_inference.run(
            request,
            self.signatures,
            self.runner,
            method_name_check=self.method_name_check,
            version=self.version,
            timeout=timeout,
        )

    def close(self) -> None:
        """Release the TensorFlow session; later calls fail with UNAVAILABLE."""
        self._session.close()

    def __enter__(self) -> Servable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_export_dir(export_dir: str) -> None:
    from sigserve.saved_model import loader

    try:
        loader.find_saved_model_file(export_dir)
    except SigserveError as e:
        raise SigserveError(e.code, e.message + legacy_export_hint(export_dir)) from None


def load(
    export_dir: str | os.PathLike[str],
    tags: Iterable[str] | str | None = DEFAULT_TAGS,
    *,
    intra_op_parallelism: int = 0,
    inter_op_parallelism: int = 0,
    method_name_check: bool = False,
    name: str = "",
    version: int = 0,
    runner_wrapper: RunnerWrapper | None = None,
) -> Servable:
    """Load the MetaGraph tagged `tags` (default `serve`) of the SavedModel at `export_dir` (TF1 or
    TF2 format) into its own TensorFlow session. A failed load raises `SigserveError`.
    `runner_wrapper`, if given, turns the session's runner into the one the servable uses (batching).

    `sigserve.load("/models/half_plus_two/00000123").predict({"x": [[1.0]]})` → `{"y": [[2.5]]}`.
    """
    export_dir = os.fspath(export_dir)
    if tags is None:
        tag_list = list(DEFAULT_TAGS)
    elif isinstance(tags, str):
        tag_list = [t for t in tags.split(",") if t]
    else:
        tag_list = list(tags)
    _check_export_dir(export_dir)
    session, serialized = load_session(export_dir, tag_list, intra_op_parallelism, inter_op_parallelism)
    try:
        meta_graph = meta_graph_pb2.MetaGraphDef()
        meta_graph.ParseFromString(serialized)
        meta_graph.ClearField("graph_def")
    except Exception as e:
        session.close()
        raise SigserveError(Code.DATA_LOSS, f"Cannot read the MetaGraphDef of {export_dir}: {e}") from None
    return Servable(
        session,
        meta_graph,
        export_dir=export_dir,
        name=name,
        version=version,
        method_name_check=method_name_check,
        runner_wrapper=runner_wrapper,
    )
