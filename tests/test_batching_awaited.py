"""Awaited batching (`BatchingRunner.run_awaited`): an event loop's callers wait for their batch as
futures, with the same answers and TF Serving's errors as blocking callers, and a batch's futures are
completed on their loop in one step.

The inner runner is plain numpy (x → 3x + 1 row-wise, and a row-wise string label), so a batched answer
must equal the unbatched one exactly; a threading.Event holds the single batch thread busy where a
test needs requests to pile up behind it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigserve.batching import BatchScheduler, parse_batching_parameters
from sigserve.batching.scheduler import LOOP_WINDOW
from sigserve.errors import Code, SigserveError


class Inner:
    """The wrapped step: records each batch's row count; blocks while `hold` is clear."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.batch_rows: list[int] = []
        self.threads: list[int] = []  # the thread each batch ran in
        self.delay = 0.0  # seconds each step takes (the loop lane measures them)

    def __call__(
        self, feeds: Mapping[str, Any], fetches: Sequence[str], timeout: float | None = None
    ) -> list[np.ndarray]:
        x = np.asarray(feeds["x"])
        self.batch_rows.append(int(x.shape[0]))
        self.threads.append(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        self.entered.set()
        assert self.hold.wait(10)
        out = {"y": x * 3 + 1, "label": np.array([b"r%d" % int(v) for v in x[:, 0]], dtype=object)}
        return [out[f] for f in fetches]


def expected(x: np.ndarray, fetches: Sequence[str]) -> list[np.ndarray]:
    out = {"y": x * 3 + 1, "label": np.array([b"r%d" % int(v) for v in x[:, 0]], dtype=object)}
    return [out[f] for f in fetches]


def assert_equal(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.fixture
def make() -> Iterator[Any]:
    made: list[BatchScheduler] = []

    def build(text: str, **lane: float) -> tuple[Any, Inner]:
        sched = BatchScheduler(parse_batching_parameters(text), **lane)
        made.append(sched)
        inner = Inner()
        return sched.wrapper()(inner), inner

    yield build
    for sched in made:
        sched.stop()


# Every config's queue holds what a test sends at once (24 tasks of up to 8 rows: 192 rows); with
# TF Serving's default of 10 enqueued batches, 5-row batches hold 50 and the rest is, rightly,
# refused as UNAVAILABLE "queue ... is full" (a test of its own in test_batching_scheduler.py).
_QUEUE = " max_enqueued_batches { value: 100 }"
CONFIGS = [
    "max_batch_size { value: 16 } batch_timeout_micros { value: 1000 } num_batch_threads { value: 2 }"
    + _QUEUE,
    "max_batch_size { value: 8 } batch_timeout_micros { value: 0 } allowed_batch_sizes: [2, 4, 8]" + _QUEUE,
    "max_batch_size { value: 12 } enable_large_batch_splitting { value: true } "
    "max_execution_batch_size { value: 5 } allowed_batch_sizes: [2, 5] batch_timeout_micros { value: 500 }"
    + _QUEUE,
]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    config=st.sampled_from(CONFIGS),
    sizes=st.lists(st.integers(1, 8), min_size=1, max_size=24),
    with_labels=st.booleans(),
)
def test_awaited_answers_equal_unbatched(make: Any, config: str, sizes: list[int], with_labels: bool) -> None:
    runner, _ = make(config)
    fetches = ["y", "label"] if with_labels else ["y"]
    inputs = [np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * i for i, n in enumerate(sizes)]

    async def all_at_once() -> list[list[np.ndarray]]:
        return await asyncio.gather(*(runner.run_awaited({"x": x}, fetches) for x in inputs))

    answers = asyncio.run(all_at_once())
    for x, got in zip(inputs, answers, strict=True):
        for g, w in zip(got, expected(x, fetches), strict=True):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)


def test_blocking_and_awaiting_callers_share_batches(make: Any) -> None:
    runner, inner = make(
        "max_batch_size { value: 8 } batch_timeout_micros { value: 0 } num_batch_threads { value: 1 }"
    )
    inner.hold.clear()
    first = np.zeros((1, 2), np.float32)
    x = np.ones((1, 2), np.float32)

    async def main() -> list[list[np.ndarray]]:
        loop = asyncio.get_running_loop()
        busy = loop.run_in_executor(None, runner, {"x": first}, ["y"])  # holds the batch thread
        assert await loop.run_in_executor(None, inner.entered.wait, 5)
        blocking = [loop.run_in_executor(None, runner, {"x": x * i}, ["y"]) for i in range(3)]
        awaited = [asyncio.ensure_future(runner.run_awaited({"x": x * i}, ["y"])) for i in range(3, 7)]
        await asyncio.sleep(0.2)  # let the blocking callers reach the queue
        inner.hold.set()
        await busy
        return list(await asyncio.gather(*blocking, *awaited))

    answers = asyncio.run(main())
    for i, got in enumerate(answers):
        np.testing.assert_array_equal(got[0], x * i * 3 + 1)
    assert inner.batch_rows == [1, 7]  # everything that waited ran as one batch


def test_a_batch_completes_its_futures_in_one_wake_up(make: Any) -> None:
    runner, inner = make(
        "max_batch_size { value: 16 } batch_timeout_micros { value: 0 } num_batch_threads { value: 1 }"
    )
    inner.hold.clear()
    x = np.ones((1, 2), np.float32)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        posts = 0
        original = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal posts
            posts += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        first = asyncio.ensure_future(runner.run_awaited({"x": x}, ["y"]))
        assert await loop.run_in_executor(None, inner.entered.wait, 5)
        rest = [asyncio.ensure_future(runner.run_awaited({"x": x * i}, ["y"])) for i in range(2, 12)]
        await asyncio.sleep(0)  # all ten enqueued behind the running batch
        posts = 0
        inner.hold.set()
        await first
        await asyncio.gather(*rest)
        return posts

    # One post for the first batch, one for the ten calls that waited behind it.
    assert asyncio.run(main()) == 2
    assert inner.batch_rows == [1, 10]


def test_full_queue_is_unavailable_for_an_awaiting_caller(make: Any) -> None:
    runner, inner = make(
        "max_batch_size { value: 1 } max_enqueued_batches { value: 1 } num_batch_threads { value: 1 }"
    )
    inner.hold.clear()
    x = np.ones((1, 2), np.float32)

    async def main() -> SigserveError:
        loop = asyncio.get_running_loop()
        running = asyncio.ensure_future(runner.run_awaited({"x": x}, ["y"]))
        assert await loop.run_in_executor(None, inner.entered.wait, 5)
        queued = asyncio.ensure_future(runner.run_awaited({"x": x}, ["y"]))
        await asyncio.sleep(0)
        with pytest.raises(SigserveError) as e:
            await runner.run_awaited({"x": x}, ["y"])
        inner.hold.set()
        await asyncio.gather(running, queued)
        return e.value

    error = asyncio.run(main())
    assert error.code == Code.UNAVAILABLE
    assert error.message == (
        "The batch scheduling queue to which this task was submitted is full; currently 1 batches enqueued "
        "and max_enqueued_batches is 1"
    )


def test_timeout_or_cancellation_while_queued_withdraws_the_call(make: Any) -> None:
    runner, inner = make(
        "max_batch_size { value: 1 } num_batch_threads { value: 1 } max_enqueued_batches { value: 4 }"
    )
    inner.hold.clear()
    x = np.ones((1, 2), np.float32)

    async def main() -> SigserveError:
        loop = asyncio.get_running_loop()
        running = asyncio.ensure_future(runner.run_awaited({"x": x}, ["y"]))
        assert await loop.run_in_executor(None, inner.entered.wait, 5)
        with pytest.raises(SigserveError) as e:
            await runner.run_awaited({"x": x}, ["y"], timeout=0.05)
        gone = asyncio.ensure_future(runner.run_awaited({"x": x}, ["y"]))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        inner.hold.set()
        await running
        return e.value

    error = asyncio.run(main())
    assert error.code == Code.RESOURCE_EXHAUSTED
    assert error.message == "Run() timeout exceeded while waiting in batching queue"
    assert inner.batch_rows == [1]  # neither the timed-out nor the cancelled call ran


def test_rows_without_a_batch_dimension_are_refused_before_the_queue(make: Any) -> None:
    runner, inner = make("max_batch_size { value: 4 }")

    async def main() -> SigserveError:
        with pytest.raises(SigserveError) as e:
            await runner.run_awaited({"x": np.float32(1.0)}, ["y"])
        return e.value

    assert asyncio.run(main()).code == Code.INVALID_ARGUMENT
    assert inner.batch_rows == []


ZERO_TIMEOUT = "max_batch_size { value: 16 } batch_timeout_micros { value: 0 } num_batch_threads { value: 2 }"


def test_the_loop_lane_runs_short_steps_on_the_loop_as_one_batch(make: Any) -> None:
    """`batch_timeout_micros` 0 and steps known to be short: after a window of steps on the batch
    threads, batches run in the loop's own thread, and every call the loop has read by then joins
    one batch; the answers are the unbatched ones."""
    runner, inner = make(ZERO_TIMEOUT)

    async def main() -> tuple[int, list[list[np.ndarray]]]:
        for i in range(LOOP_WINDOW + 2):  # the history is per queue key: the same fetches as below
            x = np.array([[float(i)]])
            assert_equal(await runner.run_awaited({"x": x}, ["y", "label"]), expected(x, ["y", "label"]))
        inner.batch_rows.clear()
        inner.threads.clear()
        xs = [np.array([[float(i)], [float(i + 1)]]) for i in range(6)]
        answers = await asyncio.gather(*(runner.run_awaited({"x": x}, ["y", "label"]) for x in xs))
        for x, answer in zip(xs, answers, strict=True):
            assert_equal(answer, expected(x, ["y", "label"]))
        return threading.get_ident(), answers

    loop_thread, _ = asyncio.run(main())
    assert inner.batch_rows == [12]  # the six calls read in one loop iteration: one step
    assert inner.threads == [loop_thread]


def test_a_slow_step_sends_the_loop_lane_back_to_the_batch_threads(make: Any) -> None:
    runner, inner = make(ZERO_TIMEOUT, loop_stall_seconds=0.02)

    async def main() -> int:
        x = np.array([[1.0]])
        for _ in range(LOOP_WINDOW + 1):
            await runner.run_awaited({"x": x}, ["y"])
        assert inner.threads[-1] == threading.get_ident()  # on the loop now
        inner.delay = 0.05  # the model got slower: one step over the stall limit
        await runner.run_awaited({"x": x}, ["y"])
        inner.delay = 0.0
        inner.threads.clear()
        assert_equal(await runner.run_awaited({"x": x}, ["y"]), expected(x, ["y"]))
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert inner.threads and inner.threads[0] != loop_thread


@pytest.mark.parametrize(
    ("config", "lane"),
    [
        (ZERO_TIMEOUT.replace("value: 0 }", "value: 1000 }"), {}),  # the batch waits for company
        (ZERO_TIMEOUT, {"loop_step_seconds": 0.0}),  # the lane turned off
    ],
)
def test_the_loop_lane_needs_zero_timeout_and_may_be_turned_off(
    make: Any, config: str, lane: dict[str, float]
) -> None:
    runner, inner = make(config, **lane)

    async def main() -> int:
        for _ in range(3 * LOOP_WINDOW):
            await runner.run_awaited({"x": np.array([[1.0]])}, ["y"])
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(inner.threads) == 3 * LOOP_WINDOW and loop_thread not in inner.threads


def test_a_lone_call_on_an_idle_loop_is_padded_and_answered_like_a_batch(make: Any) -> None:
    """On an idle loop the lane runs a lone call at once, without a queue (`_run_solo`): padded to
    the allowed batch size with its first row, as TF Serving pads, and cut back to its own rows."""
    runner, inner = make(
        "max_batch_size { value: 8 } batch_timeout_micros { value: 0 } allowed_batch_sizes: [4, 8] "
        "num_batch_threads { value: 1 }"
    )

    async def main() -> int:
        x = np.array([[5.0]])
        for _ in range(LOOP_WINDOW + 1):
            await runner.run_awaited({"x": x}, ["label", "y"])
        inner.batch_rows.clear()
        inner.threads.clear()
        x = np.array([[7.0], [8.0]])
        assert_equal(await runner.run_awaited({"x": x}, ["label", "y"]), expected(x, ["label", "y"]))
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert inner.batch_rows == [4] and inner.threads == [loop_thread]


def test_a_loop_that_stops_before_its_drain_strands_nothing(make: Any) -> None:
    """A loop that stops with a loop-lane drain scheduled and not run: later callers of the key from
    other threads still get a batch thread (which also answers the stranded call's rows)."""
    runner, _ = make(ZERO_TIMEOUT)
    x = np.array([[1.0]])
    tasks: list[asyncio.Task[Any]] = []

    async def warm() -> None:
        for _ in range(LOOP_WINDOW + 2):
            await runner.run_awaited({"x": x}, ["y"])

    async def last() -> None:
        loop = asyncio.get_running_loop()
        # the loop is busy with this task: the call's drain is scheduled, not run at once
        tasks.append(loop.create_task(runner.run_awaited({"x": x}, ["y"])))
        loop.call_soon(loop.stop)
        await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(warm())
        tasks.append(loop.create_task(last()))
        loop.run_forever()
    finally:
        loop.close()
    started = time.monotonic()
    assert_equal(runner({"x": x}, ["y"], timeout=5.0), expected(x, ["y"]))
    assert time.monotonic() - started < 1.0
