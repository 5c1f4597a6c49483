"""`Session.run(..., in_caller_thread=True)`: TensorFlow runs the step's ops in the calling thread,
only when the call has no deadline, and with the same results as the inter-op pool."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

runtime = pytest.importorskip("sigserve.runtime")


@pytest.fixture(scope="module")
def probe() -> Iterator[tuple[runtime.session.Session, list[int]]]:
    """A graph whose one op is a Python function that records the thread it ran in."""
    import tensorflow as tf

    seen: list[int] = []

    def record(x: np.ndarray) -> np.ndarray:
        seen.append(threading.get_ident())
        return x * 2

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None], name="x")
        v1.identity(v1.py_func(record, [x], tf.float32, stateful=True), name="y")
    session = runtime.session.Session(graph, v1.Session(graph=graph))
    yield session, seen
    session.close()


def _threads_of(probe: tuple[runtime.session.Session, list[int]], **kwargs: object) -> tuple[np.ndarray, int]:
    session, seen = probe
    seen.clear()
    [y] = session.run({"x:0": np.array([1.0, 2.0], np.float32)}, ["y:0"], **kwargs)  # type: ignore[arg-type]
    [thread] = seen
    return y, thread


def test_options_bytes_are_tensorflows() -> None:
    from tensorflow.core.protobuf import config_pb2

    expected = config_pb2.RunOptions(inter_op_thread_pool=-1).SerializeToString()
    assert runtime.session.CALLER_THREAD_RUN_OPTIONS == expected


def test_hint_runs_the_step_in_the_calling_thread(probe) -> None:
    y, thread = _threads_of(probe, in_caller_thread=True)
    assert thread == threading.get_ident()
    np.testing.assert_array_equal(y, [2.0, 4.0])


def test_default_runs_the_step_in_the_inter_op_pool(probe) -> None:
    y, thread = _threads_of(probe)
    assert thread != threading.get_ident()
    np.testing.assert_array_equal(y, [2.0, 4.0])


def test_a_deadline_ignores_the_hint(probe) -> None:
    _, thread = _threads_of(probe, timeout=30.0, in_caller_thread=True)
    assert thread != threading.get_ident()


def test_hint_from_many_threads(probe) -> None:
    """The shared options buffer is read concurrently; every thread runs its own steps."""
    session, _ = probe
    errors: list[BaseException] = []

    def worker(offset: float) -> None:
        try:
            for i in range(50):
                x = np.array([offset + i], np.float32)
                [y] = session.run({"x:0": x}, ["y:0"], in_caller_thread=True)
                np.testing.assert_array_equal(y, x * 2)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(1000.0 * n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


def test_servable_passes_the_hint_only_to_its_own_session(tmp_path) -> None:
    """Behind a batching (or any other) runner, predict calls that runner as before."""
    from tests import models

    export = models.export_tf1(tmp_path / "m")
    calls: list[tuple] = []

    def wrap(inner):
        def wrapped(feeds, fetches, timeout=None):
            calls.append((tuple(fetches), timeout))
            return inner(feeds, fetches, timeout)

        return wrapped

    servable = runtime.load(export)
    behind = runtime.load(export, runner_wrapper=wrap)
    try:
        direct = servable.predict({"x": [[1.0]]}, in_caller_thread=True)
        assert calls == []
        wrapped_out = behind.predict({"x": [[1.0]]}, in_caller_thread=True)
        assert len(calls) == 1 and calls[0][1] is None
        assert direct.keys() == wrapped_out.keys()
        for key in direct:
            np.testing.assert_array_equal(direct[key], wrapped_out[key])
    finally:
        servable.close()
        behind.close()
