"""grpc.health.v1.Health (`--enable_grpc_healthcheck_service`) for both gRPC transports: one
implementation in the method table, Check unary and Watch streaming.

What a status means:

* `""`, `PredictionService`, `ModelService` and their full names (TF Serving's names), and the Open
  Inference Protocol's `inference.GRPCInferenceService`: the server is ready, by the rule of REST's
  `/readyz` (`PredictionService.readiness()`: start-up done and every configured model has an
  AVAILABLE version). So a model added by a reload turns them NOT_SERVING until it has loaded, and
  they are NOT_SERVING from the start of a shutdown;
* a model name: SERVING when it has an AVAILABLE version, NOT_SERVING while it has none (loading, or
  failed), unknown when it is not configured;
* anything else is unknown: Check answers NOT_FOUND (as grpcio's servicer does) and Watch
  SERVICE_UNKNOWN.

Watch sends the status at once and again each time it changes. Changes are noticed from the model
manager's state transitions (`ModelManager.subscribe`) and, for those no transition announces (the end
of start-up), by looking again every `RECHECK_SECONDS`. At shutdown every Watch gets NOT_SERVING and
ends UNAVAILABLE, so that watchers never hold up the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

from sigserve.errors import Code, SigserveError, invalid_argument, not_found
from sigserve.server.grpc_methods import Method, StreamMethod
from sigserve.service import CallContext, ModelSpec, PredictionService

SERVICE = "grpc.health.v1.Health"
RECHECK_SECONDS = 1.0

# HealthCheckResponse.ServingStatus
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3


class HealthService:
    def __init__(self, service: PredictionService, server_names: Iterable[str]) -> None:
        self._service = service
        self._server_names = frozenset(server_names)
        self._shutting_down = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._watchers = 0
        service.manager.subscribe(self._on_transition)

    # -- statuses ----------------------------------------------------------------------------------

    def status(self, service: str) -> int | None:
        """The service's ServingStatus, or None if it is not one health knows."""
        if service in self._server_names:
            return SERVING if not self._shutting_down and self._service.readiness().ready else NOT_SERVING
        if service not in self._service.manager.model_names():
            return None
        if self._shutting_down:
            return NOT_SERVING
        return SERVING if self._service.model_ready(ModelSpec(service)) else NOT_SERVING

    def _on_transition(self, *_: object) -> None:
        """A model version changed state (called in the manager's threads)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    async def _next_change(self) -> None:
        """Until a state transition, a shutdown, or RECHECK_SECONDS."""
        self._loop = asyncio.get_running_loop()
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), RECHECK_SECONDS)

    async def shutdown(self, seconds: float = 2.0) -> None:
        """The server is stopping: every status is NOT_SERVING, and every Watch sends it and ends
        (waited for up to `seconds`, before the transport starts refusing and closing streams)."""
        self._shutting_down = True
        self._notify()
        deadline = asyncio.get_running_loop().time() + seconds
        while self._watchers and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    # -- the RPCs ----------------------------------------------------------------------------------

    def check(self, data: bytes, ctx: CallContext | None = None) -> bytes:
        status = self.status(_service_of(data))
        if status is None:
            raise not_found(f"unknown service {_service_of(data)!r}")
        return _response(status)

    async def watch(self, requests: AsyncIterator[bytes], ctx: CallContext) -> AsyncIterator[bytes]:
        service = ""
        async for data in requests:
            service = _service_of(data)
        sent: int | None = -1
        self._watchers += 1
        try:
            while True:
                status = self.status(service)
                if status != sent:
                    sent = status
                    yield _response(SERVICE_UNKNOWN if status is None else status)
                if self._shutting_down:
                    raise SigserveError(Code.UNAVAILABLE, "The server is shutting down")
                await self._next_change()
        finally:
            self._watchers -= 1

    def methods(self) -> dict[str, Method | StreamMethod]:
        return {
            "Check": Method(self.check, self.check, api="Check"),
            "Watch": StreamMethod(self.watch, api="Watch"),
        }


def _service_of(data: bytes) -> str:
    from grpc_health.v1 import health_pb2

    try:
        return str(health_pb2.HealthCheckRequest.FromString(data).service)
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        raise invalid_argument(f"Could not parse a HealthCheckRequest: {e}") from None


def _response(status: int) -> bytes:
    from grpc_health.v1 import health_pb2

    return bytes(health_pb2.HealthCheckResponse(status=status).SerializeToString())
