"""Budgets on what a peer may make the server do for nothing, per interval (`Limits.budget_interval`):
frames that do no work, and reset streams. Past either, the connection gets GOAWAY(ENHANCE_YOUR_CALM).

Work earns allowance, so that a busy, well-behaved client never meets the limits: each stream opened
and each DATA frame sent allows one more control frame (a client's WINDOW_UPDATEs and PINGs grow with
the data it receives), and each call answered allows one more reset (clients cancel some calls).
Resets are allowed a full set of `max_concurrent_streams` on top: a client that goes away cancels
every call it has in flight at once.
"""

from __future__ import annotations

from sigserve.server.http2.errors import ConnectionFailure
from sigserve.server.http2.frames import ENHANCE_YOUR_CALM
from sigserve.server.http2.limits import Limits


class Budget:
    __slots__ = ("answered", "control", "credits", "end", "limits", "resets")

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.end = now + limits.budget_interval
        self.control = self.resets = 0
        self.credits = 0  # streams opened and DATA frames sent in this interval
        self.answered = 0  # calls answered in this interval

    def roll(self, now: float) -> None:
        """Start a new interval if this one is over (once per read, not per frame)."""
        if now >= self.end:
            self.end = now + self.limits.budget_interval
            self.control = self.resets = self.credits = self.answered = 0

    def control_frame(self) -> None:
        """One more frame that does no work."""
        self.control += 1
        if self.control > self.limits.max_control_frames + self.credits:
            raise ConnectionFailure(ENHANCE_YOUR_CALM, "too many control frames")

    def reset_stream(self) -> None:
        """One more stream reset by the peer, or by this side because of the peer."""
        self.resets += 1
        limits = self.limits
        if self.resets > limits.max_reset_streams + limits.max_concurrent_streams + self.answered:
            raise ConnectionFailure(ENHANCE_YOUR_CALM, "too many reset streams")
