"""Start a coroutine in the caller, up to its first real wait (Python 3.12's eager tasks, for 3.10+).

A request that awaits its batch on an idle event loop usually does not wait at all: the batching
loop lane runs its batch at once, in the caller (`batching/scheduler.py`). As a task it would still
pay for the task, one more loop iteration before its first step, and a wake-up of the front end
after it: at concurrency 1 about a quarter of the request (half_plus_two, 1-row predict, 2 cores).
`start` runs the coroutine now; only one that really suspends becomes a task, which goes on from
where it stopped. 3.12's `asyncio.eager_task_factory` does the same for every task of a loop; this
does it for the calls that ask, and on 3.10 and 3.11 too.

While it runs eagerly, the coroutine is in no task (`asyncio.current_task()` is the caller's, or
None): it must not rely on task-scoped features before its first wait (`asyncio.timeout`,
cancelling itself). The awaited request paths do not.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


def start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """`coro` run until it first suspends: a finished future if it never did, else a task of the rest."""
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
    return loop.create_task(_rest(coro, waiting_on))


async def _rest(coro: Coroutine[Any, Any, T], waiting_on: Any) -> T:
    return await _resumed(coro, waiting_on)  # type: ignore[no-any-return]


@types.coroutine
def _resumed(coro: Coroutine[Any, Any, T], waiting_on: Any) -> Generator[Any, Any, T]:
    """Hand the task driving this what `coro` was waiting on (a future, already marked as awaited,
    or None for a bare yield), then pass what the task sends or throws in back to `coro`."""
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
