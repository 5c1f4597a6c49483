"""Helpers for tests of ServerCore on real SavedModels in temporary base paths: publishing and
dropping versions, a running core with its event log and ManualClock, and status read-outs."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from sigserve.errors import Code, SigserveError
from sigserve.manager import LoadRequest, ServableState, ServerCore
from sigserve.manager import config as manager_config
from sigserve.manager.lifecycle import servable_id

runtime = pytest.importorskip("sigserve.runtime")

S = ServableState
TWO_VERSIONS = "saved_model_half_plus_two_2_versions"
POLL = 0.05  # seconds: short, so that each change is picked up quickly
FAST = {"file_system_poll_wait_seconds": POLL, "max_num_load_retries": 0}
FAIL_FAST_HINT = " (--fail_if_no_model_versions_found makes this fatal)"
POLL_WAIT = "poll"  # the ManualClock reason of the manager thread's wait for its next poll


def retry_wait(name: str, version: int) -> str:
    """The ManualClock reason of a load that failed and waits to be retried."""
    return f"retry {servable_id(name, version)}"


# -- helpers (the other test_manager_* files use them too) -------------------------------------------


def load(request: LoadRequest) -> Any:
    """The production loader: sigserve.runtime.load, as `sigserve serve` calls it."""
    return runtime.load(request.path, name=request.name, version=request.version)


def put_version(base: pathlib.Path, version: int, src: pathlib.Path) -> pathlib.Path:
    """Publish a version the way deployment tools should: copy under a non-numeric name, then rename."""
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".staging-{version}-{uuid.uuid4().hex}"
    shutil.copytree(src, staging)
    for root, dirs, files in os.walk(staging):  # the fixtures are read-only; copies must be removable
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755)
    os.chmod(staging, 0o755)
    target = base / str(version)
    os.rename(staging, target)
    return target


def drop_version(base: pathlib.Path, version: int) -> None:
    """Remove a version atomically (rename away, then delete)."""
    gone = base / f".gone-{version}-{uuid.uuid4().hex}"
    os.rename(base / str(version), gone)
    shutil.rmtree(gone)


def model_config(*models: tuple[str, pathlib.Path], policy: str = "", labels: str = "") -> Any:
    text = "model_config_list {"
    for name, base in models:
        text += f' config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"'
        if policy:
            text += f" model_version_policy {{ {policy} }}"
        text += f" {labels} }}"
    return manager_config.parse(text + " }")


class Events:
    """Every transition the core publishes, with the time it was seen."""

    def __init__(self, core: ServerCore) -> None:
        self.items: list[tuple[float, str, int, ServableState, SigserveError | None]] = []
        self.cond = threading.Condition()
        core.subscribe(self)

    def __call__(self, name: str, version: int, state: ServableState, error: SigserveError | None) -> None:
        with self.cond:
            self.items.append((time.monotonic(), name, version, state, error))
            self.cond.notify_all()

    def find(self, name: str, version: int, state: ServableState, after: int = 0) -> int | None:
        for i, (_, n, v, s, _) in enumerate(self.items[after:], start=after):
            if (n, v, s) == (name, version, state):
                return i
        return None

    def wait(self, name: str, version: int, state: ServableState, timeout: float = 60, after: int = 0) -> int:
        deadline = time.monotonic() + timeout
        with self.cond:
            while (index := self.find(name, version, state, after)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {name}/{version} {state.name} after {timeout}s: {self.states()}"
                    )
                self.cond.wait(left)
            return index

    def states(
        self, name: str | None = None, version: int | None = None
    ) -> list[tuple[str, int, ServableState]]:
        with self.cond:
            return [
                (n, v, s)
                for _, n, v, s, _ in self.items
                if (name is None or n == name) and (version is None or v == version)
            ]

    def error(self, name: str, version: int) -> SigserveError | None:
        with self.cond:
            for _, n, v, _s, e in reversed(self.items):
                if (n, v) == (name, version):
                    return e
        return None


@contextlib.contextmanager
def running(config: Any, *, wait: bool = True, **options: Any) -> Iterator[tuple[ServerCore, Events]]:
    core = ServerCore(config, loader=options.pop("loader", load), **options)
    events = Events(core)
    try:
        core.start(wait=wait)
        yield core, events
    finally:
        core.stop()


def served_version(core: ServerCore, name: str, **spec: Any) -> int:
    with core.handle(name, **spec) as servable:
        y = servable.predict({"x": np.float32([[1.0]])})["y"]
        assert y.tolist() == [[2.5]]
        return int(servable.version)


def wait_until(predicate: Any, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.01)


class Attempts:
    """The production loader, recording each attempt's outcome per version ("ok" or the error)."""

    def __init__(self) -> None:
        self.outcomes: dict[int, list[str]] = {}
        self.cond = threading.Condition()

    def __call__(self, request: LoadRequest) -> Any:
        try:
            servable = load(request)
            outcome = "ok"
            return servable
        except Exception as e:
            outcome = e.to_string() if isinstance(e, SigserveError) else repr(e)
            raise
        finally:
            with self.cond:
                self.outcomes.setdefault(request.version, []).append(outcome)
                self.cond.notify_all()

    def of(self, version: int) -> list[str]:
        with self.cond:
            return list(self.outcomes.get(version, []))


def raises(call: Any, *args: Any, **kwargs: Any) -> SigserveError:
    with pytest.raises(SigserveError) as info:
        call(*args, **kwargs)
    return info.value


def handle_error(core: ServerCore, *args: Any, **kwargs: Any) -> SigserveError:
    """The error `core.handle(...)` raises (never leaving a reference behind if it does not)."""
    with pytest.raises(SigserveError) as info, core.handle(*args, **kwargs):
        pass
    return info.value


def status_of(core: ServerCore, name: str) -> list[tuple[int, str, str, str]]:
    return [
        (s.version, ServableState(s.state).name, Code(s.status.error_code).name, s.status.error_message)
        for s in core.model_status(name).model_version_status
    ]
