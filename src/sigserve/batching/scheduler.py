"""TF Serving's batching session in Python: concurrent run() calls are merged along dimension 0.

One `BatchScheduler` per server, shared by every model and version (TF Serving's shared batch
scheduler): `num_batch_threads` worker threads take batches round-robin from per-queue deques. A
queue holds the calls of one servable with one feed-name set, one fetch set and (see below) one
input shape family; each call becomes a task of size = dimension 0 of its inputs. A batch closes
when it is full or `batch_timeout_micros` after its first task arrived; a worker concatenates the
tasks' inputs, pads up to the next allowed batch size by repeating a row, runs the wrapped runner
once, checks dimension 0 of every output and hands each caller its rows. The wrapped runner is the
TensorFlow session call, which releases the GIL, so request parsing, batching and TensorFlow overlap.

Inputs whose dimensions after the 0th differ:
- `pad_variable_length_inputs: true`: padded up to the largest in the batch with the tensor's first
  element (TF Serving's rule), so they batch together.
- otherwise they go to separate queues and never share a batch. TF Serving instead fails the whole
  mixed batch with FAILED_PRECONDITION ("... have different shapes and padding is turned off ..."),
  which lets one caller's shape fail another caller's request; sigserve keeps every request's answer
  equal to the unbatched one. The queue bound (`max_enqueued_batches`) then applies per shape.

Queues exist only while they hold work, so a model that is unloaded leaves nothing behind.

**The loop lane** (`batch_timeout_micros` 0 only, awaited calls only). Zero timeout means "run what is
waiting as soon as an executor is free" (Triton's zero queue delay). For a step known to be short, the
event loop that parsed the requests is that executor. On a loop with nothing else ready (`_idle`: a
lone request, as at concurrency 1) the call's batch runs at once, in the caller; otherwise the first
call schedules one drain with `loop.call_soon`, every request the loop reads in the same iteration
joins the open batch, and the drain runs it on the next iteration and completes the futures there.
No thread wakes and no GIL changes hands. "Known short" is decided per queue key as
`service/inline.py` decides for the loop's unbatched calls (`_StepHistory`: `loop_step_seconds`
150 µs, `loop_stall_seconds` 10 ms), so a model that got slower goes back to the batch threads. The
batches themselves (sizes, splitting, padding, queue bound, queue timeout) are formed by the same
`_Queue` whichever executor runs them.
"""

from __future__ import annotations

import _thread
import asyncio
import collections
import contextlib
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from sigserve.batching import metrics as batching_metrics
from sigserve.batching.params import max_execution_batch_size, parse_batching_parameters
from sigserve.errors import Code, SigserveError, internal, invalid_argument, unavailable
from sigserve.interfaces import Runner, RunnerWrapper
from sigserve.protos.session_bundle_config_pb2 import BatchingParameters

_NO_LOCK = contextlib.nullcontext()
# A batch thread's `outbox`: the awaited calls it completed and has yet to post to their loops.
_worker = threading.local()

QUEUE_TIMEOUT_MESSAGE = "Run() timeout exceeded while waiting in batching queue"

LOOP_WINDOW = 16
"""Steps per decision of the loop lane (`_StepHistory`)."""
_MAX_HISTORIES = 1024


@dataclass(frozen=True)
class QueueConfig:
    """The per-model part of BatchingParameters, resolved to plain numbers once at wrap time."""

    max_batch_size: int
    max_execution_batch_size: int
    timeout_seconds: float
    max_enqueued_batches: int
    splitting: bool
    allowed_batch_sizes: tuple[int, ...]
    pad_variable_length_inputs: bool

    @classmethod
    def from_params(cls, params: BatchingParameters) -> QueueConfig:
        return cls(
            max_batch_size=int(params.max_batch_size.value),
            max_execution_batch_size=max_execution_batch_size(params),
            timeout_seconds=params.batch_timeout_micros.value / 1e6,
            max_enqueued_batches=int(params.max_enqueued_batches.value),
            splitting=bool(params.enable_large_batch_splitting.value),
            allowed_batch_sizes=tuple(int(s) for s in params.allowed_batch_sizes),
            pad_variable_length_inputs=bool(params.pad_variable_length_inputs),
        )

    def padded_size(self, size: int) -> int:
        """RoundToLowestAllowedBatchSize: the smallest allowed size that holds `size` rows."""
        for allowed in self.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


class _Call:
    """One run() call, possibly split into several tasks (enable_large_batch_splitting).

    A blocking caller is signalled with a raw lock held from creation and released once: the
    cheapest hand-off between threads Python has. An awaiting caller (`future` set) holds no thread:
    its future is completed on its event loop, together with the other calls of the same batch and
    loop, in one `call_soon_threadsafe` (`_post`).
    """

    __slots__ = (
        "_lock",
        "deadline",
        "done",
        "enqueued",
        "error",
        "fetches",
        "future",
        "parts",
        "pending",
        "tasks",
    )

    def __init__(
        self,
        fetches: list[str],
        enqueued: float,
        deadline: float | None,
        future: asyncio.Future[list[np.ndarray]] | None = None,
    ) -> None:
        self.fetches = fetches
        self.enqueued = enqueued
        self.deadline = deadline
        self.done = False
        self.future = future
        if future is None:
            self._lock = _thread.allocate_lock()
            self._lock.acquire()
        self.tasks: list[_Task] = []
        self.parts: list[list[np.ndarray] | None] = []
        self.pending = 0
        self.error: BaseException | None = None

    def _signal(self) -> None:
        if self.done:
            return
        self.done = True
        if self.future is None:
            self._lock.release()
            return
        outbox: list[_Call] | None = getattr(_worker, "outbox", None)
        if outbox is not None:
            outbox.append(self)  # a batch thread: posted with the rest of its batch
        else:
            _post([self])

    def complete(self) -> None:
        """On the awaiting caller's loop: hand the result (or error) to its future."""
        future = self.future
        if future is None or future.done():  # cancelled meanwhile
            return
        try:
            future.set_result(self.result())
        except BaseException as e:
            future.set_exception(e)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the call is done, or `timeout` seconds; True when done."""
        if timeout is None:
            acquired = self._lock.acquire()
        elif timeout <= 0:
            acquired = self._lock.acquire(False)
        else:
            acquired = self._lock.acquire(True, timeout)
        if acquired:
            self._lock.release()  # later waits return at once
        return acquired

    def finish_part(self, index: int, outputs: list[np.ndarray]) -> None:
        self.parts[index] = outputs
        self.pending -= 1
        if self.pending == 0 and self.error is None:
            self._signal()

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._signal()

    def result(self) -> list[np.ndarray]:
        if self.error is not None:
            err = self.error
            if isinstance(err, SigserveError):
                # A fresh exception per caller: the same object raised in several threads at once
                # would share (and garble) one traceback.
                raise SigserveError(err.code, err.message) from None
            raise err
        parts = [p for p in self.parts if p is not None]
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate([p[j] for p in parts], axis=0) for j in range(len(self.fetches))]


def _idle(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the loop has nothing else to run in this iteration: no other request read and waiting
    to join a batch, so the loop lane may run this one at once instead of one iteration later (at
    concurrency 1 that saves two loop iterations a request: 0.68 -> ~0.9x of batching off). It reads
    asyncio's private ready queue, which its event loops have had since Python 3.4; a loop without
    one (uvloop) is never idle here, which only costs the iteration back."""
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready


def _complete(calls: list[_Call]) -> None:
    for call in calls:
        call.complete()


def _post(calls: list[_Call]) -> None:
    """Complete awaited calls on their loops: one wake-up per loop, not one per call."""
    first = calls[0].future
    assert first is not None
    loop = first.get_loop()
    if all(c.future is not None and c.future.get_loop() is loop for c in calls):
        groups = [(loop, calls)]
    else:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Call]] = {}
        for call in calls:
            assert call.future is not None
            by_loop.setdefault(call.future.get_loop(), []).append(call)
        groups = list(by_loop.items())
    for target, group in groups:
        try:
            target.call_soon_threadsafe(_complete, group)
        except RuntimeError:  # the loop is closed: nobody awaits these any more
            pass


class _Task:
    """The rows of one call that go into one batch."""

    __slots__ = ("batch", "call", "finished", "index", "inputs", "size")

    def __init__(self, call: _Call, index: int, inputs: dict[str, np.ndarray], size: int) -> None:
        self.call = call
        self.index = index
        self.inputs = inputs
        self.size = size
        self.batch: _Batch | None = None
        self.finished = False


class _Batch:
    __slots__ = ("size", "start", "taken", "tasks")

    def __init__(self) -> None:
        self.tasks: list[_Task] = []
        self.size = 0
        self.start = 0.0
        self.taken = False


class _Queue:
    """The batches of one (runner, feed names, fetch set, shape family); the last one is open."""

    def __init__(
        self,
        owner: BatchingRunner,
        key: tuple[Any, ...],
        feed_names: tuple[str, ...],
        fetch_order: tuple[str, ...],
    ) -> None:
        self.owner = owner
        self.config = owner.config
        self.key = key
        self.feed_names = feed_names
        self.fetch_order = fetch_order
        self.fetch_index = {name: i for i, name in enumerate(fetch_order)}
        self.batches: collections.deque[_Batch] = collections.deque([_Batch()])
        self.processing = 0
        # Set while a drain of this queue is scheduled on that event loop (the loop lane).
        self.loop: asyncio.AbstractEventLoop | None = None

    def is_empty(self) -> bool:
        return self.processing == 0 and len(self.batches) == 1 and not self.batches[0].tasks

    def _start_new_batch(self) -> None:
        self.batches.append(_Batch())

    def _add(self, task: _Task, now: float) -> None:
        batch = self.batches[-1]
        if not batch.tasks:
            batch.start = now
        batch.tasks.append(task)
        batch.size += task.size
        task.batch = batch

    def schedule(self, call: _Call, inputs: dict[str, np.ndarray], size: int, now: float) -> None:
        """Enqueue one call or raise UNAVAILABLE, with the texts of TensorFlow's shared batch scheduler."""
        cfg = self.config
        open_size = self.batches[-1].size
        if not cfg.splitting:
            if open_size + size > cfg.max_batch_size:
                if len(self.batches) >= cfg.max_enqueued_batches:
                    raise unavailable(
                        "The batch scheduling queue to which this task was submitted is full; currently "
                        f"{len(self.batches)} batches enqueued and max_enqueued_batches is "
                        f"{cfg.max_enqueued_batches}"
                    )
                self._start_new_batch()
            sizes = [size]
        else:
            limit = cfg.max_execution_batch_size
            capacity = (cfg.max_enqueued_batches - len(self.batches)) * limit + (limit - open_size)
            if size > capacity:
                raise unavailable(
                    "The batch scheduling queue to which this task was submitted is full; task size is "
                    f"{size} but scheduling capacity is only {capacity} (num_enqueued_batches="
                    f"{len(self.batches)}, max_enqueued_batches={cfg.max_enqueued_batches}, "
                    f"open_batch_size={open_size}, max_execution_batch_size={limit})"
                )
            sizes = _split_sizes(size, limit - open_size, limit)
        offset = 0
        call.parts = [None] * len(sizes)
        call.pending = len(sizes)
        for index, part in enumerate(sizes):
            if len(sizes) == 1:
                part_inputs = inputs
            else:
                part_inputs = {name: a[offset : offset + part] for name, a in inputs.items()}
            offset += part
            task = _Task(call, index, part_inputs, part)
            if self.batches[-1].size + part > cfg.max_execution_batch_size:
                self._start_new_batch()
            self._add(task, now)
            call.tasks.append(task)

    def take(self, now: float, closing: bool) -> _Batch | None:
        """The next batch to process, if any is ready (closed, full, timed out or draining)."""
        if len(self.batches) >= 2:
            batch = self.batches.popleft()
        else:
            batch = self.batches[0]
            if not batch.tasks:
                return None
            ready = (
                closing
                or batch.size >= self.config.max_execution_batch_size
                or now >= batch.start + self.config.timeout_seconds
            )
            if not ready:
                return None
            self.batches[0] = _Batch()
        batch.taken = True
        self.processing += 1
        return batch

    def wants_worker(self, now: float) -> bool:
        """After a schedule: whether a waiting worker must wake, because a batch is ready now or the
        open batch just got its first task (a worker then has to start timing it). Otherwise every
        worker is either busy (and looks again when done) or already timing this open batch."""
        if len(self.batches) >= 2:
            return True
        batch = self.batches[0]
        return (
            batch.size >= self.config.max_execution_batch_size
            or self.config.timeout_seconds <= 0
            or batch.start == now
        )

    def open_deadline(self) -> float | None:
        """When the open batch times out, if it is the only batch and holds work."""
        if len(self.batches) == 1 and self.batches[0].tasks:
            return self.batches[0].start + self.config.timeout_seconds
        return None


def _split_sizes(size: int, open_remaining: int, limit: int) -> list[int]:
    """InputSplitMetadata: fill the open batch first, then whole batches, then the remainder."""
    if size <= open_remaining:
        return [size]
    sizes = []
    if open_remaining > 0:
        sizes.append(open_remaining)
        size -= open_remaining
    while size > 0:
        sizes.append(min(size, limit))
        size -= limit
    return sizes


def _pad_inner_dims(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """pad_variable_length_inputs: grow dims >= 1 to the batch's largest, filling with element 0."""
    target = tuple(max(dims) for dims in zip(*(a.shape[1:] for a in arrays), strict=True))
    out = []
    for a in arrays:
        if a.shape[1:] == target:
            out.append(a)
            continue
        fill = a.flat[0] if a.size else np.zeros((), dtype=a.dtype).item()
        if a.dtype == object and not a.size:
            fill = b""
        padded = np.full((a.shape[0], *target), fill, dtype=a.dtype)
        region = (slice(None), *tuple(slice(0, d) for d in a.shape[1:]))
        padded[region] = a
        out.append(padded)
    return out


def _checked_outputs(expected: int, outputs: Sequence[Any], padded: int) -> list[np.ndarray]:
    """A batch's outputs, each with the batch's rows in dimension 0 (TF Serving's checks)."""
    if len(outputs) != expected:
        raise internal("Wrong number of batched output tensors")
    arrays = [np.asarray(o) for o in outputs]
    for array in arrays:
        if array.ndim == 0:
            raise SigserveError(Code.FAILED_PRECONDITION, "Batched output tensor has 0 dimensions")
        if array.shape[0] != padded:
            raise SigserveError(
                Code.FAILED_PRECONDITION,
                "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension "
                "sizes of the input tensors",
            )
    return arrays


class _Solo:
    """A call the loop lane runs alone, at once (`BatchScheduler._run_solo`)."""

    __slots__ = ("fetches", "inputs", "key", "size")

    def __init__(
        self, inputs: dict[str, np.ndarray], fetches: list[str], key: tuple[Any, ...], size: int
    ) -> None:
        self.inputs = inputs
        self.fetches = fetches
        self.key = key
        self.size = size


class _StepHistory:
    """The loop lane's decision for one queue key, as `service/inline.py` decides for a route: onto
    the loop when the fastest of the last `LOOP_WINDOW` steps took under the limit; back to the
    batch threads when the median of a window on the loop reaches twice the limit, or at once when
    one step on the loop takes over the stall limit."""

    __slots__ = ("on_loop", "samples")

    def __init__(self) -> None:
        self.on_loop = False
        self.samples: list[float] = []

    def record(self, seconds: float, on_loop: bool, limit: float, stall: float) -> None:
        if on_loop != self.on_loop:  # a step that began before the last switch
            return
        # Several batch threads record at once, without a lock: a full window is swapped out for a
        # new list before it is read, so no thread reads a list another is clearing.
        if on_loop and seconds > stall:
            self.on_loop = False
            self.samples = []
            return
        samples = self.samples
        samples.append(seconds)
        if len(samples) < LOOP_WINDOW:
            return
        self.samples = []
        window = sorted(samples)
        if on_loop:
            if window[len(window) // 2] >= 2 * limit:
                self.on_loop = False
        elif window[0] < limit:
            self.on_loop = True


def _in_caller_thread(inner: Runner) -> Runner:
    """The runner the loop lane calls: with `in_caller_thread=True` where the runner takes it (the
    runtime's session call: TensorFlow then runs a small step's ops in the loop's thread instead of
    handing them to its inter-op pool and waiting, p50 80 -> ~20 µs for half_plus_two)."""
    try:
        parameters = inspect.signature(inner).parameters
    except (TypeError, ValueError):
        return inner
    if "in_caller_thread" in parameters:
        caller_thread: Runner = functools.partial(inner, in_caller_thread=True)  # type: ignore[call-arg]
        return caller_thread
    return inner


class BatchingRunner:
    """A runner that batches: the same call signature as the runner it wraps (`interfaces.Runner`)."""

    def __init__(self, scheduler: BatchScheduler, inner: Runner, config: QueueConfig) -> None:
        self.scheduler = scheduler
        self.inner = inner
        self.config = config
        # Guarded by the scheduler's lock; a queue is here only while it holds work.
        self.queues: dict[tuple[Any, ...], _Queue] = {}
        # Per queue key: the recent steps, and whether the loop lane runs the key. Outlives the
        # queues (which come and go with their work); written by whichever executor ran the step.
        self.steps: dict[tuple[Any, ...], _StepHistory] = {}
        self.loop_inner = _in_caller_thread(inner)

    def record_step(
        self, key: tuple[Any, ...], seconds: float, on_loop: bool, limits: tuple[float, float]
    ) -> None:
        history = self.steps.get(key)
        if history is None:
            if len(self.steps) >= _MAX_HISTORIES:
                self.steps.clear()
            history = self.steps[key] = _StepHistory()
        history.record(seconds, on_loop, *limits)

    def on_loop(self, key: tuple[Any, ...]) -> bool:
        history = self.steps.get(key)
        return history is not None and history.on_loop

    def __call__(
        self, feeds: Mapping[str, Any], fetches: Sequence[str], timeout: float | None = None
    ) -> list[np.ndarray]:
        return self.scheduler._run(self, feeds, fetches, timeout)

    def run_awaited(
        self, feeds: Mapping[str, Any], fetches: Sequence[str], timeout: float | None = None
    ) -> Awaitable[list[np.ndarray]]:
        """The same step from an event loop (`interfaces.AwaitableRunner`): the caller awaits a
        future that the batch thread completes; no thread waits for the batch."""
        return self.scheduler._run_awaited(self, feeds, fetches, timeout)


class BatchScheduler:
    """The server-wide batch scheduler: one thread pool, one queue per signature and shape family."""

    def __init__(
        self,
        params: BatchingParameters | None = None,
        registry: CollectorRegistry | None = None,
        *,
        loop_step_seconds: float = 150e-6,
        loop_stall_seconds: float = 10e-3,
    ) -> None:
        """`loop_step_seconds`, `loop_stall_seconds`: the loop lane's limits (`_StepHistory`); a
        `loop_step_seconds` of 0 turns the lane off."""
        self.params = params if params is not None else parse_batching_parameters("")
        self.loop_step_seconds = loop_step_seconds
        self._loop_limits = (loop_step_seconds, loop_stall_seconds)
        self.config = QueueConfig.from_params(self.params)
        self.thread_pool_name = self.params.thread_pool_name.value
        self.metrics = batching_metrics.for_registry(registry)
        self._cv = threading.Condition(threading.Lock())
        self._queues: list[_Queue] = []
        self._rr = 0
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{self.thread_pool_name}-{i}", daemon=True)
            for i in range(int(self.params.num_batch_threads.value))
        ]
        for t in self._threads:
            t.start()

    # -- the contract ----------------------------------------------------------------------------

    def wrapper(self, params: BatchingParameters | None = None) -> RunnerWrapper:
        """What batches a servable's steps: a function from its own runner to a batching one, to give
        the servable when it is built (`runtime.load(..., runner_wrapper=...)`).

        `params` are per-model parameters (`batching_params.pbtxt`); their thread-pool fields are
        ignored, as in TF Serving, because the pool is this scheduler's.
        """
        config = QueueConfig.from_params(params) if params is not None else self.config

        def wrap(inner: Runner) -> Runner:
            return BatchingRunner(self, inner, config)

        return wrap

    def stop(self) -> None:
        """Run every queued batch, then end the worker threads. Later calls get UNAVAILABLE."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        current = threading.current_thread()
        for t in self._threads:
            if t is not current:
                t.join()

    # -- the caller's side -----------------------------------------------------------------------

    def _run(
        self, runner: BatchingRunner, feeds: Mapping[str, Any], fetches: Sequence[str], timeout: float | None
    ) -> list[np.ndarray]:
        call, _ = self._enqueue(runner, feeds, fetches, timeout, None)
        if call is None:
            return runner.inner(feeds, fetches, timeout=timeout)
        assert isinstance(call, _Call)  # without a loop, never a `_Solo`
        if not call.wait(timeout):
            self._cancel(call)
            call.wait()
        return call.result()

    async def _run_awaited(
        self, runner: BatchingRunner, feeds: Mapping[str, Any], fetches: Sequence[str], timeout: float | None
    ) -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[np.ndarray]] = loop.create_future()
        call, drain_now = self._enqueue(runner, feeds, fetches, timeout, future, loop)
        if call is None:  # nothing to batch: one unbatched step, off the loop
            return await loop.run_in_executor(None, functools.partial(runner.inner, feeds, fetches, timeout))
        if type(call) is _Solo:
            return self._run_solo(runner, call)
        assert isinstance(call, _Call)
        if drain_now is not None:
            self._drain(drain_now)
            if future.done():
                return future.result()
        # At the timeout a call still queued is withdrawn (RESOURCE_EXHAUSTED, as in `_run`); one
        # already running got the remaining time as its own TensorFlow timeout.
        timer = None if timeout is None else loop.call_later(timeout, self._cancel, call)
        try:
            return await future
        except asyncio.CancelledError:
            future.cancel()  # nobody reads its answer now (thrown in, the future may still be live)
            self._cancel(call)  # the caller is gone: its rows need not run
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _enqueue(
        self,
        runner: BatchingRunner,
        feeds: Mapping[str, Any],
        fetches: Sequence[str],
        timeout: float | None,
        future: asyncio.Future[list[np.ndarray]] | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> tuple[_Call | _Solo | None, _Queue | None]:
        """Check one call and put it in its queue: (the call, or None when it is to run unbatched
        (no inputs, or zero rows) as TF Serving runs those, or a `_Solo` for the loop lane to run
        alone at once; the queue for the caller to drain at once, when the loop lane runs it on an
        idle loop)."""
        inputs = {name: np.asarray(value) for name, value in feeds.items()}
        fetch_list = list(fetches)
        if not inputs or not fetch_list:
            return None, None
        size = -1
        for array in inputs.values():
            if array.ndim == 0:
                raise invalid_argument("Batching Run() input tensors must have at least one dimension")
            if size < 0:
                size = array.shape[0]
            elif array.shape[0] != size:
                raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
        self.metrics.input_batch_size.observe(size)
        if size == 0:
            return None, None
        cfg = runner.config
        if size > cfg.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {cfg.max_batch_size}"
            )

        feed_names = tuple(sorted(inputs))
        fetch_order = tuple(sorted(set(fetch_list)))
        # Same-named inputs must agree in dtype, and in dims >= 1 unless they will be padded.
        shapes: tuple[tuple[str, Any], ...]
        if cfg.pad_variable_length_inputs:
            shapes = tuple((inputs[n].dtype.str, inputs[n].ndim) for n in feed_names)
        else:
            shapes = tuple((inputs[n].dtype.str, inputs[n].shape[1:]) for n in feed_names)
        key = (feed_names, fetch_order, shapes)
        if (
            loop is not None
            and size <= cfg.max_execution_batch_size
            and runner.queues.get(key) is None  # nothing of this key waiting or running
            and self._in_loop_lane(cfg, runner, key)
            and _idle(loop)
        ):
            return _Solo(inputs, fetch_list, key, size), None

        now = time.monotonic()
        call = _Call(fetch_list, now, None if timeout is None else now + timeout, future)
        drain_now = None
        with self._cv:
            if self._stopped:
                raise unavailable("The batch scheduler has stopped: the server is shutting down")
            queue = runner.queues.get(key)
            if queue is None:
                queue = _Queue(runner, key, feed_names, fetch_order)
                runner.queues[key] = queue
                self._queues.append(queue)
            try:
                queue.schedule(call, inputs, size, now)
            finally:
                if queue.is_empty():
                    self._drop(queue)
            if queue.loop is not None and queue.loop is loop:
                pass  # a drain is scheduled on this loop: it takes this call too
            elif (
                loop is not None
                and (queue.loop is None or queue.loop.is_closed())  # a closed loop drains nothing
                and self._in_loop_lane(cfg, runner, key)
            ):
                queue.loop = loop
                if _idle(loop):
                    drain_now = queue
                else:
                    loop.call_soon(self._drain, queue)
            elif queue.loop is not None or queue.wants_worker(now):
                # Another loop's drain is due: a batch thread may take the batch first, so that a
                # loop that stops before its drain runs cannot strand the queue.
                self._cv.notify()
        return call, drain_now

    def _in_loop_lane(self, cfg: QueueConfig, runner: BatchingRunner, key: tuple[Any, ...]) -> bool:
        return cfg.timeout_seconds <= 0 and self.loop_step_seconds > 0 and runner.on_loop(key)

    def _run_solo(self, runner: BatchingRunner, solo: _Solo) -> list[np.ndarray]:
        """The loop lane's batch of one call on an idle loop: the step `_process` would run for a
        batch holding only this call (padding, metrics, output checks alike), without the queue,
        future and lock that exist for calls that meet in a batch; none can join this one, since
        the loop runs it now. Half the scheduler's cost of a lone call (26 -> ~12 µs)."""
        if self._stopped:
            raise unavailable("The batch scheduler has stopped: the server is shutting down")
        size = solo.size
        padded = runner.config.padded_size(size)
        feeds = solo.inputs
        if padded > size:  # TF Serving's padding: the first row, repeated
            feeds = {
                name: np.concatenate([a, np.repeat(a[:1], padded - size, axis=0)], axis=0)
                for name, a in feeds.items()
            }
        fetch_order = solo.key[1]
        self.metrics.observe_queuing(self.thread_pool_name, 0.0)
        self.metrics.observe_batch(padded, padded - size)
        started = time.perf_counter()
        outputs = runner.loop_inner(feeds, list(fetch_order), timeout=None)
        runner.record_step(solo.key, time.perf_counter() - started, True, self._loop_limits)
        arrays = _checked_outputs(len(fetch_order), outputs, padded)
        index = {name: i for i, name in enumerate(fetch_order)}
        return [arrays[index[f]][:size] for f in solo.fetches]

    def _cancel(self, call: _Call) -> None:
        """The caller's timeout passed: withdraw the call if no part of it has started running."""
        with self._cv:
            if call.done or any(t.batch is not None and t.batch.taken for t in call.tasks):
                return  # running: its run() got the remaining time as its own timeout
            for task in call.tasks:
                batch = task.batch
                if batch is not None:
                    batch.tasks.remove(task)
                    batch.size -= task.size
                task.finished = True
            for queue in [q for q in self._queues if q.is_empty()]:
                self._drop(queue)
            call.fail(SigserveError(Code.RESOURCE_EXHAUSTED, QUEUE_TIMEOUT_MESSAGE))

    def _drain(self, queue: _Queue) -> None:
        """The loop lane: run, in the event loop's thread, the batches `queue` holds now (what the
        loop read since the drain was scheduled), and complete their futures."""
        outbox: list[_Call] = []
        _worker.outbox = outbox
        try:
            with self._cv:
                queue.loop = None  # calls enqueued from here on schedule the next drain
                count = len(queue.batches)
            for _ in range(count):
                with self._cv:
                    batch = queue.take(time.monotonic(), True)
                    if batch is None:  # a batch thread took it, or its calls were withdrawn
                        if queue.is_empty():
                            self._drop(queue)
                        break
                try:
                    self._process(queue, batch, on_loop=True)
                finally:
                    with self._cv:
                        self._retire(queue, batch)
        finally:
            _worker.outbox = None
            if outbox:
                here = asyncio.get_running_loop()
                mine = [c for c in outbox if c.future is not None and c.future.get_loop() is here]
                _complete(mine)  # this loop's own futures: no wake-up needed
                if len(mine) < len(outbox):
                    _post([c for c in outbox if c.future is None or c.future.get_loop() is not here])

    # -- the worker's side -----------------------------------------------------------------------

    def _drop(self, queue: _Queue) -> None:
        if queue in self._queues:
            index = self._queues.index(queue)
            del self._queues[index]
            if index < self._rr:
                self._rr -= 1
        if queue.owner.queues.get(queue.key) is queue:
            del queue.owner.queues[queue.key]

    def _next_batch(self) -> tuple[_Queue, _Batch] | None:
        """Round-robin over the queues, so one busy model cannot starve another."""
        now = time.monotonic()
        n = len(self._queues)
        for i in range(n):
            queue = self._queues[(self._rr + i) % n]
            batch = queue.take(now, self._stopped)
            if batch is not None:
                self._rr = (self._rr + i + 1) % n
                return queue, batch
        return None

    def _wait_seconds(self) -> float | None:
        deadlines = [d for d in (q.open_deadline() for q in self._queues) if d is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _work(self) -> None:
        done: tuple[_Queue, _Batch] | None = None
        outbox: list[_Call] = []
        _worker.outbox = outbox
        while True:
            with self._cv:
                if done is not None:
                    # Book-keeping for the batch just run and the search for the next one share one
                    # hold of the lock that every enqueueing caller also takes.
                    self._retire(*done)
                    done = None
                got = None
                while not outbox:  # calls that `_retire` failed are posted before any wait
                    got = self._next_batch()
                    if got is not None:
                        break
                    if self._stopped and not self._queues:
                        self._cv.notify_all()
                        return
                    self._cv.wait(self._wait_seconds())
            if outbox:
                _post(outbox[:])
                outbox.clear()
            if got is None:
                continue
            try:
                self._process(*got)
            except BaseException:
                with self._cv:
                    self._retire(*got)
                raise
            finally:
                if outbox:
                    _post(outbox[:])
                    outbox.clear()
            done = got

    def _retire(self, queue: _Queue, batch: _Batch) -> None:
        """A processed batch: fail what somehow got no answer, drop the queue if it is now idle."""
        for task in batch.tasks:
            if not task.finished:
                task.finished = True
                task.call.fail(internal("Batch processing ended without a result for this task"))
        queue.processing -= 1
        if queue.is_empty():
            self._drop(queue)
        if self._stopped:
            self._cv.notify_all()

    def _process(self, queue: _Queue, batch: _Batch, on_loop: bool = False) -> None:
        """Run one taken batch and hand out its rows.

        Once its batch is taken, an unsplit call is touched by this thread only (`_cancel` gives up
        on taken batches), so it is completed without the scheduler lock: callers re-enqueueing
        while a batch is handed out never wait for the hand-out. The parts of a split call may be
        in several batches at once, so those take the lock.

        `on_loop` (the loop lane): the step runs without a TensorFlow deadline, as the event loop's
        inline calls do; the callers' deadlines are checked when their answers arrive.
        """
        now = time.monotonic()
        live: list[_Task] = []
        waited: list[float] = []
        for task in batch.tasks:
            with self._lock_for(task.call):
                call = task.call
                if call.error is not None:  # another part of a split call failed already
                    task.finished = True
                    continue
                waited.append(now - call.enqueued)
                if call.deadline is not None and call.deadline <= now:
                    task.finished = True
                    call.fail(SigserveError(Code.RESOURCE_EXHAUSTED, QUEUE_TIMEOUT_MESSAGE))
                    continue
            live.append(task)
        for seconds in waited:
            self.metrics.observe_queuing(self.thread_pool_name, seconds)
        if not live:
            return
        cfg = queue.config
        size = sum(t.size for t in live)
        padded = cfg.padded_size(size)
        try:
            merged = self._merge(queue, live, size, padded)
            run_timeout = None
            if not on_loop:
                deadlines = [t.call.deadline for t in live]
                if all(d is not None for d in deadlines):
                    run_timeout = max(0.0, max(d for d in deadlines if d is not None) - time.monotonic())
            self.metrics.observe_batch(padded, padded - size)
            owner = queue.owner
            run = owner.loop_inner if on_loop else owner.inner
            started = time.perf_counter()
            outputs = run(merged, list(queue.fetch_order), timeout=run_timeout)
            owner.record_step(queue.key, time.perf_counter() - started, on_loop, self._loop_limits)
            results = self._split(queue, live, outputs, padded)
        except Exception as e:
            for task in live:
                with self._lock_for(task.call):
                    task.finished = True
                    task.call.fail(e)
            return
        for task, result in zip(live, results, strict=True):
            with self._lock_for(task.call):
                task.finished = True
                task.call.finish_part(task.index, result)

    def _lock_for(self, call: _Call) -> contextlib.AbstractContextManager[Any]:
        return self._cv if len(call.tasks) > 1 else _NO_LOCK

    @staticmethod
    def _merge(queue: _Queue, tasks: list[_Task], size: int, padded: int) -> dict[str, np.ndarray]:
        merged: dict[str, np.ndarray] = {}
        for name in queue.feed_names:
            arrays = [t.inputs[name] for t in tasks]
            if queue.config.pad_variable_length_inputs and len(arrays) > 1:
                arrays = _pad_inner_dims(arrays)
            if padded > size:
                # TF Serving pads with the first row of the last task: a row known to be valid input.
                arrays.append(np.repeat(arrays[-1][:1], padded - size, axis=0))
            merged[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        return merged

    @staticmethod
    def _split(
        queue: _Queue, tasks: list[_Task], outputs: Sequence[Any], padded: int
    ) -> list[list[np.ndarray]]:
        arrays = _checked_outputs(len(queue.fetch_order), outputs, padded)
        results = []
        offset = 0
        for task in tasks:
            end = offset + task.size
            results.append([arrays[queue.fetch_index[f]][offset:end] for f in task.call.fetches])
            offset = end
        return results
