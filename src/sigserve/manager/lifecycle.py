"""Servable states and the state monitor behind the status API (tfserving-api.md §1.5, §4 "States").

A version moves START → LOADING → AVAILABLE → UNLOADING → END, or START → LOADING → END when its load
fails (the error is kept), or START → END when it stops being aspired before it was loaded. States
only move forward. The monitor remembers every version it has seen, END included, so
`GetModelStatus` can say that version 3 failed, or that version 1 was unloaded.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from collections.abc import Callable

from sigserve.errors import Code, SigserveError, not_found
from sigserve.protos import get_model_status_pb2

logger = logging.getLogger("sigserve.manager")


class ServableState(enum.IntEnum):
    """`ModelVersionStatus.State` numbers, so a state goes into the status proto unchanged."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclasses.dataclass(frozen=True)
class LoadRequest:
    """What the manager asks its loader to load: version `version` of model `name`, from `path`."""

    name: str
    version: int
    path: str


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
    ) -> None:
        with self._lock:
            self._states.setdefault(name, {})[version] = VersionStatus(state, error)
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

    def get(self, name: str, version: int) -> VersionStatus | None:
        with self._lock:
            return self._states.get(name, {}).get(version)

    def versions(self, name: str) -> dict[int, VersionStatus]:
        with self._lock:
            return dict(self._states.get(name, {}))

    def model_status(
        self, name: str, version: int | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: every version (highest first), or one; NOT_FOUND with TF Serving's texts."""
        with self._lock:
            states = dict(self._states.get(name, {}))
        if not states:
            raise not_found(f"Could not find any versions of model {name}")
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
