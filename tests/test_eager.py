"""`server/eager.py`: a coroutine started in the caller finishes there when it never waits, and goes
on as a task from where it stopped when it does, with its result, exception or cancellation intact."""

from __future__ import annotations

import asyncio

import pytest

from sigserve.server import eager


def test_a_coroutine_that_never_waits_finishes_in_the_caller() -> None:
    steps: list[str] = []

    async def body() -> int:
        steps.append("ran")
        return 7

    async def main() -> None:
        future = eager.start(asyncio.get_running_loop(), body())
        assert steps == ["ran"] and future.done() and future.result() == 7

    asyncio.run(main())


def test_a_coroutine_that_waits_goes_on_as_a_task() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[int] = loop.create_future()
        steps: list[str] = []

        async def body() -> int:
            steps.append("before")
            await asyncio.sleep(0)  # a bare yield
            steps.append("after sleep")
            value = await gate  # a future
            steps.append("after gate")
            return value + 1

        future = eager.start(loop, body())
        assert steps == ["before"] and not future.done()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert steps == ["before", "after sleep"]
        gate.set_result(41)
        assert await future == 42
        assert steps == ["before", "after sleep", "after gate"]

    asyncio.run(main())


def test_exceptions_come_back_through_the_future() -> None:
    async def at_once() -> None:
        raise ValueError("at once")

    async def later() -> None:
        await asyncio.sleep(0)
        raise KeyError("later")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        first = eager.start(loop, at_once())
        assert first.done()
        with pytest.raises(ValueError, match="at once"):
            first.result()
        with pytest.raises(KeyError, match="later"):
            await eager.start(loop, later())

    asyncio.run(main())


def test_cancelling_the_task_reaches_the_coroutine() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[str] = []

        async def body() -> None:
            try:
                await loop.create_future()  # never done
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        future = eager.start(loop, body())
        await asyncio.sleep(0)
        future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await future
        assert seen == ["cancelled"]

    asyncio.run(main())


def test_a_task_cancelled_before_its_first_step_still_cancels_the_coroutine() -> None:
    """An RST_STREAM in the same read as its request cancels the task at once: the coroutine's own
    handlers must see the CancelledError (to withdraw its queued call and count CANCELLED)."""

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        seen: list[str] = []

        async def body() -> None:
            try:
                await loop.create_future()
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        future = eager.start(loop, body())
        future.cancel()  # before the task has taken a step
        with pytest.raises(asyncio.CancelledError):
            await future
        await asyncio.sleep(0)
        return seen

    assert asyncio.run(main()) == ["cancelled"]
