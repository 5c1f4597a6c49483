"""Start a coroutine in the caller, up to its first real wait (Python 3.12's eager tasks, for 3.10+).

A request that awaits its batch on an idle event loop usually does not wait at all: the batching
loop lane runs its batch at once, in the caller (`batching/scheduler.py`). As a task it would still
pay for the task, one more loop iteration before its first step, and a wake-up of the front end
after it: at concurrency 1 about a quarter of the request (half_plus_two, 1-row predict, 2 cores).
`start` runs the coroutine now; only one that really suspends becomes a task, which goes on from
where it stopped. 3.12's `asyncio.eager_task_factory` does the same for every task of a loop; this
does it for the calls that ask, and on 3.10 and 3.11 too.

On Python 3.12+ this is `asyncio.Task(..., eager_start=True)`. Before, while it runs eagerly the
coroutine is in no task (`asyncio.current_task()` is the caller's, or None), so it must not rely on
task-scoped features before its first wait (`asyncio.timeout`; on 3.10/3.11 `wait_for` needs no
task); a task cancelled before its first step still delivers the cancellation to the coroutine.
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


def start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """`coro` run until it first suspends: a finished future if it never did, else a task of the rest."""
    if sys.version_info >= (3, 12):  # the real thing: the coroutine runs in its own task throughout
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    try:
        waiting_on = coro.send(None)
    except StopIteration as stop:
        done: asyncio.Future[T] = loop.create_future()
        done.set_result(stop.value)
        return done
    except Exception as e:  # BaseException (KeyboardInterrupt, SystemExit) goes on up, as from a call
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(e)
        return failed
    started: list[bool] = []
    task = loop.create_task(_rest(coro, waiting_on, started))
    task.add_done_callback(lambda t: _cancelled_early(t, coro, started))
    return task


def _cancelled_early(task: asyncio.Task[Any], coro: Coroutine[Any, Any, Any], started: list[bool]) -> None:
    """A task cancelled before its first step never runs `_resumed`: the cancellation is thrown into
    `coro` here, so that its handlers run (withdraw a queued call, count CANCELLED) as they would in
    a task of its own, instead of a `GeneratorExit` when it is collected."""
    if started or not task.cancelled():
        return
    try:
        coro.throw(asyncio.CancelledError())
    except BaseException:  # CancelledError, as expected, or whatever its handlers raised
        pass
    finally:
        coro.close()


async def _rest(coro: Coroutine[Any, Any, T], waiting_on: Any, started: list[bool]) -> T:
    return await _resumed(coro, waiting_on, started)  # type: ignore[no-any-return]


@types.coroutine
def _resumed(coro: Coroutine[Any, Any, T], waiting_on: Any, started: list[bool]) -> Generator[Any, Any, T]:
    """Hand the task driving this what `coro` was waiting on (a future, already marked as awaited,
    or None for a bare yield), then pass what the task sends or throws in back to `coro`."""
    started.append(True)
    while True:
        try:
            sent = yield waiting_on
        except BaseException as e:  # cancellation, thrown in by the task
            try:
                waiting_on = coro.throw(e)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
