"""grpc.health.v1.Health (`--enable_grpc_healthcheck_service`) for both gRPC transports: one
implementation in the method table, Check unary and Watch streaming.

What a status means:

* `""`, `PredictionService`, `ModelService` and their full names (TF Serving's names): the server is
  ready, by the rule of REST's `/readyz` (`ServerCore.ready()`: start-up done and every configured
  model has an AVAILABLE version). So a model added by a reload turns them NOT_SERVING until it has
  loaded, and they are NOT_SERVING from the start of a shutdown;
* a model name: SERVING when it has an AVAILABLE version, NOT_SERVING while it has none (loading, or
  failed), unknown when it is not configured;
* anything else is unknown: Check answers NOT_FOUND (as grpcio's servicer does) and Watch
  SERVICE_UNKNOWN.

Watch sends the status at once and again each time it changes. Changes are noticed from the model
manager's state transitions (`ServerCore.subscribe`) and, for those no transition announces (the end
of start-up), by looking again every `RECHECK_SECONDS`. At shutdown every Watch gets NOT_SERVING and
ends UNAVAILABLE, so that watchers never hold up the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

from sigserve.errors import Code, SigserveError, invalid_argument, not_found
from sigserve.server.grpc_methods import Method, StreamMethod

SERVICE = "grpc.health.v1.Health"
RECHECK_SECONDS = 1.0

# HealthCheckResponse.ServingStatus
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3


class Core(Protocol):
    """What health needs of `sigserve.manager.ServerCore`."""

    def ready(self) -> bool: ...

    def model_names(self) -> list[str]: ...

    def model_status(self, name: str, version: int | None = None) -> Any: ...

    def subscribe(self, callback: Any) -> None: ...


class HealthService:
    def __init__(self, core: Core, server_names: Iterable[str]) -> None:
        self._core = core
        self._server_names = frozenset(server_names)
        self._shutting_down = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        core.subscribe(self._on_transition)

    # -- statuses ----------------------------------------------------------------------------------

    def status(self, service: str) -> int | None:
        """The service's ServingStatus, or None if it is not one health knows."""
        if service in self._server_names:
            return SERVING if not self._shutting_down and self._core.ready() else NOT_SERVING
        if service not in self._core.model_names():
            return None
        if self._shutting_down:
            return NOT_SERVING
        try:
            versions = self._core.model_status(service).model_version_status
        except SigserveError:
            return NOT_SERVING
        from sigserve.protos import get_model_status_pb2

        available = get_model_status_pb2.ModelVersionStatus.State.Value("AVAILABLE")
        return SERVING if any(v.state == available for v in versions) else NOT_SERVING

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

    def shutdown(self) -> None:
        """The server is stopping: every status is NOT_SERVING and every Watch ends."""
        self._shutting_down = True
        self._notify()

    # -- the RPCs ----------------------------------------------------------------------------------

    def check(self, data: bytes, timeout: float | None = None) -> bytes:
        status = self.status(_service_of(data))
        if status is None:
            raise not_found(f"unknown service {_service_of(data)!r}")
        return _response(status)

    async def watch(self, requests: AsyncIterator[bytes], timeout: float | None) -> AsyncIterator[bytes]:
        service = ""
        async for data in requests:
            service = _service_of(data)
        sent: int | None = -1
        while True:
            status = self.status(service)
            if status != sent:
                sent = status
                yield _response(SERVICE_UNKNOWN if status is None else status)
            if self._shutting_down:
                raise SigserveError(Code.UNAVAILABLE, "The server is shutting down")
            await self._next_change()

    def methods(self) -> dict[str, Method | StreamMethod]:
        return {"Check": Method(self.check, self.check), "Watch": StreamMethod(self.watch)}


def _service_of(data: bytes) -> str:
    from grpc_health.v1 import health_pb2

    try:
        return str(health_pb2.HealthCheckRequest.FromString(data).service)
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        raise invalid_argument(f"Could not parse a HealthCheckRequest: {e}") from None


def _response(status: int) -> bytes:
    from grpc_health.v1 import health_pb2

    return bytes(health_pb2.HealthCheckResponse(status=status).SerializeToString())
