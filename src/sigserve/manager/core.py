"""`ServerCore`: the model manager of `sigserve serve` (tfserving-api.md §4; docs/architecture.md,
`sigserve.manager`).

One background thread polls each model's base path, turns what is on disk into aspired versions
(version policy), and takes the next availability-preserving action per model. Loads and unloads run
on their own threads, so a slow load of one model never holds up another model, a poll, or a request.

The request path is `handle()`: one lock-protected dict lookup and a reference count. A version that is
unloading leaves the serving map at once (new requests go elsewhere) and is closed only when the last
request holding it has finished.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sigserve.errors import Code, SigserveError, not_found
from sigserve.logformat import log_context
from sigserve.manager import config as config_module
from sigserve.manager import labels as labels_module
from sigserve.manager import policy as policy_module
from sigserve.manager import source, warmup
from sigserve.manager.lifecycle import LoadRequest, ServableState, StateMonitor, Subscriber, servable_id
from sigserve.protos import get_model_status_pb2, model_server_config_pb2

logger = logging.getLogger("sigserve.manager")

Loader = Callable[[LoadRequest], Any]
_Event = tuple[str, int, ServableState, "SigserveError | None"]
_WAIT_SLICE = 0.25  # seconds; waits re-check their condition at least this often


class _Version:
    """One version the manager tracks (aspired now, or still loaded)."""

    __slots__ = (
        "aspired",
        "draining",
        "error",
        "name",
        "path",
        "refs",
        "reported",
        "servable",
        "state",
        "version",
    )

    def __init__(self, name: str, version: int, path: str) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.state = ServableState.START
        self.error: SigserveError | None = None
        self.aspired = True
        self.servable: Any = None
        self.refs = 0
        self.draining = False
        # The last state subscribers and the status API have been told of: waiters return only once
        # GetModelStatus agrees with them.
        self.reported = ServableState.START


class _Model:
    """A configured model (or one removed from the config whose versions are still unloading)."""

    def __init__(self, config: Any) -> None:
        self.name: str = config.name
        self.config = config
        self.configured = True
        self.polled = False
        self.versions: dict[int, _Version] = {}
        self.serving: dict[int, _Version] = {}
        self.latest: _Version | None = None
        self.busy = False
        self.last_poll_problem = ""

    def update_latest(self) -> None:
        self.latest = self.serving[max(self.serving)] if self.serving else None


class ServableHandle:
    """`with core.handle(name) as servable:` — holds the version loaded until the block ends."""

    __slots__ = ("_core", "_entry", "_label", "_name", "_version")

    def __init__(self, core: ServerCore, name: str, version: int | None, label: str | None) -> None:
        self._core = core
        self._name = name
        self._version = version
        self._label = label
        self._entry: _Version | None = None

    def __enter__(self) -> Any:
        self._entry = self._core._acquire(self._name, self._version, self._label)
        return self._entry.servable

    def __exit__(self, *exc: object) -> None:
        entry = self._entry
        if entry is not None:
            self._entry = None
            self._core._release(entry)


def _as_error(e: BaseException) -> SigserveError:
    if isinstance(e, SigserveError):
        return e
    return SigserveError(Code.UNKNOWN, f"{type(e).__name__}: {e}")


def _close(servable: Any) -> None:
    try:
        servable.close()
    except Exception:
        logger.exception("Error while closing %r", servable)


class ServerCore:
    """Serves the models of a `ModelServerConfig` (TF Serving's `ServerCore`).

    `loader(LoadRequest)` returns a loaded Servable or raises (`sigserve serve` passes one that calls
    `sigserve.runtime.load`). `file_system_poll_wait_seconds`: how often base paths are listed
    (0 or negative: once at start, and again on each `reload_config`). A failed load is retried
    `max_num_load_retries` times, `load_retry_interval_micros` apart, then the version ends in END with
    its error, and the versions already serving keep serving.
    """

    def __init__(
        self,
        config: Any,
        *,
        loader: Loader,
        file_system_poll_wait_seconds: float = 1.0,
        max_num_load_retries: int = 5,
        load_retry_interval_micros: int = 60_000_000,
        enable_model_warmup: bool = True,
        num_request_iterations_for_warmup: int = 0,
        allow_version_labels_for_unavailable_models: bool = False,
    ) -> None:
        self._config = model_server_config_pb2.ModelServerConfig()
        self._config.CopyFrom(config)
        models = config_module.model_configs(self._config)
        self._loader = loader
        self._poll_period = float(file_system_poll_wait_seconds)
        self._max_retries = max(0, int(max_num_load_retries))
        self._retry_interval = max(0, int(load_retry_interval_micros)) / 1e6
        self._warmup = bool(enable_model_warmup)
        self._warmup_iterations = warmup.iterations(int(num_request_iterations_for_warmup))
        self._allow_unavailable_labels = bool(allow_version_labels_for_unavailable_models)

        self._monitor = StateMonitor()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # state changes, reference counts
        self._config_lock = threading.Lock()  # one start / reload at a time
        self._models: dict[str, _Model] = {m.name: _Model(_copy(m)) for m in models}
        self._labels: labels_module.LabelMap = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._poll_requested = True
        self._started = False  # start-up has settled: models available, labels assigned
        self._thread: threading.Thread | None = None
        self._actions: set[threading.Thread] = set()
        slots = max(1, min(16, 4 * (os.cpu_count() or 1)))
        self._load_slots = threading.BoundedSemaphore(slots)

    # -- the contract ----------------------------------------------------------------------------

    def start(self, wait: bool = True) -> None:
        """Start polling and loading. With `wait`, block until every configured model has an AVAILABLE
        version (and every labelled version has loaded or failed), then assign the labels.

        A model all of whose aspired versions failed to load is UNKNOWN
        "<k> model(s) did not become available: {...}" (TF Serving's start-up failure). A model with no
        version on disk yet is waited for, as TF Serving does.
        """
        with self._config_lock:
            if self._stopping.is_set():
                raise SigserveError(Code.CANCELLED, "The model manager was stopped")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sigserve-manager", daemon=True)
                self._thread.start()
            names = [name for name, m in self._models.items() if m.configured]
        if wait:
            self._settle(names, [])
            self._started = True
        else:
            threading.Thread(
                target=self._settle_in_background, args=(names,), name="sigserve-start", daemon=True
            ).start()

    def handle(self, name: str, version: int | None = None, label: str | None = None) -> ServableHandle:
        """A context manager yielding the Servable for a ModelSpec: `version`, else `label`, else the
        latest AVAILABLE version. NOT_FOUND "Servable not found for request: Latest(<name>)" /
        "Specific(<name>, <version>)"; INVALID_ARGUMENT "Unrecognized servable version label: <label>"."""
        return ServableHandle(self, name, version, label)

    def model_status(
        self, name: str, version: int | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus (§1.5): every version ever seen, highest first, END ones with their error."""
        return self._monitor.model_status(name, version)

    def reload_config(self, config: Any) -> None:
        """Serve exactly the models of `config` from now on (HandleReloadConfigRequest, or a changed
        `--model_config_file`). Blocks until the new models are AVAILABLE and the dropped ones are out
        of service, then assigns the new labels."""
        new = model_server_config_pb2.ModelServerConfig()
        new.CopyFrom(config)
        with self._config_lock:
            config_module.check_transition(self._config, new)
            if new.WhichOneof("config") is None:
                logger.info("Taking no action for empty config.")
                return
            models = config_module.model_configs(new)
            new_names = [m.name for m in models]
            with self._lock:
                old_names = {name for name, m in self._models.items() if m.configured}
                for m in models:
                    existing = self._models.get(m.name)
                    if existing is None:
                        self._models[m.name] = _Model(_copy(m))
                    else:
                        existing.config = _copy(m)
                        existing.configured = True
                        existing.polled = False
                removed = sorted(old_names - set(new_names))
                for name in removed:
                    model = self._models[name]
                    model.configured = False
                    for entry in model.versions.values():
                        entry.aspired = False
                    logger.info("Removing model %s: it is not in the new config", name)
                self._labels = {k: v for k, v in self._labels.items() if k in new_names}
                self._config = new
                self._poll_requested = True
                started = self._thread is not None
                self._changed.notify_all()
            self._wake.set()
            if started:
                added = [n for n in new_names if n not in old_names]
                self._settle(added, removed, relabel=new_names)

    def ready(self) -> bool:
        """Start-up has finished (labels included) and every configured model has an AVAILABLE version."""
        with self._lock:
            if not self._started or self._stopping.is_set():
                return False
            return all(m.serving for m in self._models.values() if m.configured)

    def stop(self) -> None:
        """Stop polling, wait for loads in progress, and unload every version (after its in-flight
        requests finish)."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            self._changed.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        while True:
            with self._lock:
                actions = [t for t in self._actions if t is not threading.current_thread()]
            if not actions:
                break
            for t in actions:
                t.join()
        with self._lock:
            entries = [e for m in self._models.values() for e in m.serving.values()]
            for e in entries:
                e.state = ServableState.UNLOADING
        for entry in sorted(entries, key=lambda e: (e.name, e.version)):
            self._monitor.publish(entry.name, entry.version, ServableState.UNLOADING)
            self._retire(entry, timeout=30.0)
            self._monitor.publish(entry.name, entry.version, ServableState.END)

    def subscribe(self, callback: Subscriber) -> None:
        """`callback(name, version, state, error | None)` on every state transition, in order."""
        self._monitor.subscribe(callback)

    # -- extras ----------------------------------------------------------------------------------

    @property
    def config(self) -> Any:
        """The ModelServerConfig now served (a copy)."""
        with self._config_lock:
            copy = model_server_config_pb2.ModelServerConfig()
            copy.CopyFrom(self._config)
            return copy

    def model_names(self) -> list[str]:
        with self._lock:
            return [name for name, m in self._models.items() if m.configured]

    def labels(self, name: str) -> dict[str, int]:
        with self._lock:
            return dict(self._labels.get(name, {}))

    # -- the request path ------------------------------------------------------------------------

    def _acquire(self, name: str, version: int | None, label: str | None) -> _Version:
        with self._lock:
            if version is None and label is not None:
                version = labels_module.lookup(self._labels, name, label)
            model = self._models.get(name)
            if version is None:
                entry = model.latest if model is not None else None
                if entry is None:
                    raise not_found(f"Servable not found for request: Latest({name})")
            else:
                entry = model.serving.get(version) if model is not None else None
                if entry is None:
                    raise not_found(f"Servable not found for request: Specific({name}, {version})")
            entry.refs += 1
            return entry

    def _release(self, entry: _Version) -> None:
        with self._lock:
            entry.refs -= 1
            if entry.draining and entry.refs <= 0:
                self._changed.notify_all()

    # -- the manager thread ----------------------------------------------------------------------

    def _run(self) -> None:
        next_poll = 0.0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                with self._lock:
                    requested = self._poll_requested
                    self._poll_requested = False
                now = time.monotonic()
                if requested or (self._poll_period > 0 and now >= next_poll):
                    self._poll()
                    next_poll = time.monotonic() + self._poll_period
                self._step()
            except Exception:
                # A bug must not end polling for good: log it and go on with the next round.
                logger.exception("Error in the model manager thread")
                self._stopping.wait(1.0)
                continue
            timeout = max(0.0, next_poll - time.monotonic()) if self._poll_period > 0 else None
            self._wake.wait(timeout)

    def _poll(self) -> None:
        """List every configured model's base path and update its aspired versions."""
        with self._lock:
            targets = [(m, m.config) for m in self._models.values() if m.configured]
        results: list[tuple[_Model, Any, dict[int, str]]] = []
        for model, cfg in targets:
            try:
                on_disk = source.list_versions(cfg.name, config_module.local_path(cfg.base_path))
            except SigserveError as e:
                self._report_poll_problem(model, e.message)
                continue
            if not on_disk:
                self._report_poll_problem(model, source.no_versions_message(cfg.name, cfg.base_path))
            else:
                model.last_poll_problem = ""
            results.append(
                (model, cfg, policy_module.aspired_versions(cfg.name, cfg.model_version_policy, on_disk))
            )
        events: list[_Event] = []
        with self._lock:
            for model, cfg, aspired in results:
                if model.config is not cfg or not model.configured:
                    continue  # reloaded meanwhile; the next poll uses the new config
                for number, entry in model.versions.items():
                    entry.aspired = number in aspired
                for number in sorted(aspired):
                    if number not in model.versions:
                        model.versions[number] = _Version(model.name, number, aspired[number])
                        events.append((model.name, number, ServableState.START, None))
                model.polled = True
            self._changed.notify_all()
        self._publish(events)

    def _report_poll_problem(self, model: _Model, message: str) -> None:
        if message != model.last_poll_problem:
            logger.warning("%s", message)
            model.last_poll_problem = message

    def _step(self) -> None:
        """Take the next action of every model that has none in progress."""
        events: list[_Event] = []
        dispatch: list[tuple[policy_module.Action, _Model, _Version]] = []
        with self._lock:
            if self._stopping.is_set():
                return
            for name, model in list(self._models.items()):
                if model.busy:
                    continue
                for number, entry in list(model.versions.items()):
                    if not entry.aspired and entry.state in (ServableState.START, ServableState.END):
                        del model.versions[number]
                        if entry.state == ServableState.START:
                            entry.state = ServableState.END
                            events.append((name, number, ServableState.END, None))
                if not model.configured and not model.versions:
                    del self._models[name]
                    continue
                action = policy_module.next_action(
                    policy_module.VersionSnapshot(e.version, e.aspired, e.state)
                    for e in model.versions.values()
                )
                if action is None:
                    continue
                kind, number = action
                entry = model.versions[number]
                model.busy = True
                if kind is policy_module.Action.LOAD:
                    entry.state = ServableState.LOADING
                    events.append((name, number, ServableState.LOADING, None))
                else:
                    entry.state = ServableState.UNLOADING
                    events.append((name, number, ServableState.UNLOADING, None))
                dispatch.append((kind, model, entry))
            self._changed.notify_all()
        self._publish(events)
        for kind, model, entry in dispatch:
            target = self._load if kind is policy_module.Action.LOAD else self._unload
            thread = threading.Thread(
                target=self._action,
                args=(target, model, entry),
                name=f"sigserve-{kind.value}-{model.name}-{entry.version}",
                daemon=True,
            )
            with self._lock:
                self._actions.add(thread)
            thread.start()

    def _action(self, target: Callable[[_Model, _Version], _Event], model: _Model, entry: _Version) -> None:
        try:
            with log_context(model=entry.name, version=entry.version):
                event = target(model, entry)
            self._publish([event])
        finally:
            with self._lock:
                entry.reported = entry.state
                model.busy = False
                self._actions.discard(threading.current_thread())
                self._changed.notify_all()
            self._wake.set()

    def _load(self, model: _Model, entry: _Version) -> _Event:
        request = LoadRequest(entry.name, entry.version, entry.path)
        sid = servable_id(entry.name, entry.version)
        servable: Any = None
        error: SigserveError | None = None
        for attempt in range(self._max_retries + 1):
            if attempt:
                logger.warning(
                    "Loading servable %s failed (%s); retry %d of %d in %.3g s",
                    sid,
                    error.to_string() if error else "",
                    attempt,
                    self._max_retries,
                    self._retry_interval,
                )
                # Sleep until the retry is due, waking early if the version stops being aspired
                # (deleted from disk, model dropped from the config) or the manager stops.
                deadline = time.monotonic() + self._retry_interval
                with self._lock:
                    while entry.aspired and not self._stopping.is_set():
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._changed.wait(left)
                    aspired = entry.aspired
                if self._stopping.is_set():
                    break
                if not aspired:
                    logger.info("Not retrying the load of %s: it is no longer aspired", sid)
                    break
            try:
                servable = self._load_once(request)
                error = None
                break
            except Exception as e:
                error = _as_error(e)
                if not isinstance(e, SigserveError):
                    logger.error("Loading servable %s raised", sid, exc_info=True)
        if servable is not None and self._stopping.is_set():
            _close(servable)
            servable = None
        with self._lock:
            if servable is not None:
                entry.servable = servable
                entry.state = ServableState.AVAILABLE
                model.serving[entry.version] = entry
                model.update_latest()
            else:
                entry.state = ServableState.END
                entry.error = error
            self._changed.notify_all()
        return (entry.name, entry.version, entry.state, entry.error)

    def _load_once(self, request: LoadRequest) -> Any:
        with self._load_slots:
            servable = self._loader(request)
            if self._warmup:
                try:
                    warmup.run_warmup(servable, request.path, self._warmup_iterations)
                except BaseException:
                    _close(servable)
                    raise
        return servable

    def _unload(self, model: _Model, entry: _Version) -> _Event:
        self._retire(entry, timeout=None)
        with self._lock:
            if model.versions.get(entry.version) is entry:
                del model.versions[entry.version]
        return (entry.name, entry.version, ServableState.END, None)

    def _retire(self, entry: _Version, timeout: float | None) -> None:
        """Take `entry` out of service, wait for its in-flight requests, close it: state END."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            model = self._models.get(entry.name)
            if model is not None and model.serving.get(entry.version) is entry:
                del model.serving[entry.version]
                model.update_latest()
            entry.draining = True
            while entry.refs > 0:
                left = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
                if left <= 0:
                    logger.warning(
                        "Closing %s with %d request(s) still running",
                        servable_id(entry.name, entry.version),
                        entry.refs,
                    )
                    break
                self._changed.wait(left)
            servable, entry.servable = entry.servable, None
            entry.state = ServableState.END
        if servable is not None:
            _close(servable)

    def _publish(self, events: Iterable[_Event]) -> None:
        for name, version, state, error in events:
            self._monitor.publish(name, version, state, error)

    # -- waiting for models ----------------------------------------------------------------------

    def _settle_in_background(self, names: list[str]) -> None:
        try:
            self._settle(names, [])
            self._started = True
        except SigserveError as e:
            logger.error("%s", e.to_string())

    def _settle(self, awaited: list[str], removed: list[str], relabel: list[str] | None = None) -> None:
        """Wait until each `awaited` model is AVAILABLE (or has failed) and each `removed` one is out of
        service, then assign the version labels of every configured model."""
        with self._lock:
            while True:
                if self._stopping.is_set():
                    raise SigserveError(Code.CANCELLED, "The model manager was stopped")
                failed: list[_Version | None] = []
                pending = False
                for name in awaited:
                    verdict, entry = self._readiness(name)
                    if verdict == "pending":
                        pending = True
                    elif verdict == "failed":
                        failed.append(entry)
                for name in removed:
                    model = self._models.get(name)
                    if (
                        model is not None
                        and not model.configured
                        # Out of the serving map, and no load in progress that could put it back.
                        and (
                            model.serving
                            or any(e.state == ServableState.LOADING for e in model.versions.values())
                        )
                    ):
                        pending = True
                if not pending:
                    break
                self._changed.wait(_WAIT_SLICE)
            if failed:
                raise _did_not_become_available(failed)
            configs = [m.config for m in self._models.values() if m.configured]
            if relabel is not None:
                configs = [self._models[n].config for n in relabel if n in self._models]
            self._labels = labels_module.assign(
                configs,
                self._is_available,
                self._labels,
                self._allow_unavailable_labels,
            )

    def _is_available(self, name: str, version: int) -> bool:
        model = self._models.get(name)
        return model is not None and version in model.serving

    def _readiness(self, name: str) -> tuple[str, _Version | None]:
        """ "ok", "failed" (with the version that failed) or "pending", for start-up and reloads."""
        model = self._models.get(name)
        if model is None or not model.configured:
            return "ok", None  # dropped by a reload meanwhile: nothing to wait for
        if not model.polled:
            return "pending", None
        if any(e.reported == ServableState.AVAILABLE for e in model.serving.values()):
            for version in model.config.version_labels.values():
                entry = model.versions.get(int(version))
                if entry is not None and entry.aspired and entry.state < ServableState.AVAILABLE:
                    return "pending", None  # a labelled version is still loading: wait for it
            return "ok", None
        aspired = [e for e in model.versions.values() if e.aspired]
        if aspired and all(e.state == e.reported == ServableState.END for e in aspired):
            return "failed", max(aspired, key=lambda e: e.version)
        return "pending", None


def _did_not_become_available(failed: list[_Version | None]) -> SigserveError:
    """TF Serving's WaitUntilModelsAvailable text."""
    parts = []
    for entry in failed:
        if entry is None:
            continue
        due = f" due to error: {entry.error.to_string()}" if entry.error is not None else ""
        parts.append(f"{{{servable_id(entry.name, entry.version)}{due}}}, ")
    return SigserveError(
        Code.UNKNOWN, f"{len(failed)} model(s) did not become available: {{{''.join(parts)}}}"
    )


def _copy(model_config: Any) -> Any:
    copy = model_server_config_pb2.ModelConfig()
    copy.CopyFrom(model_config)
    return copy
