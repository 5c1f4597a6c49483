"""What the manager loads (`LoadRequest`, `Loader`, `ManagedServable`) and the state monitor behind the
status API (tfserving-api.md §1.5, §4 "States").

The states and their legal transitions are in `states.py`; the monitor checks each transition it is
given against them and refuses (and logs) an illegal one. It remembers every version it has seen,
END included, so `GetModelStatus` can say that version 3 failed, or that version 1 was unloaded.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from sigserve.errors import Code, SigserveError, not_found
from sigserve.manager.states import IllegalTransition, ServableState, check_transition
from sigserve.protos import get_model_status_pb2

logger = logging.getLogger("sigserve.manager")

__all__ = [
    "LoadObserver",
    "LoadRequest",
    "Loader",
    "ManagedServable",
    "ServableState",
    "StateMonitor",
    "Subscriber",
    "servable_id",
]


@dataclasses.dataclass(frozen=True)
class LoadRequest:
    """What the manager asks its loader to load: version `version` of model `name`, from `path`, a
    local directory (a version on an object store is downloaded to the model cache first)."""

    name: str
    version: int
    path: str


class ManagedServable(Protocol):
    """What the manager needs of a loaded version: replay warmup requests on it (`warmup.py`) and
    close it when it unloads. `sigserve.runtime.Servable` is one."""

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str | None = None,
        output_filter: Sequence[str] | None = None,
    ) -> Mapping[str, Any]: ...

    def classify(self, input: Any, signature_name: str | None = None) -> Any: ...

    def regress(self, input: Any, signature_name: str | None = None) -> Any: ...

    def multi_inference(self, request: Any) -> Any: ...

    def close(self) -> None: ...


class LoadObserver(Protocol):
    """Told how long each stage of a successful load took: "download" (a version staged from an
    object store; `nbytes` downloaded) and "load" (the loader and warmup). `path` is where the
    version lives (its URI for a store)."""

    def observe_load(
        self, *, name: str, version: int, path: str, stage: str, seconds: float, nbytes: int = 0
    ) -> None: ...


S_co = TypeVar("S_co", bound=ManagedServable, covariant=True)


class Loader(Protocol[S_co]):
    """Loads one version, or raises (a `SigserveError` is kept as the version's error; anything else
    becomes UNKNOWN). Called on a load thread; may take minutes."""

    def __call__(self, request: LoadRequest, /) -> S_co: ...


def servable_id(name: str, version: int) -> str:
    """TF Serving's `ServableId::DebugString()`, used in its log lines and start-up error."""
    return f"{{name: {name} version: {version}}}"


Subscriber = Callable[[str, int, ServableState, "SigserveError | None"], None]


@dataclasses.dataclass
class VersionStatus:
    state: ServableState
    error: SigserveError | None


class StateMonitor:
    """Every version's last state, and the subscribers that see each transition in order.

    Transitions are published under one re-entrant lock, so subscribers see them in the order the
    monitor recorded them, and a subscriber may itself read the monitor.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._states: dict[str, dict[int, VersionStatus]] = {}
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def publish(
        self, name: str, version: int, state: ServableState, error: SigserveError | None = None
    ) -> bool:
        """Record a transition and tell the subscribers. An illegal transition (`states.TRANSITIONS`)
        is logged and refused: nothing is recorded or told, and the result is False."""
        with self._lock:
            versions = self._states.setdefault(name, {})
            old = versions.get(version)
            try:
                check_transition(servable_id(name, version), old.state if old else None, state)
            except IllegalTransition:
                return False
            versions[version] = VersionStatus(state, error)
            where = {"model": name, "version": version}  # fields of --log_format=json
            if error is not None:
                logger.error(
                    "%s %s: %s", servable_id(name, version), state.name, error.to_string(), extra=where
                )
            else:
                logger.info("%s %s", servable_id(name, version), state.name, extra=where)
            for callback in self._subscribers:
                try:
                    callback(name, version, state, error)
                except Exception:
                    logger.exception("A servable state subscriber failed")
        return True

    def get(self, name: str, version: int) -> VersionStatus | None:
        with self._lock:
            return self._states.get(name, {}).get(version)

    def versions(self, name: str) -> dict[int, VersionStatus]:
        with self._lock:
            return dict(self._states.get(name, {}))

    def model_status(
        self, name: str, version: int | None = None, problem: str = ""
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: every version (highest first), or one; NOT_FOUND with TF Serving's texts.
        `problem` (why the model's base path shows no versions) follows TF Serving's text when the
        model has none."""
        with self._lock:
            states = dict(self._states.get(name, {}))
        if not states:
            detail = f"; {problem}" if problem else ""
            raise not_found(f"Could not find any versions of model {name}{detail}")
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            states = {version: states[version]}
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in sorted(states, reverse=True):
            status = states[v]
            entry = response.model_version_status.add()
            entry.version = v
            entry.state = int(status.state)  # type: ignore[assignment]
            if status.error is not None:
                entry.status.error_code = int(status.error.code)  # type: ignore[assignment]
                entry.status.error_message = status.error.message
            else:
                entry.status.error_code = int(Code.OK)  # type: ignore[assignment]
        return response
