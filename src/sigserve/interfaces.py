"""The typed seams between sigserve's layers: what a Servable offers, what runs a TensorFlow step, what
the model manager answers. TensorFlow-free and importable from every layer, like `errors.py`.

These are `typing.Protocol`s, not base classes: `sigserve.runtime.Servable` satisfies `Servable`
structurally, and so do the small fakes the batching and manager tests use, without importing
TensorFlow. Code above the runtime (batching, manager, service, front ends) is written against these
names instead of `Any`, so mypy checks every call across a layer boundary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # the generated modules are cheap, but only the type checker needs them here
    from sigserve.protos import (
        classification_pb2,
        get_model_status_pb2,
        inference_pb2,
        input_pb2,
        meta_graph_pb2,
        model_server_config_pb2,
        regression_pb2,
    )


class Runner(Protocol):
    """Runs one TensorFlow step: feeds and fetches by TensorInfo *name*, outputs in fetch order.

    The runtime's session call is one; the batching layer's `BatchingRunner` wraps one and has the
    same shape, so everything above a runner is the same with or without batching."""

    def __call__(
        self, feeds: Mapping[str, Any], fetches: Sequence[str], timeout: float | None = None
    ) -> list[np.ndarray]: ...


@runtime_checkable
class AwaitableRunner(Runner, Protocol):
    """A runner whose step can also be awaited on an event loop (the batching runner): the caller
    holds a future, not a thread, while its rows wait for their batch."""

    def run_awaited(
        self, feeds: Mapping[str, Any], fetches: Sequence[str], timeout: float | None = None
    ) -> Awaitable[list[np.ndarray]]: ...


RunnerWrapper = Callable[[Runner], Runner]
"""Given a servable's own runner, the runner it should use instead (batching composes this way)."""


@runtime_checkable
class Servable(Protocol):
    """One loaded version of a model, running its signatures as TF Serving's predictor, classifier,
    regressor and multi-inference runner do (docs/architecture.md, `sigserve.runtime`)."""

    name: str
    version: int

    @property
    def signatures(self) -> Mapping[str, meta_graph_pb2.SignatureDef]: ...

    @property
    def runs_in_caller(self) -> bool:
        """True when a step runs in the calling thread as TensorFlow's own call (no batching queue in
        between): only then may a call on the event loop ask for `in_caller_thread`."""
        ...

    @property
    def awaits_batches(self) -> bool:
        """True when the runner batches and can be awaited (`AwaitableRunner`): then the `*_awaited`
        methods hold no thread while a call waits for its batch."""
        ...

    def get_signature(self, name: str | None, method: str) -> tuple[str, meta_graph_pb2.SignatureDef]: ...

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str | None = None,
        output_filter: Sequence[str] | None = None,
        timeout: float | None = None,
        *,
        in_caller_thread: bool = False,
    ) -> dict[str, np.ndarray]: ...

    def classify(
        self,
        input: input_pb2.Input | list[Any],
        signature_name: str | None = None,
        timeout: float | None = None,
    ) -> classification_pb2.ClassificationResult: ...

    def regress(
        self,
        input: input_pb2.Input | list[Any],
        signature_name: str | None = None,
        timeout: float | None = None,
    ) -> regression_pb2.RegressionResult: ...

    async def predict_awaited(
        self,
        inputs: Mapping[str, Any],
        signature_name: str | None = None,
        output_filter: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """`predict` on an event loop, the step awaited (only when `awaits_batches`)."""
        ...

    async def classify_awaited(
        self,
        input: input_pb2.Input | list[Any],
        signature_name: str | None = None,
        timeout: float | None = None,
    ) -> classification_pb2.ClassificationResult: ...

    async def regress_awaited(
        self,
        input: input_pb2.Input | list[Any],
        signature_name: str | None = None,
        timeout: float | None = None,
    ) -> regression_pb2.RegressionResult: ...

    def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest, timeout: float | None = None
    ) -> inference_pb2.MultiInferenceResponse: ...

    def close(self) -> None: ...


StateCallback = Callable[[str, int, Any, "Exception | None"], None]
"""`callback(model name, version, ServableState, error or None)` on every state transition."""


class ModelManager(Protocol):
    """What the service needs of the model manager (`sigserve.manager.ServerCore` is one)."""

    def handle(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> AbstractContextManager[Servable]:
        """The Servable a ModelSpec names, held loaded until the `with` block ends."""
        ...

    def model_status(
        self, name: str, version: int | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse: ...

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None: ...

    @property
    def config(self) -> model_server_config_pb2.ModelServerConfig:
        """The ModelServerConfig now served (a copy)."""
        ...

    def ready(self) -> bool: ...

    def model_names(self) -> list[str]: ...

    def subscribe(self, callback: StateCallback) -> None: ...
