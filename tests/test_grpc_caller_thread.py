"""The gRPC Predict's short path (`sigserve.service.inline`, `PredictionServices.predict_inline`): a
small request on a route whose steps take microseconds runs on the event loop, its step in that
thread without a TensorFlow deadline; its answers equal the pool's, a tight deadline keeps
TensorFlow's deadline, and a step that turns slow is answered DEADLINE_EXCEEDED and sends the route
back to the pool.

Driven in-process with a real ServerCore over a model exported here, calling the RPC bodies with
serialized requests as the gRPC front end does (`_Frontend._call`: inline first, else the pool).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from sigserve.errors import Code, SigserveError
from sigserve.service.inline import WINDOW

pytest.importorskip("sigserve.runtime")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sigserve.server import serve
    from sigserve.server.grpc_handlers import PredictionServices
    from sigserve.server.options import ServerOptions
    from sigserve.service import Metrics, PredictionService
    from tests.test_runtime_errors import _export_odd

    base = tmp_path_factory.mktemp("odd")
    _export_odd(base / "1")
    options = ServerOptions(model_name="odd", model_base_path=str(base))
    core = serve.make_core(options, serve.build_model_config(options), serve.make_loader(options, None))
    core.start(True)
    yield _Bodies(PredictionServices(PredictionService(core, Metrics())))
    core.stop()


class _Bodies:
    """The Predict bodies called as a transport calls them: with a fresh call context each."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.steps = services.service.inline

    def predict_inline(self, data: bytes, timeout: float | None) -> bytes | None:
        return self.services.predict_inline(data, _ctx(timeout))  # type: ignore[no-any-return]

    def predict(self, data: bytes, timeout: float | None) -> bytes:
        return self.services.predict(data, _ctx(timeout))  # type: ignore[no-any-return]


def _ctx(timeout: float | None) -> Any:
    from sigserve.service import CallContext

    return CallContext("GRPC", "Predict", timeout)


def _request(signature: str, **inputs: np.ndarray) -> bytes:
    from sigserve.codec.tensor import from_ndarray
    from sigserve.protos import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "odd"
    request.model_spec.signature_name = signature
    for alias, array in inputs.items():
        request.inputs[alias].CopyFrom(from_ndarray(array))
    return request.SerializeToString()


def _call(services: Any, data: bytes, timeout: float | None) -> tuple[bytes, bool]:
    """What the front end does: the short path when it accepts, else the pool's body."""
    result = services.predict_inline(data, timeout)
    if result is not None:
        return result, True
    return services.predict(data, timeout), False


def _promote(services: Any, data: bytes) -> None:
    """Enough calls for the route to reach the short path: one window whose fastest pool call is
    under 150 µs. A one-step while loop is near that bound on a busy 2-core machine, so allow up to
    20 windows, stopping once a call was answered on the short path."""
    for _ in range(20 * WINDOW):
        if _call(services, data, 30.0)[1]:
            return


def test_short_path_answers_equal_pool_answers(services: Any) -> None:
    route = ("odd", None, None, "with_default")
    data = _request("with_default", a=np.array([1.0, 2.0], np.float32))
    answers: dict[bool, set[bytes]] = {True: set(), False: set()}
    inline_calls = 0
    for i in range(20 * WINDOW):  # until a window of answers came from the short path
        out, inline = _call(services, data, (None, 30.0)[i % 2])
        answers[inline].add(out)
        inline_calls += inline
        if inline_calls >= WINDOW:
            break
    assert services.steps.likely(route), "a 2-op route never took the short path"
    assert len(answers[True]) == 1 and answers[True] == answers[False]


def test_a_large_request_or_a_tight_deadline_goes_to_the_pool(services: Any) -> None:
    """Below `min_timeout` even a fast route declines the short path, so TensorFlow's deadline
    cancels a runaway step; a request over `max_body` is never parsed on the loop."""
    _promote(services, _request("slow", steps=np.array(1, np.int64)))
    assert services.steps.likely(("odd", None, None, "slow"))
    spin = _request("slow", steps=np.array(10**12, np.int64))
    assert services.predict_inline(spin, 0.005) is None
    started = time.monotonic()
    with pytest.raises(SigserveError) as info:
        services.predict(spin, 0.005)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10
    big = _request("with_default", a=np.zeros(4096, np.float32))
    assert services.predict_inline(big, 30.0) is None


def test_a_fast_route_turned_slow_is_answered_late_then_goes_back(services: Any) -> None:
    route = ("odd", None, None, "slow")
    _promote(services, _request("slow", steps=np.array(1, np.int64)))
    assert services.steps.likely(route)
    # Tens of ms of while-loop steps with a 20 ms deadline: on the short path the step runs to the end
    # and is then answered DEADLINE_EXCEEDED; one call over the stall limit leaves the short path.
    steps = np.array(300_000, np.int64)
    with pytest.raises(SigserveError) as info:
        services.predict_inline(_request("slow", steps=steps), 0.02)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert not services.steps.likely(route)
    assert services.predict_inline(_request("slow", steps=steps), 60.0) is None
    # In the pool, with TensorFlow's deadline, a generous deadline lets the same step finish.
    out = services.predict(_request("slow", steps=steps), 60.0)
    from sigserve.protos import predict_pb2

    assert predict_pb2.PredictResponse.FromString(out).outputs["count"].int64_val == [300_000]
