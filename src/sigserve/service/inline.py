"""Which predict calls take the short path: on the event loop instead of a thread pool (REST and
gRPC alike), with TensorFlow running the step's ops in the loop's own thread.

Handing a request to the pool and back is two thread wake-ups and two GIL hand-offs. For a model
whose TensorFlow call takes tens of µs that hop is the largest part of a request. Measured with wrk
on the 2-core benchmark machine (1-row predict on half_plus_two, asyncio's loop, medians of 3
interleaved rounds), the same server with every call in the pool vs on the loop:

    concurrency 1:  1,862 vs 3,151 req/s, p50 0.53 vs 0.31 ms, server CPU 571 vs 368 µs/request
    concurrency 8:  2,756 vs 3,455 req/s, p50 2.86 vs 2.15 ms, server CPU 458 vs 344 µs/request
    concurrency 64: 3,328 vs 3,861 req/s, p99 31 vs 23 ms,     server CPU 360 vs 313 µs/request

On the loop, the call also goes without a TensorFlow deadline: TF's DirectSession then runs the step
synchronously instead of on its deadline path (1-row half_plus_two: p50 21-29 µs against 50 µs), and
in the calling thread (`Servable.predict(in_caller_thread=True)`), so no op is handed to TensorFlow's
inter-op pool and back. With wrk (3 interleaved rounds, medians) that took server CPU from 332 / 354
/ 311 to 234 / 175 / 174 µs/request at concurrency 1 / 8 / 64, and req/s at concurrency 64 from 3,819
to 5,737.

One `InlinePolicy` belongs to the `PredictionService` (`service/prediction.py`) that every front end
calls: a small request on a qualifying route runs on the loop the same way whichever protocol carried
it, its deadline checked when the step returns. The price, in every front end: a step of a route
that was fast until now cannot be cancelled at the deadline, only answered 504 / DEADLINE_EXCEEDED
after it (a call without a fast history runs in the pool with TensorFlow's deadline, which cancels
the step, as TF Serving does).

A call on the loop stalls every other connection while it runs, so only calls known to be short go
there. A *route* (model, version or label, signature) runs inline when:

* it has a history on the same Servable object: the fastest of its last `WINDOW` pool calls took
  under `max_runtime` (150 µs: about what the hop costs here, 50-200 µs of CPU a request, so the
  pool could not win back more than it costs). A new version starts again in the pool;
* the Servable runs its steps in the caller (`Servable.runs_in_caller`; not behind a batching
  runner, which waits for a batch that other requests, read by this same loop, would have to fill);
* the caller also requires a small request (`max_body`; over REST, not gzipped) and a timeout no
  tighter than `min_timeout`: a call on the loop cannot be abandoned, only answered 504 /
  DEADLINE_EXCEEDED once it returns.

It goes back to the pool when the median of a window of loop calls reaches twice `max_runtime`, or at
once when one loop call takes over `stall_limit` (10 ms): a model that got slower stalls the loop for
at most one window, and one call preempted by the OS does not move a fast model.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from sigserve.interfaces import Servable

Route = tuple[str, "int | None", "str | None", str]

WINDOW = 16
_MAX_ROUTES = 1024


class _History:
    __slots__ = ("inline", "samples", "servable")

    def __init__(self, servable: Servable) -> None:
        self.servable = weakref.ref(servable)
        self.inline = False
        self.samples: list[float] = []


class InlinePolicy:
    """Per-route runtime history. `record` is called from pool threads and the loop: the updates are
    plain attribute writes and list appends under the GIL; a lost sample only delays a decision."""

    def __init__(
        self,
        *,
        max_runtime: float = 150e-6,
        stall_limit: float = 10e-3,
        min_timeout: float = 10e-3,
        max_body: int = 4096,
        max_awaited_body: int = 65536,
        enabled: bool = True,
    ) -> None:
        self.max_runtime = max_runtime
        self.stall_limit = stall_limit
        self.min_timeout = min_timeout
        self.max_body = max_body
        # Batching on: requests up to this many bytes are parsed on the loop and await their batch
        # there (a 1-row JSON request of a few thousand floats); larger ones take the pool as before.
        self.max_awaited_body = max_awaited_body
        self.enabled = enabled
        self._routes: dict[Route, _History] = {}

    def allows_timeout(self, timeout: float | None) -> bool:
        return self.enabled and (timeout is None or timeout >= self.min_timeout)

    def likely(self, route: Route) -> bool:
        """Cheap check before the servable is known: the route ran inline last time."""
        history = self._routes.get(route)
        return history is not None and history.inline

    def allows(self, route: Route, servable: Servable) -> bool:
        """The decision proper, once the handle has resolved the servable."""
        history = self._routes.get(route)
        return history is not None and history.inline and history.servable() is servable

    def predict(
        self,
        route: Route | None,
        servable: Servable,
        inputs: Mapping[str, Any],
        *,
        signature_name: str,
        output_filter: Sequence[str] | None = None,
        timeout: float | None,
        inline: bool,
    ) -> tuple[dict[str, Any], float]:
        """`servable.predict` on the side the caller is on, recorded in `route`'s history (None: not
        a route with a history): (outputs, seconds). On the loop (`inline`) the step runs in this
        thread without a TensorFlow deadline; the caller checks `timeout` against the seconds."""
        started = time.perf_counter()
        if inline:
            outputs = servable.predict(
                inputs, signature_name=signature_name, output_filter=output_filter, in_caller_thread=True
            )
        else:
            outputs = servable.predict(
                inputs, signature_name=signature_name, output_filter=output_filter, timeout=timeout
            )
        seconds = time.perf_counter() - started
        if route is not None:
            self.record(route, servable, seconds, inline)
        return outputs, seconds

    def record(self, route: Route, servable: Servable, seconds: float, inline: bool) -> None:
        """One completed TensorFlow call on `route` that took `seconds` (wall time), on the loop
        (`inline`) or in the pool."""
        history = self._routes.get(route)
        if history is None or history.servable() is not servable:
            if len(self._routes) >= _MAX_ROUTES:
                self._routes.clear()
            history = self._routes[route] = _History(servable)
        if inline != history.inline:  # in flight while the route changed sides
            return
        if inline and seconds > self.stall_limit:
            self._switch(history, False)
            return
        samples = history.samples
        samples.append(seconds)
        if len(samples) < WINDOW:
            return
        ordered = sorted(samples)
        if inline:
            # The median: one call preempted by the OS (milliseconds on a busy machine) does not
            # send a fast model back to the pool, a model that got slow does within one window.
            # Twice the promotion bound, so that a model near it does not flap between the sides.
            self._switch(history, ordered[len(ordered) // 2] < 2 * self.max_runtime)
        else:
            # The fastest: pool timings include waiting for the GIL behind the other pool threads
            # and TensorFlow's deadline path, so the quickest of them is the fair estimate.
            self._switch(history, ordered[0] < self.max_runtime and servable.runs_in_caller)

    @staticmethod
    def _switch(history: _History, inline: bool) -> None:
        history.samples = []
        history.inline = inline
