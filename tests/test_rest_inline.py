"""Small predicts on the event loop (`sigserve.service.inline`): which routes qualify, and that a
request answered on the loop is answered exactly as one answered in the pool.

The policy is driven with real Servables (TF Serving's half_plus_two) and a real batching runner;
the end-to-end part drives the real ASGI app with a real ServerCore, far past the history window, so
that most answers come from the loop.
"""

from __future__ import annotations

import asyncio
import gc
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from sigserve.service.inline import WINDOW, InlinePolicy, Route

ROUTE: Route = ("half_plus_two", None, None, "")
FAST = 20e-6
SLOW = 5e-3


@pytest.fixture(scope="module")
def model_dir(fixtures_dir: pathlib.Path) -> pathlib.Path:
    return fixtures_dir / "saved_model_half_plus_two_cpu" / "00000123"


@pytest.fixture(scope="module")
def servable(model_dir: pathlib.Path) -> Iterator[Any]:
    from sigserve import runtime

    s = runtime.load(str(model_dir), ("serve",), name="half_plus_two", version=123)
    yield s
    s.close()


def feed(policy: InlinePolicy, servable: Any, seconds: float, inline: bool, n: int = WINDOW) -> None:
    for _ in range(n):
        policy.record(ROUTE, servable, seconds, inline)


def test_a_route_starts_in_the_pool_and_moves_to_the_loop_after_one_fast_window(servable: Any) -> None:
    policy = InlinePolicy()
    assert not policy.likely(ROUTE)
    feed(policy, servable, FAST, inline=False, n=WINDOW - 1)
    assert not policy.allows(ROUTE, servable), "decided before a full window"
    policy.record(ROUTE, servable, FAST, False)
    assert policy.likely(ROUTE) and policy.allows(ROUTE, servable)
    assert not policy.likely(("half_plus_two", 123, None, ""))  # routes are separate


def test_the_fastest_pool_call_decides(servable: Any) -> None:
    """Pool timings include waiting for the GIL: one fast call in the window is enough."""
    policy = InlinePolicy()
    feed(policy, servable, SLOW, inline=False, n=WINDOW - 1)
    policy.record(ROUTE, servable, FAST, False)
    assert policy.allows(ROUTE, servable)

    slow = InlinePolicy()
    feed(slow, servable, 2 * slow.max_runtime, inline=False, n=3 * WINDOW)
    assert not slow.likely(ROUTE)


def test_a_slow_median_on_the_loop_sends_the_route_back(servable: Any) -> None:
    policy = InlinePolicy()
    feed(policy, servable, FAST, inline=False)
    # A few preempted calls do not move it (median) ...
    feed(policy, servable, 3e-3, inline=True, n=WINDOW // 2 - 1)
    feed(policy, servable, FAST, inline=True, n=WINDOW // 2 + 1)
    assert policy.allows(ROUTE, servable)
    # ... a model that got slower does.
    feed(policy, servable, 3 * policy.max_runtime, inline=True)
    assert not policy.likely(ROUTE)


def test_one_call_over_the_stall_limit_sends_the_route_back_at_once(servable: Any) -> None:
    policy = InlinePolicy()
    feed(policy, servable, FAST, inline=False)
    policy.record(ROUTE, servable, policy.stall_limit * 2, True)
    assert not policy.likely(ROUTE)
    # Pool calls still in flight when it moved are not counted for the loop, and vice versa.
    feed(policy, servable, FAST, inline=True, n=3 * WINDOW)
    assert not policy.likely(ROUTE)


def test_a_new_servable_on_the_same_route_starts_over(servable: Any, model_dir: pathlib.Path) -> None:
    from sigserve import runtime

    policy = InlinePolicy()
    feed(policy, servable, FAST, inline=False)
    other = runtime.load(str(model_dir), ("serve",), name="half_plus_two", version=124)
    try:
        assert not policy.allows(ROUTE, other), "a new version must earn its own history"
        policy.record(ROUTE, other, FAST, False)
        assert not policy.likely(ROUTE)
        assert not policy.allows(ROUTE, servable)
    finally:
        other.close()


def test_a_batching_runner_never_runs_on_the_loop(model_dir: pathlib.Path) -> None:
    from sigserve import batching, runtime

    scheduler = batching.BatchScheduler(batching.parse_batching_parameters(""))
    plain = runtime.load(str(model_dir), ("serve",), name="half_plus_two", version=123)
    s = runtime.load(
        str(model_dir), ("serve",), name="half_plus_two", version=123, runner_wrapper=scheduler.wrapper()
    )
    try:
        assert plain.runs_in_caller
        assert not s.runs_in_caller
        policy = InlinePolicy()
        feed(policy, s, FAST, inline=False, n=4 * WINDOW)
        assert not policy.likely(ROUTE)
    finally:
        scheduler.stop()
        s.close()
        plain.close()


def test_tight_timeouts_and_the_switch_keep_everything_in_the_pool() -> None:
    policy = InlinePolicy()
    assert policy.allows_timeout(None) and policy.allows_timeout(30.0)
    assert not policy.allows_timeout(0.001)
    assert not InlinePolicy(enabled=False).allows_timeout(None)


# -- the ASGI app, loop and pool answers side by side ---------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


async def _call(app: Any, path: str, body: bytes) -> tuple[int, bytes]:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    send = _Recorder()
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    await app(scope, receive, send)
    start, end = send.messages
    return int(start["status"]), bytes(end["body"])


CASES = [
    ("/v1/models/half_plus_two:predict", b'{"instances": [1.0, 2.0, 5.0]}'),
    ("/v1/models/half_plus_two:predict", b'{"inputs": {"x": [[1.0], [3.0]]}}'),
    ("/v1/models/half_plus_two/versions/123:predict", b'{"instances": [[4.0]]}'),
    ("/v1/models/half_plus_two:predict", b'{"signature_name": "nope", "instances": [1.0]}'),
    ("/v1/models/half_plus_two:predict", b'{"instances": ["a"]}'),
    ("/v1/models/half_plus_two:predict", b'{"instances": [1.0'),
    ("/v1/models/missing:predict", b'{"instances": [1.0]}'),
    ("/v1/models/half_plus_two/versions/999:predict", b'{"instances": [1.0]}'),
]


@pytest.fixture(scope="module")
def app(fixtures_dir: pathlib.Path) -> Iterator[Any]:
    from sigserve.server import serve
    from sigserve.server.options import ServerOptions
    from sigserve.server.rest import create_app
    from sigserve.service import Metrics, PredictionService

    options = ServerOptions(
        model_name="half_plus_two",
        model_base_path=str(fixtures_dir / "saved_model_half_plus_two_cpu"),
        rest_api_num_threads=2,
    )
    core = serve.make_core(options, serve.build_model_config(options), serve.make_loader(options, None))
    core.start(True)
    rest_app = create_app(PredictionService(core, Metrics()), options)
    yield rest_app
    rest_app.close()
    core.stop()


def test_answers_on_the_loop_equal_answers_from_the_pool(app: Any) -> None:
    """Every case, many times over: the first answers come from the pool, the later ones from the
    loop (the route qualifies once half_plus_two's history is in); all must be byte-identical."""

    async def run() -> dict[int, set[tuple[int, bytes]]]:
        seen: dict[int, set[tuple[int, bytes]]] = {i: set() for i in range(len(CASES))}
        for _ in range(4 * WINDOW):
            for i, (path, body) in enumerate(CASES):
                seen[i].add(await _call(app, path, body))
        return seen

    seen = asyncio.run(run())
    assert app.service.inline.likely(("half_plus_two", None, None, "serving_default")), (
        "half_plus_two never reached the loop"
    )
    answers = {i: next(iter(s)) for i, s in seen.items() if len(s) == 1}
    assert answers.keys() == seen.keys(), {i: s for i, s in seen.items() if len(s) != 1}
    assert answers[0][0] == 200 and json.loads(answers[0][1]) == {"predictions": [2.5, 3.0, 4.5]}
    assert answers[1][0] == 200 and json.loads(answers[1][1]) == {"outputs": [[2.5], [3.5]]}
    assert answers[2][0] == 200 and json.loads(answers[2][1]) == {"predictions": [[4.0]]}
    assert answers[3][0] == 400 and "nope" in json.loads(answers[3][1])["error"]
    assert answers[4][0] == 400 and answers[5][0] == 400
    assert answers[6][0] == 404 and answers[7][0] == 404


def test_gc_freezer_freezes_and_refreezes() -> None:
    from sigserve.server.gcfreeze import GcFreezer, refreeze

    try:
        refreeze()
        assert gc.get_freeze_count() > 0

        class Core:
            def subscribe(self, callback: Any) -> None:
                self.callback = callback

        async def run() -> int:
            loop = asyncio.get_running_loop()
            freezer = GcFreezer(loop, delay=0.01)
            core = Core()
            freezer.watch(core)
            gc.unfreeze()
            core.callback("m", 1, 30, None)  # AVAILABLE
            await asyncio.sleep(0.2)
            frozen = gc.get_freeze_count()
            freezer.close()
            return frozen

        assert asyncio.run(run()) > 0
    finally:
        gc.unfreeze()
