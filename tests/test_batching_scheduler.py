"""The batch scheduler on a plain-numpy runner: fast, deterministic where it matters, and exact.

The runner stands in for a TensorFlow session: row-wise functions of its feeds, so a batched answer
must equal the unbatched one bit for bit. It records every batch it runs, so the tests can see what
the scheduler merged, padded and split.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sigserve.batching import BatchingRunner, BatchScheduler, parse_batching_parameters
from sigserve.batching.metrics import (
    INPUT_BATCH_SIZE,
    PADDING_SIZE,
    PROCESSED_BATCH_SIZE,
    QUEUING_LATENCY,
    WRAPPED_RUN_COUNT,
)
from sigserve.errors import Code, SigserveError

W = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]], dtype=np.float32)


def model(feeds: Mapping[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
    """Row-wise outputs: `y` = x @ W (x: [n, 2]); `first` = x[:, 0]; `label_bytes` from int ids;
    `total` = x.sum(1) + ids (needs both inputs)."""
    out = []
    for name in fetches:
        x = feeds.get("x")
        ids = feeds.get("ids")
        if name == "y":
            assert x is not None
            out.append(x @ W)
        elif name == "first":
            assert x is not None
            out.append(x[:, 0] * 2)
        elif name == "total":
            assert x is not None and ids is not None
            out.append(x.sum(axis=1) + ids.astype(np.float32))
        elif name == "label_bytes":
            assert ids is not None
            out.append(np.array([b"v%d" % i for i in ids], dtype=object))
        elif name == "scalar":
            out.append(np.float32(1.0))
        elif name == "short":
            assert x is not None
            out.append(x[:1])
        else:
            raise SigserveError(Code.INVALID_ARGUMENT, f"unknown fetch {name}")
    return out


class FakeServable:
    """A servable as the scheduler sees it: its own step (`run`) and the `runner` it was built with
    (`batch_with` builds it with a scheduler's wrapper, as `runtime.load(runner_wrapper=...)` does)."""

    def __init__(self, fn: Callable[..., list[np.ndarray]] = model, delay: float = 0.0) -> None:
        self.fn = fn
        self.delay = delay
        self.batches: list[dict[str, np.ndarray]] = []
        self.timeouts: list[float | None] = []
        self.lock = threading.Lock()
        self.runner: Any = self.run

    def run(
        self, feeds: Mapping[str, Any], fetches: Sequence[str], timeout: float | None = None
    ) -> list[np.ndarray]:
        with self.lock:
            self.batches.append({k: np.array(v, copy=True) for k, v in feeds.items()})
            self.timeouts.append(timeout)
        if self.delay:
            time.sleep(self.delay)
        return self.fn({k: np.asarray(v) for k, v in feeds.items()}, list(fetches))

    def batch_with(self, sched: BatchScheduler, params: Any = None) -> None:
        self.runner = sched.wrapper(params)(self.run)


def scheduler(text: str, registry: CollectorRegistry | None = None) -> BatchScheduler:
    return BatchScheduler(parse_batching_parameters(text), registry=registry)


@pytest.fixture
def stop_later() -> Any:
    started: list[BatchScheduler] = []
    yield started.append
    for s in started:
        s.stop()


def request(rows: int, seed: int, width: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((rows, width)).astype(np.float32),
        "ids": rng.integers(-1000, 1000, size=rows, dtype=np.int64),
    }


def run_concurrently(fn: Callable[[int], Any], n: int, workers: int = 32) -> list[Any]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, range(n)))


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


# -- results with batching equal results without ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "max_batch_size { value: 16 } batch_timeout_micros { value: 2000 } num_batch_threads { value: 2 }",
        "max_batch_size { value: 16 } batch_timeout_micros { value: 1000 } allowed_batch_sizes: [4, 8, 16]",
        "max_batch_size { value: 16 } batch_timeout_micros { value: 1000 } pad_variable_length_inputs: true",
        "max_batch_size { value: 12 } enable_large_batch_splitting { value: true } "
        "max_execution_batch_size { value: 5 } allowed_batch_sizes: [2, 5] "
        "batch_timeout_micros { value: 500 }",
        "",  # TF Serving's defaults: timeout 0, max 1000
    ],
    ids=["plain", "allowed-sizes", "padding-on", "splitting", "defaults"],
)
def test_mixed_concurrent_requests_equal_unbatched(text: str, stop_later: Any) -> None:
    sched = scheduler(text)
    stop_later(sched)
    servable = FakeServable(delay=0.002)
    servable.batch_with(sched)
    assert isinstance(servable.runner, BatchingRunner)
    fetch_sets = [["y"], ["total", "label_bytes"], ["label_bytes", "y", "total"], ["first"]]

    def one(i: int) -> None:
        feeds = request(rows=1 + i % 7, seed=i)
        fetches = fetch_sets[i % len(fetch_sets)]
        if fetches == ["y"] or fetches == ["first"]:
            feeds = {"x": feeds["x"]}
        got = servable.runner(feeds, fetches)
        want = model(feeds, fetches)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)

    run_concurrently(one, 120)
    # It batched: fewer runs than requests, and no batch over the execution limit.
    assert len(servable.batches) < 120
    limit = sched.config.max_execution_batch_size
    assert max(len(next(iter(b.values()))) for b in servable.batches) <= limit


def test_padding_on_batches_different_lengths_together(stop_later: Any) -> None:
    """x rows of width 1, 2 and 3 share one batch; padding uses each tensor's first element."""
    sched = scheduler(
        "max_batch_size { value: 6 } batch_timeout_micros { value: 10000000 } "
        "pad_variable_length_inputs: true"
    )
    stop_later(sched)
    servable = FakeServable()
    servable.batch_with(sched)
    inputs = [
        np.array([[7.0]], dtype=np.float32),
        np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32),
        np.array([[5.0, 6.0, 8.0], [9.0, 10.0, 11.0], [12.0, 13.0, 14.0]], dtype=np.float32),
    ]
    results = run_concurrently(lambda i: servable.runner({"x": inputs[i]}, ["first"]), 3)
    assert len(servable.batches) == 1  # 1 + 2 + 3 rows fill max_batch_size 6: one batch
    merged = servable.batches[0]["x"]
    assert merged.shape == (6, 3)
    rows = {tuple(r) for r in merged.tolist()}
    assert (7.0, 7.0, 7.0) in rows  # [[7]] padded with its first element
    assert (1.0, 2.0, 1.0) in rows and (3.0, 4.0, 1.0) in rows
    for x, got in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(got[0], x[:, 0] * 2)


def test_padding_on_pads_strings_with_their_first_element(stop_later: Any) -> None:
    sched = scheduler(
        "max_batch_size { value: 2 } batch_timeout_micros { value: 10000000 } "
        "pad_variable_length_inputs: true"
    )
    stop_later(sched)

    def echo(feeds: Mapping[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
        return [feeds["s"]]

    servable = FakeServable(echo)
    servable.batch_with(sched)
    a = np.array([[b"a", b"b", b"c"]], dtype=object)
    b = np.array([[b"z"]], dtype=object)
    results = run_concurrently(lambda i: servable.runner({"s": [a, b][i]}, ["out"]), 2)
    assert results[0][0].tolist() == [[b"a", b"b", b"c"]]
    assert results[1][0].tolist() == [[b"z", b"z", b"z"]]  # TF Serving returns the padded rows


def test_padding_off_never_mixes_shapes(stop_later: Any) -> None:
    """TF Serving would fail such a batch (FAILED_PRECONDITION); sigserve runs them apart."""
    sched = scheduler("max_batch_size { value: 64 } batch_timeout_micros { value: 20000 }")
    stop_later(sched)
    servable = FakeServable()
    servable.batch_with(sched)

    def one(i: int) -> None:
        width = 1 + i % 3
        x = np.full((1 + i % 4, width), float(i), dtype=np.float32)
        np.testing.assert_array_equal(servable.runner({"x": x}, ["first"])[0], x[:, 0] * 2)

    run_concurrently(one, 60)
    for batch in servable.batches:
        assert batch["x"].ndim == 2  # every batch holds one width only (concatenate would fail otherwise)
    assert len({b["x"].shape[1] for b in servable.batches}) == 3


def test_allowed_batch_sizes_pad_with_a_repeated_row(stop_later: Any) -> None:
    registry = CollectorRegistry()
    sched = scheduler(
        "max_batch_size { value: 8 } allowed_batch_sizes: [4, 8] batch_timeout_micros { value: 0 }", registry
    )
    stop_later(sched)
    servable = FakeServable()
    servable.batch_with(sched)
    feeds = request(rows=3, seed=1)
    got = servable.runner(feeds, ["total"])
    np.testing.assert_array_equal(got[0], model(feeds, ["total"])[0])
    (batch,) = servable.batches
    assert batch["x"].shape == (4, 2)
    np.testing.assert_array_equal(batch["x"][3], feeds["x"][0])  # padding = first row of the last task
    np.testing.assert_array_equal(batch["ids"][3], feeds["ids"][0])
    assert sample(registry, PROCESSED_BATCH_SIZE + "_sum") == 4
    assert sample(registry, PADDING_SIZE + "_sum", {"execution_batch_size": "4"}) == 1
    assert sample(registry, INPUT_BATCH_SIZE + "_sum") == 3
    assert sample(registry, WRAPPED_RUN_COUNT + "_total") == 1
    assert (
        sample(registry, QUEUING_LATENCY + "_count", {"thread_pool_name": "model_server_batch_threads"}) == 1
    )


# -- TF Serving's errors ------------------------------------------------------------------------------


@pytest.fixture
def wrapped(stop_later: Any) -> FakeServable:
    sched = scheduler("max_batch_size { value: 4 }")
    stop_later(sched)
    servable = FakeServable()
    servable.batch_with(sched)
    return servable


def test_inputs_must_agree_on_dimension_0(wrapped: FakeServable) -> None:
    with pytest.raises(SigserveError) as e:
        wrapped.runner({"x": np.zeros((2, 2), np.float32), "ids": np.zeros(3, np.int64)}, ["total"])
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message == "Batching Run() input tensors must have equal 0th-dimension size"


def test_scalar_inputs_are_rejected(wrapped: FakeServable) -> None:
    with pytest.raises(SigserveError) as e:
        wrapped.runner({"x": np.float32(1.0)}, ["y"])
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message == "Batching Run() input tensors must have at least one dimension"


def test_request_over_max_batch_size_is_rejected_without_splitting(wrapped: FakeServable) -> None:
    with pytest.raises(SigserveError) as e:
        wrapped.runner({"x": np.zeros((5, 2), np.float32)}, ["y"])
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message == "Task size 5 is larger than maximum input batch size 4"
    assert wrapped.batches == []


def test_scalar_output_fails_the_batch(wrapped: FakeServable) -> None:
    with pytest.raises(SigserveError) as e:
        wrapped.runner({"x": np.zeros((2, 2), np.float32)}, ["scalar"])
    assert e.value.code == Code.FAILED_PRECONDITION
    assert e.value.message == "Batched output tensor has 0 dimensions"


def test_output_rows_must_match_input_rows(wrapped: FakeServable) -> None:
    with pytest.raises(SigserveError) as e:
        wrapped.runner({"x": np.zeros((2, 2), np.float32)}, ["short"])
    assert e.value.code == Code.FAILED_PRECONDITION
    assert e.value.message == (
        "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension sizes of the "
        "input tensors"
    )


def test_runner_errors_reach_every_caller_in_the_batch(stop_later: Any) -> None:
    sched = scheduler("max_batch_size { value: 8 } batch_timeout_micros { value: 10000000 }")
    stop_later(sched)
    servable = FakeServable()
    servable.batch_with(sched)

    def one(i: int) -> SigserveError:
        with pytest.raises(SigserveError) as e:
            servable.runner({"x": np.zeros((4, 2), np.float32)}, ["nope"])
        return e.value

    errors = run_concurrently(one, 2)
    assert len(servable.batches) == 1
    assert [(e.code, e.message) for e in errors] == [(Code.INVALID_ARGUMENT, "unknown fetch nope")] * 2
    assert errors[0] is not errors[1]


def test_inputs_without_rows_and_signatures_without_inputs_bypass_the_queue(wrapped: FakeServable) -> None:
    got = wrapped.runner({"x": np.zeros((0, 2), np.float32)}, ["y"])
    assert got[0].shape == (0, 3)

    def no_inputs(feeds: Mapping[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
        return [np.float32(42.0)]  # a scalar is fine: nothing was batched

    wrapped.fn = no_inputs
    assert wrapped.runner({}, ["counter"])[0] == 42.0


# -- queue bounds, splitting, timeouts, shutdown ------------------------------------------------------


def queued_rows(sched: BatchScheduler) -> int:
    with sched._cv:
        return sum(b.size for q in sched._queues for b in q.batches)


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


class Gate:
    """A runner that blocks until released, to hold the single batch thread busy."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
        self.entered.set()
        assert self.release.wait(10)
        return model(feeds, fetches)


def test_full_queue_gives_unavailable(stop_later: Any) -> None:
    sched = scheduler(
        "max_batch_size { value: 1 } max_enqueued_batches { value: 1 } num_batch_threads { value: 1 }"
    )
    stop_later(sched)
    gate = Gate()
    servable = FakeServable(gate)
    servable.batch_with(sched)
    x = np.ones((1, 2), np.float32)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(servable.runner, {"x": x}, ["y"])
        assert gate.entered.wait(5)  # batch 1 runs
        queued = pool.submit(servable.runner, {"x": x}, ["y"])
        wait_until(lambda: queued_rows(sched) == 1)  # the second call sits in the only open batch
        with pytest.raises(SigserveError) as e:
            servable.runner({"x": x}, ["y"])
        gate.release.set()
        np.testing.assert_array_equal(running.result()[0], x @ W)
        np.testing.assert_array_equal(queued.result()[0], x @ W)
    assert e.value.code == Code.UNAVAILABLE
    assert e.value.message == (
        "The batch scheduling queue to which this task was submitted is full; currently 1 batches enqueued "
        "and max_enqueued_batches is 1"
    )


def test_splitting_runs_a_large_request_across_batches(stop_later: Any) -> None:
    sched = scheduler(
        "max_batch_size { value: 10 } enable_large_batch_splitting { value: true } "
        "max_execution_batch_size { value: 4 } allowed_batch_sizes: [4] num_batch_threads { value: 1 }"
    )
    stop_later(sched)
    servable = FakeServable()
    servable.batch_with(sched)
    feeds = request(rows=10, seed=3)
    got = servable.runner(feeds, ["total", "y"])
    want = model(feeds, ["total", "y"])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert sorted(len(b["x"]) for b in servable.batches) == [4, 4, 4]  # 4 + 4 + 2 padded to 4
    with pytest.raises(SigserveError) as e:
        servable.runner(request(rows=11, seed=4), ["y"])
    assert e.value.message == "Task size 11 is larger than maximum input batch size 10"


def test_splitting_respects_the_queue_capacity(stop_later: Any) -> None:
    sched = scheduler(
        "max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
        "max_execution_batch_size { value: 2 } max_enqueued_batches { value: 2 } "
        "num_batch_threads { value: 1 }"
    )
    stop_later(sched)
    gate = Gate()
    servable = FakeServable(gate)
    servable.batch_with(sched)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(servable.runner, {"x": np.ones((2, 2), np.float32)}, ["y"])
        assert gate.entered.wait(5)
        with pytest.raises(SigserveError) as e:
            servable.runner({"x": np.ones((5, 2), np.float32)}, ["y"])
        gate.release.set()
        running.result()
    assert e.value.code == Code.UNAVAILABLE
    assert e.value.message == (
        "The batch scheduling queue to which this task was submitted is full; task size is 5 but scheduling "
        "capacity is only 4 (num_enqueued_batches=1, max_enqueued_batches=2, open_batch_size=0, "
        "max_execution_batch_size=2)"
    )


def test_a_batch_closes_after_batch_timeout(stop_later: Any) -> None:
    sched = scheduler("max_batch_size { value: 100 } batch_timeout_micros { value: 150000 }")
    stop_later(sched)
    servable = FakeServable()
    servable.batch_with(sched)
    start = time.monotonic()
    servable.runner({"x": np.ones((1, 2), np.float32)}, ["y"])
    waited = time.monotonic() - start
    assert 0.14 <= waited < 2.0


def test_a_full_batch_does_not_wait_for_the_timeout(stop_later: Any) -> None:
    sched = scheduler("max_batch_size { value: 4 } batch_timeout_micros { value: 30000000 }")
    stop_later(sched)
    servable = FakeServable()
    servable.batch_with(sched)
    start = time.monotonic()
    servable.runner({"x": np.ones((4, 2), np.float32)}, ["y"])
    assert time.monotonic() - start < 5


def test_timeout_while_queued_withdraws_the_call(stop_later: Any) -> None:
    sched = scheduler(
        "max_batch_size { value: 1 } num_batch_threads { value: 1 } max_enqueued_batches { value: 4 }"
    )
    stop_later(sched)
    gate = Gate()
    servable = FakeServable(gate)
    servable.batch_with(sched)
    x = np.ones((1, 2), np.float32)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(servable.runner, {"x": x}, ["y"])
        assert gate.entered.wait(5)
        with pytest.raises(SigserveError) as e:
            servable.runner({"x": x}, ["y"], timeout=0.05)
        gate.release.set()
        running.result()
    assert e.value.code == Code.RESOURCE_EXHAUSTED
    assert e.value.message == "Run() timeout exceeded while waiting in batching queue"
    assert len(servable.batches) == 1  # the withdrawn call never ran


def test_the_runner_gets_the_remaining_time(stop_later: Any) -> None:
    sched = scheduler("max_batch_size { value: 4 }")
    stop_later(sched)
    servable = FakeServable()
    servable.batch_with(sched)
    servable.runner({"x": np.ones((1, 2), np.float32)}, ["y"], timeout=30.0)
    servable.runner({"x": np.ones((1, 2), np.float32)}, ["y"])
    first, second = servable.timeouts
    assert first is not None and 25.0 < first <= 30.0
    assert second is None


def test_stop_drains_queued_work_then_refuses(stop_later: Any) -> None:
    sched = scheduler("max_batch_size { value: 64 } batch_timeout_micros { value: 60000000 }")
    servable = FakeServable()
    servable.batch_with(sched)
    x = np.ones((1, 2), np.float32)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(servable.runner, {"x": x}, ["y"]) for _ in range(4)]
        time.sleep(0.2)  # queued behind a one-minute timeout
        assert not any(f.done() for f in futures)
        sched.stop()
        for f in futures:
            np.testing.assert_array_equal(f.result(timeout=5)[0], x @ W)
    with pytest.raises(SigserveError) as e:
        servable.runner({"x": x}, ["y"])
    assert e.value.code == Code.UNAVAILABLE


def test_models_share_the_threads_and_keep_their_own_params(stop_later: Any) -> None:
    sched = scheduler("max_batch_size { value: 8 } num_batch_threads { value: 2 }")
    stop_later(sched)
    a, b = FakeServable(delay=0.001), FakeServable(delay=0.001)
    a.batch_with(sched)
    b.batch_with(
        sched, parse_batching_parameters("max_batch_size { value: 2 } num_batch_threads { value: 99 }")
    )
    assert len(sched._threads) == 2  # per-model thread settings are ignored, as in TF Serving

    def one(i: int) -> None:
        servable = a if i % 2 else b
        feeds = {"x": request(rows=1 + i % 2, seed=i)["x"]}
        np.testing.assert_array_equal(servable.runner(feeds, ["y"])[0], model(feeds, ["y"])[0])

    run_concurrently(one, 80)
    assert max(len(batch["x"]) for batch in b.batches) <= 2
    with pytest.raises(SigserveError) as e:
        b.runner({"x": np.ones((3, 2), np.float32)}, ["y"])
    assert e.value.message == "Task size 3 is larger than maximum input batch size 2"
    assert sched._queues == []  # queues exist only while they hold work


def test_wrapping_twice_does_not_batch_twice(stop_later: Any) -> None:
    sched = scheduler("")
    stop_later(sched)
    servable = FakeServable()
    servable.batch_with(sched)
    first = servable.runner
    servable.batch_with(sched)
    assert servable.runner is not first
    assert servable.runner.inner == servable.run


# -- property: any mix of requests, any valid parameters ----------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.integers(1, 6), min_size=1, max_size=24),
    max_batch=st.integers(6, 12),
    splitting=st.booleans(),
    pad=st.booleans(),
    with_allowed=st.booleans(),
    timeout_us=st.sampled_from([0, 300, 3000]),
    threads=st.integers(1, 3),
)
def test_property_batched_equals_unbatched(
    rows: list[int],
    max_batch: int,
    splitting: bool,
    pad: bool,
    with_allowed: bool,
    timeout_us: int,
    threads: int,
) -> None:
    max_exec = max(2, max_batch // 2) if splitting else max_batch
    text = (
        f"max_batch_size {{ value: {max_batch} }} batch_timeout_micros {{ value: {timeout_us} }} "
        f"num_batch_threads {{ value: {threads} }} max_enqueued_batches {{ value: 1000 }} "
        f"pad_variable_length_inputs: {str(pad).lower()} "
        f"enable_large_batch_splitting {{ value: {str(splitting).lower()} }} "
        f"max_execution_batch_size {{ value: {max_exec} }} "
    )
    if with_allowed:
        text += f"allowed_batch_sizes: [1, {max_exec}]"
    sched = scheduler(text)
    try:
        servable = FakeServable()
        servable.batch_with(sched)

        def one(i: int) -> None:
            feeds = request(rows=rows[i], seed=i)
            fetches = ["total", "label_bytes"] if i % 2 else ["y"]
            got = servable.runner(feeds if i % 2 else {"x": feeds["x"]}, fetches)
            for g, w in zip(got, model(feeds, fetches), strict=True):
                np.testing.assert_array_equal(g, w)

        run_concurrently(one, len(rows), workers=len(rows))
        assert all(len(b["x"]) <= max_exec for b in servable.batches)
    finally:
        sched.stop()


def test_same_name_different_dtypes_never_share_a_batch(stop_later: Any) -> None:
    """Concatenating float32 with float64 would silently upcast one caller's tensor."""
    sched = scheduler("max_batch_size { value: 64 } batch_timeout_micros { value: 20000 }")
    stop_later(sched)
    servable = FakeServable()
    servable.batch_with(sched)

    def one(i: int) -> None:
        dtype = [np.float32, np.float64, np.float16][i % 3]
        x = np.full((1 + i % 2, 2), i, dtype=dtype)
        got = servable.runner({"x": x}, ["y"])[0]
        assert got.dtype == (x @ W).dtype
        np.testing.assert_array_equal(got, x @ W)

    run_concurrently(one, 45)
    assert {b["x"].dtype for b in servable.batches} == {
        np.dtype(np.float32),
        np.dtype(np.float64),
        np.dtype(np.float16),
    }
