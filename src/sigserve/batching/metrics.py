"""Batching metrics under TF Serving's names (tfserving-api.md §5), on the server's Prometheus registry.

Names go through the same mapping as the serving metrics (`/tensorflow/serving/x` →
`:tensorflow:serving:x`), and buckets are TensorFlow's, so a dashboard built for TF Serving's
batching reads sigserve's without change. One difference: TF Serving adds an input_batch_size sample
per input tensor of a request (a 2-input request counts twice); sigserve adds one per request, which
is what the name says.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

QUEUING_LATENCY = ":tensorflow:serving:batching_session:queuing_latency"
WRAPPED_RUN_COUNT = ":tensorflow:serving:batching_session:wrapped_run_count"
INPUT_BATCH_SIZE = ":tensorflow:serving:batching_session:input_batch_size"
PROCESSED_BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
PADDING_SIZE = ":tensorflow:serving:batching_session:padding_size"

# monitoring::Buckets::Exponential(100, 1.2, 52): 100 µs .. about 1 s.
QUEUING_LATENCY_BUCKETS_US: tuple[float, ...] = tuple(100.0 * 1.2**i for i in range(52))
# monitoring::Buckets::Exponential(1, 2, 14): 1, 2, 4, .., 8192.
BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(14))


class BatchingMetrics:
    """The five batching metrics. One instance per registry: schedulers sharing a registry share it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.queuing_latency = Histogram(
            QUEUING_LATENCY,
            "Distribution of wall time spent (in microseconds) in queuing",
            ["thread_pool_name"],
            buckets=QUEUING_LATENCY_BUCKETS_US,
            registry=registry,
        )
        self.wrapped_run_count = Counter(
            WRAPPED_RUN_COUNT,
            "Total count of run calls on the wrapped session",
            registry=registry,
        )
        self.input_batch_size = Histogram(
            INPUT_BATCH_SIZE,
            "Tracks the batch size distribution on the inputs.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.processed_batch_size = Histogram(
            PROCESSED_BATCH_SIZE,
            "Tracks the batch size distribution on processing.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.padding_size = Histogram(
            PADDING_SIZE,
            "Tracks the padding size distribution on batches.",
            ["execution_batch_size"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )

        # The labelled children, looked up once: `labels()` costs about as much as `observe()`, and
        # these are recorded for every batch. Bounded by the pool names and max_batch_size.
        self._queuing: dict[str, Any] = {}
        self._padding: dict[int, Any] = {}

    def observe_queuing(self, thread_pool_name: str, latency_seconds: float) -> None:
        child = self._queuing.get(thread_pool_name)
        if child is None:
            child = self._queuing[thread_pool_name] = self.queuing_latency.labels(thread_pool_name)
        child.observe(latency_seconds * 1e6)

    def observe_batch(self, processed_size: int, padding: int) -> None:
        """One run of the wrapped runner on `processed_size` rows, `padding` of them padding."""
        self.wrapped_run_count.inc()
        self.processed_batch_size.observe(processed_size)
        child = self._padding.get(processed_size)
        if child is None:
            if len(self._padding) >= 4096:
                self._padding.clear()
            child = self._padding[processed_size] = self.padding_size.labels(str(processed_size))
        child.observe(padding)


_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, BatchingMetrics] = weakref.WeakKeyDictionary()


def for_registry(registry: CollectorRegistry | None) -> BatchingMetrics:
    """The batching metrics of `registry` (a private one when None), created on first use.

    prometheus_client refuses to register a name twice, and a server may build more than one
    scheduler on the same registry over its life (tests do), so the metrics are shared per registry.
    """
    if registry is None:
        return BatchingMetrics(CollectorRegistry(auto_describe=True))
    with _lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = BatchingMetrics(registry)
            _by_registry[registry] = metrics
        return metrics
