"""The request logger: each model's `logging_config` from the ModelServerConfig, sampling on the
request path, and one writer thread that builds and writes the records (TF Serving's
`ServerRequestLogger` + `RequestLogger` + `LogCollector`, tfserving-api.md §4 "Config file").

The request path pays for a model without logging one dict lookup (`sample` returns None), and for
a model with logging one `random()`; a sampled call costs one append to a bounded in-memory queue.
Everything else (TensorProtos, PredictionLog, JSON, the file) happens in the writer thread. A full
queue drops the call and counts it; a failing disk loses those records, counts them and logs once
per `error_log_interval`: neither ever slows or fails a request. `close()` writes everything queued
before it returns, so a graceful stop loses nothing.

Metric: TF Serving's `/tensorflow/serving/request_log_count{model_name, status}`, one per sampled
call: `OK` when written, `RESOURCE_EXHAUSTED` when the queue was full (or the disk is), and the code of
any other failure (`PERMISSION_DENIED`, `NOT_FOUND`, `UNAVAILABLE`, `INTERNAL`).
"""

from __future__ import annotations

import collections
import errno
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sigserve.errors import Code, invalid_argument
from sigserve.protos import logging_config_pb2, logging_pb2
from sigserve.requestlog import calls, sinks

logger = logging.getLogger("sigserve.requestlog")

# Defaults of the `sigserve serve` flags of the same names (--request_log_*).
DEFAULT_QUEUE_SIZE = 4096
DEFAULT_QUEUE_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 128 * 1024 * 1024
DEFAULT_ROTATE_SECONDS = 3600.0
ERROR_LOG_INTERVAL_SECONDS = 60.0
# How often the writer thread looks at the queue: a sampled call reaches its file within this.
POLL_SECONDS = 0.05

REQUEST_LOG_COUNT = ":tensorflow:serving:request_log_count"

_ERRNO_CODES = {
    errno.ENOSPC: Code.RESOURCE_EXHAUSTED,
    errno.EDQUOT: Code.RESOURCE_EXHAUSTED,
    errno.EACCES: Code.PERMISSION_DENIED,
    errno.EPERM: Code.PERMISSION_DENIED,
    errno.EROFS: Code.PERMISSION_DENIED,
    errno.ENOENT: Code.NOT_FOUND,
    errno.ENOTDIR: Code.NOT_FOUND,
}


@dataclass(frozen=True)
class Settings:
    """The limits of one server's request logging (each a `--request_log_*` flag)."""

    queue_size: int = DEFAULT_QUEUE_SIZE
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    rotate_seconds: float = DEFAULT_ROTATE_SECONDS
    error_log_interval: float = ERROR_LOG_INTERVAL_SECONDS


class Route:
    """Where one model's sampled calls go: its rate, its sink, its log metadata."""

    __slots__ = ("metadata", "metadata_bytes", "model", "rate", "sink")

    def __init__(
        self, model: str, rate: float, sink: sinks.FileSink, metadata: logging_pb2.LogMetadata
    ) -> None:
        self.model = model
        self.rate = rate
        self.sink = sink
        self.metadata = metadata
        self.metadata_bytes = metadata.SerializeToString()


def check_logging_config(model: str, config: logging_config_pb2.LoggingConfig) -> tuple[str, str, float]:
    """(sink type, filename prefix, sampling rate) of a model's LoggingConfig; INVALID_ARGUMENT when
    it cannot be served. A rate of 0 means no logging, whatever the rest says."""
    rate = float(config.sampling_config.sampling_rate)
    if not 0.0 <= rate <= 1.0:
        raise invalid_argument(
            f"sampling_rate {rate} of model {model} is outside [0, 1]; "
            "e.g. sampling_config { sampling_rate: 0.01 } logs one call in a hundred"
        )
    collector = config.log_collector_config
    kind = sinks.sink_type(collector.type, model)
    if rate > 0 and not collector.filename_prefix:
        raise invalid_argument(
            f"log_collector_config.filename_prefix of model {model} is empty; give the path the log "
            'files start with, e.g. filename_prefix: "/var/log/sigserve/' + model + '"'
        )
    return kind, collector.filename_prefix, rate


class RequestLogger:
    """Request logging for every model of a ModelServerConfig; `update` it with each new config."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: Any = None,
        saved_model_tags: Iterable[str] = ("serve",),
        clock: Callable[[], float] = time.time,
        opener: sinks.Opener | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self._tags = list(saved_model_tags)
        self._clock = clock
        self._opener = opener
        self._rotation = sinks.Rotation(self.settings.max_file_bytes, self.settings.rotate_seconds)
        self._routes: dict[str, Route] = {}
        self._sinks: dict[tuple[str, str], sinks.FileSink] = {}
        self._retired: list[sinks.FileSink] = []
        self._queue: collections.deque[tuple[Route, calls.Call, int]] = collections.deque()
        self._queued_bytes = 0
        self._lock = threading.Lock()  # the queue's byte count; the sink table
        self._written = threading.Condition(threading.Lock())
        self._submitted = 0
        self._finished = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._errors = _OncePerInterval(self.settings.error_log_interval, clock)
        self._counter = _counter(registry)
        self._children: dict[tuple[str, Code], Any] = {}

    # -- configuration -----------------------------------------------------------------------------

    def update(self, config: Any) -> None:
        """Log the models of `config` (a ModelServerConfig) as their `logging_config`s say from now on.
        Checks everything first: an invalid logging_config changes nothing and raises INVALID_ARGUMENT."""
        wanted: dict[str, tuple[str, str, float, Any]] = {}
        if config.WhichOneof("config") == "model_config_list":
            for model in config.model_config_list.config:
                if not model.HasField("logging_config"):
                    continue
                kind, prefix, rate = check_logging_config(model.name, model.logging_config)
                if rate > 0:
                    wanted[model.name] = (kind, prefix, rate, model.logging_config.sampling_config)
        with self._lock:
            routes: dict[str, Route] = {}
            used: dict[tuple[str, str], sinks.FileSink] = {}
            for name, (kind, prefix, rate, sampling) in wanted.items():
                key = (kind, prefix)
                sink = (
                    used.get(key)
                    or self._sinks.get(key)
                    or sinks.FileSink(kind, prefix, self._rotation, clock=self._clock, opener=self._opener)
                )
                used[key] = sink
                metadata = logging_pb2.LogMetadata()
                metadata.sampling_config.CopyFrom(sampling)
                metadata.saved_model_tags.extend(self._tags)
                routes[name] = Route(name, rate, sink, metadata)
            self._retired.extend(s for k, s in self._sinks.items() if k not in used)
            self._sinks = used
            self._routes = routes
            start = bool(routes) and self._thread is None and not self._closing
            if start:
                self._thread = threading.Thread(target=self._run, name="sigserve-request-log", daemon=True)
        for name, (kind, prefix, rate, _) in sorted(wanted.items()):
            logger.info(
                "Request logging for model %s: %s files %s-*, sampling rate %g", name, kind, prefix, rate
            )
        if start:
            assert self._thread is not None
            self._thread.start()

    def check(self, config: Any) -> None:
        """Raise INVALID_ARGUMENT, changing nothing, when `update(config)` would."""
        if config.WhichOneof("config") == "model_config_list":
            for model in config.model_config_list.config:
                if model.HasField("logging_config"):
                    check_logging_config(model.name, model.logging_config)

    # The service's CallObserver: a new config, each sampled call.
    configure = update

    def observe(self, ticket: Route, call: calls.Call) -> None:
        self.submit(ticket, call)

    @property
    def models(self) -> list[str]:
        """The models whose calls are sampled now."""
        return sorted(self._routes)

    # -- the request path --------------------------------------------------------------------------

    def sample(self, model: str) -> Route | None:
        """Whether to log this call of `model`: its Route, or None (nearly free when it has none)."""
        route = self._routes.get(model)
        if route is None:
            return None
        if route.rate >= 1.0 or random.random() < route.rate:
            return route
        return None

    def submit(self, route: Route, call: calls.Call) -> None:
        """Queue `call` for writing; never blocks, never raises. A full queue drops it (counted)."""
        size = calls.approximate_bytes(call)
        settings = self.settings
        with self._lock:
            if (
                self._closing
                or len(self._queue) >= settings.queue_size
                or self._queued_bytes + size > settings.queue_bytes
            ):
                dropped = True
            else:
                dropped = False
                self._queued_bytes += size
                self._queue.append((route, call, size))
                self._submitted += 1
        if dropped:
            self._count(route.model, Code.RESOURCE_EXHAUSTED)
            self._errors.report(
                ("queue",),
                f"Request log queue is full ({settings.queue_size} calls / {settings.queue_bytes} bytes): "
                "sampled calls are being dropped; raise --request_log_queue_size or lower sampling_rate",
            )

    # -- shutting down -----------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every call submitted so far is written (or has failed); False on timeout."""
        with self._written:
            target = self._submitted
            self._wake.set()
            return self._written.wait_for(lambda: self._finished >= target, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, close every file, stop the writer thread. Later calls are dropped."""
        with self._lock:
            self._closing = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)
        else:
            self._close_sinks()

    # -- the writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            batch = self._take()
            if batch:
                self._write(batch)
            with self._lock:
                retired, self._retired = self._retired, []
                open_sinks = list(self._sinks.values())
                done = self._closing and not self._queue
            for sink in retired:
                sink.close()
            for sink in open_sinks:
                sink.close_if_due()
            if done:
                self._close_sinks()
                return

    def _close_sinks(self) -> None:
        with self._lock:
            every = list(self._sinks.values()) + self._retired
            self._retired = []
        for sink in every:
            sink.close()

    def _take(self) -> list[tuple[Route, calls.Call, int]]:
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
        return batch

    def _write(self, batch: list[tuple[Route, calls.Call, int]]) -> None:
        by_sink: dict[int, tuple[sinks.FileSink, list[str], list[bytes]]] = {}
        for route, call, _ in batch:
            try:
                if route.sink.kind == sinks.TFRECORD:
                    record = calls.prediction_log_bytes(call, route.metadata_bytes)
                else:
                    record = calls.json_line(call)
                encoded = route.sink.encode(record)
            except Exception as e:  # a bug: count it, say it, and keep logging the rest
                self._count(route.model, Code.INTERNAL)
                self._errors.report(("encode", route.model), f"Could not build a request log record: {e!r}")
                continue
            entry = by_sink.setdefault(id(route.sink), (route.sink, [], []))
            entry[1].append(route.model)
            entry[2].append(encoded)
        for sink, models, records in by_sink.values():
            written, error = sink.write(records)
            for model, n in collections.Counter(models[:written]).items():
                self._count(model, Code.OK, n)
            if error is not None:
                code = _ERRNO_CODES.get(error.errno or 0, Code.UNAVAILABLE)
                for model, n in collections.Counter(models[written:]).items():
                    self._count(model, code, n)
                self._errors.report(
                    ("write", sink.kind, sink.prefix),
                    f"Could not write request log files {sink.prefix}-*: {error.strerror or error} "
                    f"({len(records) - written} record(s) lost); requests are still served",
                )
        with self._written:
            self._finished += len(batch)
            self._written.notify_all()

    def _count(self, model: str, code: Code, n: int = 1) -> None:
        if self._counter is None:
            return
        child = self._children.get((model, code))
        if child is None:  # bound once per (model, status): labels() costs more than inc()
            if len(self._children) > 4096:
                self._children.clear()
            child = self._children[(model, code)] = self._counter.labels(model, code.name)
        child.inc(n)


def _counter(registry: Any) -> Any:
    if registry is None:
        return None
    from prometheus_client import Counter

    return Counter(
        REQUEST_LOG_COUNT,
        "The total number of requests logged from the model server sliced down by model_name and "
        "status code.",
        ["model_name", "status"],
        registry=registry,
    )


class _OncePerInterval:
    """Logs a recurring problem once per interval per key, with how often it happened in between."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[tuple[str, ...], float] = {}
        self._suppressed: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    def report(self, key: tuple[str, ...], message: str) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" (and {suppressed} more time(s) in the last {self.interval:g} s)"
        logger.error("%s", message)
