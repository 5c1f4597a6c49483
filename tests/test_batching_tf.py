"""Batching end to end on real TensorFlow servables from `sigserve.runtime`.

Every batched answer is compared with the same request on an unbatched servable of the same
SavedModel: predict with one and several inputs, classify and regress on tf.Examples (string
tensors), different row counts at once, padding on and off, large-batch splitting.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from sigserve.batching import BatchScheduler, parse_batching_parameters
from sigserve.errors import Code, SigserveError
from tests import models

pytestmark = pytest.mark.tf

# 24 concurrent callers must never find the queue full (TF Serving's default bound is 10 batches).
Q = "max_enqueued_batches { value: 100 } "


@pytest.fixture(scope="module")
def tf1_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return models.export_tf1(tmp_path_factory.mktemp("batching_tf1"))


@pytest.fixture(scope="module")
def ragged_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """x float [None, None] -> first = 2 * x[:, 0]; same answer whatever the row is padded with."""
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir = tmp_path_factory.mktemp("batching_ragged") / "ragged" / "1"
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, shape=[None, None], name="x")
        first = tf.multiply(x[:, 0], 2.0, name="first")
        sig = v1.saved_model.signature_def_utils.predict_signature_def({"x": x}, {"first": first})
        with v1.Session(graph=graph) as sess:
            builder = v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": sig})
            builder.save()
    return export_dir


@pytest.fixture(scope="module")
def plain(tf1_dir: pathlib.Path) -> Iterator[Any]:
    from sigserve import runtime

    servable = runtime.load(tf1_dir, name="tf1", version=1)
    yield servable
    servable.close()


@pytest.fixture
def batched_factory() -> Iterator[Callable[[pathlib.Path, str], Any]]:
    from sigserve import runtime

    opened: list[tuple[BatchScheduler, Any]] = []

    def make(export_dir: pathlib.Path, text: str) -> Any:
        scheduler = BatchScheduler(parse_batching_parameters(text))
        servable = runtime.load(export_dir, name="m", version=1, runner_wrapper=scheduler.wrapper())
        assert not servable.runs_in_caller
        opened.append((scheduler, servable))
        return servable

    yield make
    for scheduler, servable in opened:
        scheduler.stop()
        servable.close()


def run_all(fn: Callable[[int], None], n: int) -> None:
    with ThreadPoolExecutor(24) as pool:
        list(pool.map(fn, range(n)))


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def assert_same_classification(got: Any, want: Any) -> None:
    """Labels exactly; scores to the last bit or two: TensorFlow's vectorized sigmoid can round a
    row differently depending on where it sits in the batch (TF Serving's batching does the same)."""
    assert len(got.classifications) == len(want.classifications)
    for g, w in zip(got.classifications, want.classifications, strict=True):
        assert [c.label for c in g.classes] == [c.label for c in w.classes]
        np.testing.assert_allclose(
            [c.score for c in g.classes], [c.score for c in w.classes], rtol=1e-6, atol=1e-7
        )


def one_request(i: int, plain: Any, batched: Any) -> None:
    """Request i of a mixed stream: four APIs/signatures and 1-4 rows."""
    rows = 1 + i % 4
    rng = np.random.default_rng(i)
    kind = i % 4
    if kind == 0:
        inputs = {"x": rng.standard_normal((rows, 1)).astype(np.float32)}
        assert_same(batched.predict(inputs), plain.predict(inputs))
    elif kind == 1:
        inputs = {
            "a": rng.standard_normal(rows).astype(np.float32),
            "b": rng.integers(-50, 50, rows).astype(np.int64),
        }
        outputs = ["sum", "label_bytes"]  # `count` is a scalar: not batchable (see below)
        assert_same(
            batched.predict(inputs, signature_name="multi", output_filter=outputs),
            plain.predict(inputs, signature_name="multi", output_filter=outputs),
        )
    elif kind == 2:
        examples = [{"x": float(v)} for v in rng.standard_normal(rows)]
        assert_same_classification(
            batched.classify(examples, signature_name="classify_x"),
            plain.classify(examples, signature_name="classify_x"),
        )
    else:
        examples = [{"x": float(v)} for v in rng.standard_normal(rows)]
        assert batched.regress(examples, signature_name="regress_x") == plain.regress(
            examples, signature_name="regress_x"
        )


@pytest.mark.parametrize(
    "text",
    [
        Q
        + "max_batch_size { value: 16 } batch_timeout_micros { value: 2000 } num_batch_threads { value: 2 }",
        Q + "max_batch_size { value: 8 } batch_timeout_micros { value: 2000 } allowed_batch_sizes: [2, 4, 8]",
        Q + "max_batch_size { value: 16 } batch_timeout_micros { value: 2000 } "
        "pad_variable_length_inputs: true allowed_batch_sizes: [4, 16]",
        Q + "max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
        "max_execution_batch_size { value: 3 } allowed_batch_sizes: [3]",
    ],
    ids=["padding-off", "allowed-sizes", "padding-on", "splitting"],
)
def test_mixed_concurrent_requests_equal_unbatched(
    text: str, plain: Any, tf1_dir: pathlib.Path, batched_factory: Callable[[pathlib.Path, str], Any]
) -> None:
    batched = batched_factory(tf1_dir, text)
    run_all(lambda i: one_request(i, plain, batched), 96)


def test_padding_on_batches_rows_of_different_lengths(
    ragged_dir: pathlib.Path, batched_factory: Callable[[pathlib.Path, str], Any]
) -> None:
    from sigserve import runtime

    batched = batched_factory(
        ragged_dir,
        "max_batch_size { value: 32 } batch_timeout_micros { value: 3000 } pad_variable_length_inputs: true",
    )
    calls: list[np.ndarray] = []
    inner = batched.runner.inner

    def spy(feeds: Any, fetches: Any, timeout: float | None = None) -> Any:
        calls.append(np.array(next(iter(feeds.values()))))
        return inner(feeds, fetches, timeout)

    batched.runner.inner = spy
    with runtime.load(ragged_dir) as plain_ragged:

        def one(i: int) -> None:
            x = np.arange(1 + i % 3, dtype=np.float32).reshape(1, -1).repeat(1 + i % 2, axis=0) + i
            assert_same(batched.predict({"x": x}), plain_ragged.predict({"x": x}))

        run_all(one, 60)
    assert len(calls) < 60
    # A 1-wide row [v] padded with its tensor's first element is [v, v, v] next to 3-wide rows
    # [v, v + 1, v + 2]: requests of different lengths did share a batch.
    assert any(b.shape[1] == 3 and any(len(set(row)) == 1 for row in b.tolist()) for b in calls)


def test_tf_serving_fixture_with_its_batching_config(
    fixtures_dir: pathlib.Path, batched_factory: Callable[[pathlib.Path, str], Any]
) -> None:
    text = (fixtures_dir / "batching_config.txt").read_text()
    batched = batched_factory(fixtures_dir / "saved_model_half_plus_two_cpu" / "00000123", text)
    results: dict[int, np.ndarray] = {}

    def one(i: int) -> None:
        results[i] = batched.predict({"x": np.array([[1.0], [2.0], [5.0]], np.float32) + i})["y"]

    run_all(one, 40)
    for i, y in results.items():
        np.testing.assert_allclose(y, np.array([[2.5], [3.0], [4.5]], np.float32) + 0.5 * i)


def test_scalar_outputs_cannot_be_batched(
    tf1_dir: pathlib.Path, batched_factory: Callable[[pathlib.Path, str], Any]
) -> None:
    """TF Serving's behaviour: `count` (shape []) has no dimension 0 to split."""
    batched = batched_factory(tf1_dir, "max_batch_size { value: 8 }")
    inputs = {"a": np.ones(2, np.float32), "b": np.ones(2, np.int64)}
    with pytest.raises(SigserveError) as e:
        batched.predict(inputs, signature_name="multi")
    assert e.value.code == Code.FAILED_PRECONDITION
    assert e.value.message == "Batched output tensor has 0 dimensions"


def test_tensorflow_errors_come_through_unchanged(
    plain: Any, tf1_dir: pathlib.Path, batched_factory: Callable[[pathlib.Path, str], Any]
) -> None:
    batched = batched_factory(tf1_dir, "max_batch_size { value: 8 }")
    bad = {"x": np.ones((2, 1), np.float64)}  # float64 into a float32 placeholder
    with pytest.raises(SigserveError) as want:
        plain.predict(bad)
    with pytest.raises(SigserveError) as got:
        batched.predict(bad)
    assert (got.value.code, got.value.message) == (want.value.code, want.value.message)


def test_unequal_rows_are_rejected_before_tensorflow(
    tf1_dir: pathlib.Path, batched_factory: Callable[[pathlib.Path, str], Any]
) -> None:
    batched = batched_factory(tf1_dir, "")
    with pytest.raises(SigserveError) as e:
        batched.predict({"a": np.ones(2, np.float32), "b": np.ones(3, np.int64)}, signature_name="multi")
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message == "Batching Run() input tensors must have equal 0th-dimension size"


def test_a_running_batch_holds_neither_the_gil_nor_the_queues(
    tmp_path: pathlib.Path, tf1_dir: pathlib.Path
) -> None:
    """While one batch spins in TensorFlow, Python keeps running and another model's batch is served."""
    import threading
    import time

    from sigserve import runtime
    from tests.test_batching_serve import export_batchable_spin

    scheduler = BatchScheduler(parse_batching_parameters("num_batch_threads { value: 2 }"))
    spin = runtime.load(export_batchable_spin(tmp_path) / "1", runner_wrapper=scheduler.wrapper())
    other = runtime.load(tf1_dir, runner_wrapper=scheduler.wrapper())
    try:
        started = threading.Event()
        result: dict[str, Any] = {}

        def long_call() -> None:
            started.set()
            result["i"] = spin.predict({"n": np.array([400_000], np.int64)})["i"]

        def python_work(seconds: float) -> int:
            count, end = 0, time.monotonic() + seconds
            while time.monotonic() < end:
                count += 1
            return count

        idle = python_work(0.2)
        thread = threading.Thread(target=long_call)
        thread.start()
        assert started.wait(5)
        time.sleep(0.1)  # the spin batch is inside TensorFlow now
        busy = python_work(0.2)
        t0 = time.monotonic()
        y = other.predict({"x": np.array([[4.0]], np.float32)})["y"]
        served_in = time.monotonic() - t0
        still_spinning = thread.is_alive()
        thread.join(60)
    finally:
        scheduler.stop()
        spin.close()
        other.close()
    np.testing.assert_array_equal(y, [[4.0]])
    assert result["i"].tolist() == [400_000]
    if still_spinning:  # only meaningful while the long batch was still running
        assert served_in < 1.0
        assert busy > idle * 0.3  # the GIL was free while TensorFlow ran
