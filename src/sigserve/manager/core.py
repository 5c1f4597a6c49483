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
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar
from urllib.parse import quote

from sigserve import storage
from sigserve.errors import Code, SigserveError, not_found
from sigserve.logformat import log_context
from sigserve.manager import config as config_module
from sigserve.manager import labels as labels_module
from sigserve.manager import policy as policy_module
from sigserve.manager import source, warmup
from sigserve.manager.clock import Clock, SystemClock
from sigserve.manager.lifecycle import (
    Loader,
    LoadObserver,
    LoadRequest,
    ManagedServable,
    StateMonitor,
    Subscriber,
    servable_id,
)
from sigserve.manager.states import ServableState, check_transition
from sigserve.protos import get_model_status_pb2, model_server_config_pb2

logger = logging.getLogger("sigserve.manager")

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig
S = TypeVar("S", bound=ManagedServable)
_Event = tuple[str, int, ServableState, "SigserveError | None"]
_UNKNOWN_NAMES_LOGGED = 100  # names of unknown models logged with a hint, at most (hostile clients)
_ERROR_BACKOFF = 1.0  # seconds the manager thread pauses after a bug, so it cannot spin
# A base path that stays missing, empty or unreadable is logged again this often (manager clock).
SOURCE_PROBLEM_LOG_INTERVAL_SECONDS = 30.0


class _Version(Generic[S]):
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
        "staged",
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
        self.servable: S | None = None
        self.staged = ""  # the local copy of a version on an object store, removed when it unloads
        self.refs = 0
        self.draining = False  # taken out of service to unload: END means unloaded, not failed
        # The last state subscribers and the status API have been told of: waiters return only once
        # GetModelStatus agrees with them.
        self.reported = ServableState.START

    @property
    def sid(self) -> str:
        return servable_id(self.name, self.version)

    def move(self, state: ServableState) -> _Event:
        """The one place a tracked version changes state: checked against `states.TRANSITIONS`
        (an illegal move raises and changes nothing). Returns the event to publish."""
        check_transition(self.sid, self.state, state)
        self.state = state
        return (self.name, self.version, state, self.error)


class _Model(Generic[S]):
    """A configured model (or one removed from the config whose versions are still unloading)."""

    def __init__(self, config: ModelConfig, source: source.VersionSource) -> None:
        self.name: str = config.name
        self.config = config
        self.source = source
        self.configured = True
        self.polled = False
        self.versions: dict[int, _Version[S]] = {}
        self.serving: dict[int, _Version[S]] = {}
        self.latest: _Version[S] | None = None
        self.busy = False
        self.problem: SigserveError | None = None  # why the last poll found nothing to serve
        self.problem_logged_at = 0.0

    def update_latest(self) -> None:
        self.latest = self.serving[max(self.serving)] if self.serving else None


class ServableHandle(Generic[S]):
    """`with core.handle(name) as servable:` — holds the version loaded until the block ends."""

    __slots__ = ("_core", "_entry", "_label", "_name", "_version")

    def __init__(self, core: ServerCore[S], name: str, version: int | None, label: str | None) -> None:
        self._core = core
        self._name = name
        self._version = version
        self._label = label
        self._entry: _Version[S] | None = None

    def __enter__(self) -> S:
        self._entry = entry = self._core._acquire(self._name, self._version, self._label)
        assert entry.servable is not None  # in the serving map only while loaded
        return entry.servable

    def __exit__(self, *exc: object) -> None:
        entry = self._entry
        if entry is not None:
            self._entry = None
            self._core._release(entry)


def _as_error(e: BaseException) -> SigserveError:
    if isinstance(e, SigserveError):
        return e
    return SigserveError(Code.UNKNOWN, f"{type(e).__name__}: {e}")


def _close(servable: ManagedServable) -> None:
    try:
        servable.close()
    except Exception:
        logger.exception("Error while closing %r", servable)


class ServerCore(Generic[S]):
    """Serves the models of a `ModelServerConfig` (TF Serving's `ServerCore`).

    `loader(LoadRequest)` returns a loaded Servable or raises (`sigserve serve` passes one that calls
    `sigserve.runtime.load`). `file_system_poll_wait_seconds`: how often base paths are listed
    (0 or negative: once at start, and again on each `reload_config`). A failed load is retried
    `max_num_load_retries` times, `load_retry_interval_micros` apart, then the version ends in END with
    its error, and the versions already serving keep serving. `clock`: every wait the manager does
    (polls, retries, draining) is on it; tests pass a `clock.ManualClock`.

    `fail_if_no_model_versions_found` (TF Serving's ServerCore option of that name): `start` and
    `reload_config` fail when a model's base path is missing or holds no version, instead of waiting
    for one. `model_cache_dir`: where versions on an object store are downloaded to (a directory per
    process inside it, removed by `stop`). `load_observer` is told the download and load times.
    """

    def __init__(
        self,
        config: ModelServerConfig,
        *,
        loader: Loader[S],
        file_system_poll_wait_seconds: float = 1.0,
        max_num_load_retries: int = 5,
        load_retry_interval_micros: int = 60_000_000,
        enable_model_warmup: bool = True,
        num_request_iterations_for_warmup: int = 0,
        allow_version_labels_for_unavailable_models: bool = False,
        clock: Clock | None = None,
        fail_if_no_model_versions_found: bool = False,
        model_cache_dir: str = "",
        load_observer: LoadObserver | None = None,
    ) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._fail_if_no_versions = bool(fail_if_no_model_versions_found)
        self._cache_root = model_cache_dir or storage.default_cache_dir()
        self._cache_dir = ""  # this process's directory inside _cache_root, made on first use
        self._observer = load_observer
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
        self._models: dict[str, _Model[S]] = {m.name: _Model(_copy(m), self._source_for(m)) for m in models}
        self._labels: labels_module.LabelMap = {}
        self._wake = False  # under _lock: the manager thread has something to do now
        self._stopping = threading.Event()
        self._poll_requested = True
        self._started = False  # start-up has settled: models available, labels assigned
        self._thread: threading.Thread | None = None
        self._actions: set[threading.Thread] = set()
        slots = max(1, min(16, 4 * (os.cpu_count() or 1)))
        self._load_slots = threading.BoundedSemaphore(slots)
        self._unknown_names: set[str] = set()

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
            if self._fail_if_no_versions:
                with self._lock:
                    sources = [(m.config, m.source) for m in self._models.values() if m.configured]
                _check_versions_present(sources)
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

    def handle(self, name: str, version: int | None = None, label: str | None = None) -> ServableHandle[S]:
        """A context manager yielding the Servable for a ModelSpec: `version`, else `label`, else the
        latest AVAILABLE version. NOT_FOUND "Servable not found for request: Latest(<name>)" /
        "Specific(<name>, <version>)"; INVALID_ARGUMENT "Unrecognized servable version label: <label>"."""
        return ServableHandle(self, name, version, label)

    def model_status(
        self, name: str, version: int | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus (§1.5): every version ever seen, highest first, END ones with their error.
        A configured model with no version yet says why after TF Serving's text, e.g. "Could not find
        any versions of model m; Could not find base path /models/m for servable m with error ..."."""
        with self._lock:
            model = self._models.get(name)
            problem = model.problem.message if model is not None and model.problem is not None else ""
        return self._monitor.model_status(name, version, problem)

    def reload_config(self, config: ModelServerConfig) -> None:
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
            if self._fail_if_no_versions:
                # Fresh sources: the manager thread may be polling the models' own ones right now.
                _check_versions_present([(m, self._source_for(m)) for m in models])
            with self._lock:
                old_names = {name for name, m in self._models.items() if m.configured}
                for m in models:
                    existing = self._models.get(m.name)
                    if existing is None:
                        self._models[m.name] = _Model(_copy(m), self._source_for(m))
                    else:
                        if existing.config.base_path != m.base_path:
                            existing.source = self._source_for(m)
                            existing.problem = None
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
                self._wake = True
                self._changed.notify_all()
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
        with self._lock:
            self._wake = True
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
            entries = sorted(
                (e for m in self._models.values() for e in m.serving.values()),
                key=lambda e: (e.name, e.version),
            )
            events = [e.move(ServableState.UNLOADING) for e in entries]
        self._publish(events)
        for entry in entries:
            self._publish([self._retire(entry, timeout=30.0)])
        if self._cache_dir:
            shutil.rmtree(self._cache_dir, ignore_errors=True)

    def subscribe(self, callback: Subscriber) -> None:
        """`callback(name, version, state, error | None)` on every state transition, in order."""
        self._monitor.subscribe(callback)

    # -- extras ----------------------------------------------------------------------------------

    @property
    def config(self) -> ModelServerConfig:
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

    def _acquire(self, name: str, version: int | None, label: str | None) -> _Version[S]:
        with self._lock:
            if version is None and label is not None:
                version = labels_module.lookup(self._labels, name, label)
            model = self._models.get(name)
            if version is None:
                entry = model.latest if model is not None else None
                if entry is None:
                    if model is None or not model.configured:
                        self._hint_unknown_model(name)
                    raise not_found(f"Servable not found for request: Latest({name})")
            else:
                entry = model.serving.get(version) if model is not None else None
                if entry is None:
                    raise not_found(f"Servable not found for request: Specific({name}, {version})")
            entry.refs += 1
            return entry

    def _release(self, entry: _Version[S]) -> None:
        with self._lock:
            entry.refs -= 1
            if entry.draining and entry.refs <= 0:
                self._changed.notify_all()

    # -- the manager thread ----------------------------------------------------------------------

    def _run(self) -> None:
        clock = self._clock
        next_poll = clock.monotonic()
        while not self._stopping.is_set():
            try:
                with self._lock:
                    self._wake = False
                    requested = self._poll_requested
                    self._poll_requested = False
                if requested or (self._poll_period > 0 and clock.monotonic() >= next_poll):
                    self._poll()
                    next_poll = clock.monotonic() + self._poll_period
                self._step()
            except Exception:
                # A bug must not end polling for good: log it and go on with the next round.
                logger.exception("Error in the model manager thread")
                with self._lock:
                    if not self._stopping.is_set():
                        clock.wait(self._changed, clock.monotonic() + _ERROR_BACKOFF, "backoff")
                continue
            # Sleep until the next poll is due, or something (a finished load, a reload, stop) wakes us.
            deadline = next_poll if self._poll_period > 0 else None
            with self._lock:
                while not self._wake and not self._stopping.is_set():
                    if deadline is not None and clock.monotonic() >= deadline:
                        break
                    clock.wait(self._changed, deadline, "poll")

    def _poll(self) -> None:
        """List every configured model's base path and update its aspired versions."""
        with self._lock:
            targets = [(m, m.config, m.source) for m in self._models.values() if m.configured]
        results: list[tuple[_Model[S], ModelConfig, dict[int, str]]] = []
        for model, cfg, src in targets:
            try:
                on_disk = src.list_versions()
            except SigserveError as e:
                # The base path is missing or unreadable: keep what is loaded, and say so.
                self._report_poll_problem(model, e, logging.ERROR)
                continue
            if not on_disk:
                empty = SigserveError(Code.NOT_FOUND, source.no_versions_message(cfg.name, cfg.base_path))
                self._report_poll_problem(model, empty, logging.WARNING)
            elif model.problem is not None:
                logger.info("Servable %s: base path %s holds versions again", cfg.name, cfg.base_path)
                model.problem = None
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

    def _report_poll_problem(self, model: _Model[S], problem: SigserveError, level: int) -> None:
        """Log why a base path shows nothing to serve: at once when it changes, then again every
        SOURCE_PROBLEM_LOG_INTERVAL_SECONDS while it lasts (TF Serving logs it on every poll)."""
        now = self._clock.monotonic()
        same = model.problem is not None and model.problem.message == problem.message
        model.problem = problem
        if same and now - model.problem_logged_at < SOURCE_PROBLEM_LOG_INTERVAL_SECONDS:
            return
        model.problem_logged_at = now
        base = model.config.base_path
        again = (
            f"; looking again every {self._poll_period:g} s"
            if self._poll_period > 0
            else "; not looking again (--file_system_poll_wait_seconds=0)"
        )
        fail_fast = (
            "" if self._fail_if_no_versions else " (--fail_if_no_model_versions_found makes this fatal)"
        )
        logger.log(level, "%s; %s%s%s", problem.message, source.expected_layout(base), again, fail_fast)

    def _hint_unknown_model(self, name: str) -> None:
        """A request for a model that is not configured: TF Serving's NOT_FOUND text goes back
        unchanged (clients compare it); the log names the models that are served. Logged once per
        name, for a bounded number of names."""
        if name in self._unknown_names or len(self._unknown_names) >= _UNKNOWN_NAMES_LOGGED:
            return
        self._unknown_names.add(name)
        served = ", ".join(sorted(n for n, m in self._models.items() if m.configured)) or "none"
        logger.warning("Servable not found for request: Latest(%s); served models: %s", name[:200], served)

    def _step(self) -> None:
        """Take the next action of every model that has none in progress."""
        events: list[_Event] = []
        dispatch: list[tuple[policy_module.Action, _Model[S], _Version[S]]] = []
        with self._lock:
            if self._stopping.is_set():
                return
            for name, model in list(self._models.items()):
                if model.busy:
                    continue
                for number, entry in list(model.versions.items()):
                    if entry.state == ServableState.END and entry.draining:
                        # Unloaded (its END is published: the model was busy until then). If it is
                        # aspired again meanwhile, it starts over as a new START.
                        del model.versions[number]
                        if entry.aspired:
                            model.versions[number] = _Version(name, number, entry.path)
                            events.append((name, number, ServableState.START, None))
                    elif not entry.aspired and entry.state in (ServableState.START, ServableState.END):
                        del model.versions[number]
                        if entry.state == ServableState.START:
                            events.append(entry.move(ServableState.END))
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
                if kind is policy_module.Action.LOAD:
                    events.append(entry.move(ServableState.LOADING))
                else:
                    events.append(entry.move(ServableState.UNLOADING))
                model.busy = True
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

    def _action(
        self, target: Callable[[_Model[S], _Version[S]], _Event], model: _Model[S], entry: _Version[S]
    ) -> None:
        try:
            with log_context(model=entry.name, version=entry.version):
                event = target(model, entry)
            self._publish([event])
        finally:
            with self._lock:
                entry.reported = entry.state
                model.busy = False
                self._actions.discard(threading.current_thread())
                self._wake = True
                self._changed.notify_all()

    def _source_for(self, model: ModelConfig) -> source.VersionSource:
        return source.for_base_path(model.name, model.base_path, polling=self._poll_period > 0)

    def _load(self, model: _Model[S], entry: _Version[S]) -> _Event:
        request = LoadRequest(entry.name, entry.version, entry.path)
        sid = entry.sid
        clock = self._clock
        servable: S | None = None
        staged = ""
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
                with self._lock:
                    deadline = clock.monotonic() + self._retry_interval
                    while entry.aspired and not self._stopping.is_set():
                        if clock.monotonic() >= deadline:
                            break
                        clock.wait(self._changed, deadline, f"retry {sid}")
                    aspired = entry.aspired
                if self._stopping.is_set():
                    break
                if not aspired:
                    logger.info("Not retrying the load of %s: it is no longer aspired", sid)
                    break
            try:
                servable, staged = self._load_once(request)
                error = None
                break
            except Exception as e:
                error = _as_error(e)
                if not isinstance(e, SigserveError):
                    logger.error("Loading servable %s raised", sid, exc_info=True)
        if servable is not None and self._stopping.is_set():
            _close(servable)
            _remove(staged)
            servable = None
        with self._lock:
            if servable is not None:
                entry.servable = servable
                entry.staged = staged
                event = entry.move(ServableState.AVAILABLE)
                model.serving[entry.version] = entry
                model.update_latest()
            else:
                entry.error = error
                event = entry.move(ServableState.END)
            self._changed.notify_all()
        return event

    def _load_once(self, request: LoadRequest) -> tuple[S, str]:
        """One attempt: stage the version if it is on a store, load it, warm it up. Returns the
        servable and its staged directory ("" for a local version)."""
        with self._load_slots:
            staged = ""
            local = request
            if storage.is_remote(request.path):
                copy = storage.stage(request.path, self._stage_dir(request))
                staged = copy.path
                local = LoadRequest(request.name, request.version, copy.path)
                self._observe(request, "download", copy.seconds, copy.bytes)
            try:
                started = time.perf_counter()
                servable = self._loader(local)
                try:
                    if self._warmup:
                        warmup.run_warmup(servable, local.path, self._warmup_iterations)
                except BaseException:
                    _close(servable)
                    raise
                self._observe(request, "load", time.perf_counter() - started, 0)
            except BaseException:
                _remove(staged)
                raise
        return servable, staged

    def _stage_dir(self, request: LoadRequest) -> str:
        with self._lock:
            if not self._cache_dir:
                os.makedirs(self._cache_root, exist_ok=True)
                self._cache_dir = tempfile.mkdtemp(prefix=f"sigserve-{os.getpid()}-", dir=self._cache_root)
            parent = self._cache_dir
        name = quote(request.name, safe="")[:100]
        return os.path.join(parent, f"{name}-{request.version}-{uuid.uuid4().hex[:8]}")

    def _observe(self, request: LoadRequest, stage: str, seconds: float, nbytes: int) -> None:
        if self._observer is None:
            return
        try:
            self._observer.observe_load(
                name=request.name,
                version=request.version,
                path=request.path,
                stage=stage,
                seconds=seconds,
                nbytes=nbytes,
            )
        except Exception:
            logger.exception("A load observer failed")

    def _unload(self, model: _Model[S], entry: _Version[S]) -> _Event:
        # The entry stays in model.versions until _step sees it END (after END is published), so a
        # poll that finds the version on disk again meanwhile cannot start a second one too early.
        return self._retire(entry, timeout=None)

    def _retire(self, entry: _Version[S], timeout: float | None) -> _Event:
        """Take `entry` (UNLOADING) out of service, wait for its in-flight requests, close it: END."""
        clock = self._clock
        with self._lock:
            deadline = None if timeout is None else clock.monotonic() + timeout
            model = self._models.get(entry.name)
            if model is not None and model.serving.get(entry.version) is entry:
                del model.serving[entry.version]
                model.update_latest()
            entry.draining = True
            while entry.refs > 0:
                if deadline is not None and clock.monotonic() >= deadline:
                    logger.warning("Closing %s with %d request(s) still running", entry.sid, entry.refs)
                    break
                clock.wait(self._changed, deadline, f"drain {entry.sid}")
            servable, entry.servable = entry.servable, None
            staged, entry.staged = entry.staged, ""
            event = entry.move(ServableState.END)
        if servable is not None:
            _close(servable)
        _remove(staged)
        return event

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
        service, then assign the version labels of every configured model. Every change it waits for
        notifies `_changed`."""
        with self._lock:
            while True:
                if self._stopping.is_set():
                    raise SigserveError(Code.CANCELLED, "The model manager was stopped")
                failed: list[_Version[S] | None] = []
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
                self._clock.wait(self._changed, None, "settle")
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

    def _readiness(self, name: str) -> tuple[str, _Version[S] | None]:
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


def _remove(staged: str) -> None:
    if staged:
        shutil.rmtree(staged, ignore_errors=True)


def _check_versions_present(models: Iterable[tuple[ModelConfig, source.VersionSource]]) -> None:
    """--fail_if_no_model_versions_found: the base path of each model must hold a version now (on a
    store, one still uploading counts). TF Serving's texts, then what is expected there."""
    for config, src in models:
        versions = src.list_versions()  # a missing base path raises TF Serving's NOT_FOUND
        if not versions and not getattr(src, "pending", None):
            raise SigserveError(
                Code.NOT_FOUND,
                f"Unable to find a numerical version path for servable {config.name} at: "
                f"{config.base_path}; {source.expected_layout(config.base_path)}",
            )


def _did_not_become_available(failed: list[_Version[S] | None]) -> SigserveError:
    """TF Serving's WaitUntilModelsAvailable text."""
    parts = []
    for entry in failed:
        if entry is None:
            continue
        due = f" due to error: {entry.error.to_string()}" if entry.error is not None else ""
        parts.append(f"{{{entry.sid}{due}}}, ")
    return SigserveError(
        Code.UNKNOWN, f"{len(failed)} model(s) did not become available: {{{''.join(parts)}}}"
    )


def _copy(model_config: ModelConfig) -> ModelConfig:
    copy = model_server_config_pb2.ModelConfig()
    copy.CopyFrom(model_config)
    return copy
