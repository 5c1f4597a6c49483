"""The manager's clock: every wait the manager does (the next poll, a load retry, draining a version,
start-up) goes through one object, so a test can replace real time with `ManualClock` and assert
what happens at a given moment instead of sleeping and hoping nothing happened.

A wait is always on a `threading.Condition` that the caller holds, until a deadline *on this clock*
(or until notified, whichever is first); callers re-check their condition after every wake-up, so a
wake-up without a reason is harmless.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on this clock; only differences mean anything."""
        ...

    def wait(self, cond: threading.Condition, deadline: float | None, reason: str) -> None:
        """Block on `cond` (held by the caller) until it is notified or the clock reads `deadline`
        (None: until notified). `reason` names the wait, e.g. "poll" or "retry {name: m version: 2}"."""
        ...


class SystemClock:
    """Real time (`time.monotonic`)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, cond: threading.Condition, deadline: float | None, reason: str) -> None:
        if deadline is None:
            cond.wait()
        else:
            left = deadline - time.monotonic()
            if left > 0:
                cond.wait(left)


@dataclasses.dataclass(eq=False)
class _Sleeper:
    reason: str
    deadline: float | None
    cond: threading.Condition
    due: bool = False


class ManualClock:
    """A clock that moves only when `advance` is called: timed waits end then, and only then.

    `wait_for_sleeper(reason)` blocks (in real time) until some thread waits with that reason and its
    deadline has not passed, e.g. "the manager has finished its poll and sleeps until the next one".
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._cond = threading.Condition()
        self._now = start
        self._sleepers: list[_Sleeper] = []

    def monotonic(self) -> float:
        with self._cond:
            return self._now

    def wait(self, cond: threading.Condition, deadline: float | None, reason: str) -> None:
        with self._cond:
            if deadline is not None and deadline <= self._now:
                return
            sleeper = _Sleeper(reason, deadline, cond)
            self._sleepers.append(sleeper)
            self._cond.notify_all()
        try:
            # The caller holds `cond` from before the registration until this wait releases it, so
            # advance()'s notify (taken under `cond`) cannot come too early and be lost.
            cond.wait()
        finally:
            with self._cond:
                self._sleepers.remove(sleeper)
                self._cond.notify_all()

    def advance(self, seconds: float) -> None:
        """Move the clock forward and wake every wait whose deadline has come."""
        with self._cond:
            self._now += seconds
            due = [s for s in self._sleepers if s.deadline is not None and s.deadline <= self._now]
            for s in due:
                s.due = True
            self._cond.notify_all()
        for s in due:
            with s.cond:
                s.cond.notify_all()

    def sleepers(self) -> list[tuple[str, float | None]]:
        """(reason, deadline) of each wait in progress whose deadline has not come."""
        with self._cond:
            return [(s.reason, s.deadline) for s in self._sleepers if not s.due]

    def wait_for_sleeper(self, reason: str, timeout: float = 60.0) -> None:
        """Block until a thread waits with `reason` (and not past its deadline); `timeout` is real
        seconds, after which AssertionError says who is waiting instead."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: any(s.reason == reason and not s.due for s in self._sleepers), timeout
            ):
                waiting = [s.reason for s in self._sleepers if not s.due]
                raise AssertionError(f"nothing waits for {reason!r} after {timeout}s; waiting: {waiting}")
