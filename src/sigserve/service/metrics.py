"""Prometheus metrics with TF Serving's names (tfserving-api.md §6), shared by the REST and gRPC front ends.

TF Serving exports `/tensorflow/serving/request_count` as `:tensorflow:serving:request_count` (every
character outside `[a-zA-Z0-9_]` becomes `:`), so existing dashboards and alerts keep working when
they point at sigserve. Every serving metric also carries a `signature` label, which TF Serving lacks
(tensorflow/serving#1959; peers.md §3 item 12), and the request metrics a `protocol` label: `tfserving`
for TF Serving's APIs, `v2` for the Open Inference Protocol.

prometheus_client appends `_total` to counters and emits `_created` samples; TF Serving does neither,
so `render()` writes the text format itself from the registry's samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.samples import Sample

from sigserve.errors import Code

# Exponential buckets, scale 10 µs, growth 1.8, 33 bounds (TF Serving's request/runtime latency).
LATENCY_BUCKETS_US: tuple[float, ...] = tuple(10.0 * 1.8**i for i in range(33))
# Powers of two 1 .. 16384 (TF Serving's request_example_counts).
EXAMPLE_COUNT_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(15))

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
REQUEST_EXAMPLE_COUNTS = ":tensorflow:serving:request_example_counts"
REQUEST_EXAMPLE_COUNT_TOTAL = ":tensorflow:serving:request_example_count_total"
# Model loads: TensorFlow's SavedModel load metrics, with a "download" stage for versions staged from an
# object store, and the bytes those downloads fetched.
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"
LOAD_LATENCY_BY_STAGE = ":tensorflow:cc:saved_model:load_latency_by_stage"
BYTES_DOWNLOADED = ":sigserve:storage:bytes_downloaded"
# Load stages take milliseconds to minutes: 1 ms .. ~1.2 h in µs, x2 per bucket.
LOAD_BUCKETS_US: tuple[float, ...] = tuple(1000.0 * 2**i for i in range(23))

PROTOCOL_TFSERVING = "tfserving"
PROTOCOL_V2 = "v2"

# The API label of runtime_latency uses gRPC's method names whatever the entry point.
_RUNTIME_API = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}


def prometheus_name(tf_name: str) -> str:
    """TF Serving's metric-name mapping: `/tensorflow/serving/x` → `:tensorflow:serving:x`."""
    out = "".join(c if (c.isascii() and (c.isalnum() or c == "_")) else ":" for c in tf_name)
    if out[:1].isdigit():
        out = "_" + out
    return out


class Metrics:
    """The serving metrics of one server process; REST and gRPC record through the same object."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._request_count = Counter(
            REQUEST_COUNT,
            "The total number of requests.",
            ["model_name", "status", "signature", "protocol"],
            registry=self.registry,
        )
        self._request_latency = Histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint", "signature", "protocol"],
            buckets=LATENCY_BUCKETS_US,
            registry=self.registry,
        )
        self._runtime_latency = Histogram(
            RUNTIME_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving runtime.",
            ["model_name", "API", "runtime", "signature"],
            buckets=LATENCY_BUCKETS_US,
            registry=self.registry,
        )
        self._example_counts = Histogram(
            REQUEST_EXAMPLE_COUNTS,
            "The number of tensorflow.Examples per request.",
            ["model"],
            buckets=EXAMPLE_COUNT_BUCKETS,
            registry=self.registry,
        )
        self._example_count_total = Counter(
            REQUEST_EXAMPLE_COUNT_TOTAL,
            "The total number of tensorflow.Examples.",
            ["model"],
            registry=self.registry,
        )
        self._load_latency = Counter(
            LOAD_LATENCY,
            "Latency in microseconds for SavedModels that were successfully loaded.",
            ["model_path"],
            registry=self.registry,
        )
        self._load_latency_by_stage = Histogram(
            LOAD_LATENCY_BY_STAGE,
            "Distribution of wall time (in microseconds) for loading SavedModels, by stage: "
            "download (from an object store to the model cache) and load.",
            ["model_path", "stage"],
            buckets=LOAD_BUCKETS_US,
            registry=self.registry,
        )
        self._bytes_downloaded = Counter(
            BYTES_DOWNLOADED,
            "Bytes of model versions downloaded from object stores.",
            ["model_name"],
            registry=self.registry,
        )
        # Bound label children by label values: `labels()` hashes and validates its arguments under a
        # lock on every call, which costs more than the observation itself (a few µs per request).
        self._request_children: dict[tuple[str, str, str, str, Code, str], tuple[Any, Any]] = {}
        self._runtime_children: dict[tuple[str, str, str], Any] = {}

    def observe_request(
        self,
        *,
        model_name: str,
        api: str,
        entrypoint: str,
        signature: str,
        code: Code,
        latency_seconds: float,
        protocol: str = PROTOCOL_TFSERVING,
    ) -> None:
        """One served request: request_count always, request_latency on success only (as TF Serving).

        `api` is the REST URL verb (`predict`, `classify`, `regress`, "" for status/metadata GETs;
        `infer` for V2) or the gRPC method name (`Predict`, ..., `ModelInfer`); `entrypoint` is `REST`
        or `GRPC`; `protocol` is `tfserving` or `v2`.
        """
        key = (model_name, api, entrypoint, signature, code, protocol)
        children = self._request_children.get(key)
        if children is None:
            children = self._bind_request(key)
        count, latency = children
        count.inc()
        if latency is not None:
            latency.observe(latency_seconds * 1e6)

    def _bind_request(self, key: tuple[str, str, str, str, Code, str]) -> tuple[Any, Any]:
        model_name, api, entrypoint, signature, code, protocol = key
        count = self._request_count.labels(model_name, Code(code).name, signature, protocol)
        latency = None
        if code == Code.OK:
            latency = self._request_latency.labels(model_name, api, entrypoint, signature, protocol)
        return _remember(self._request_children, key, (count, latency))

    def observe_runtime(self, *, model_name: str, api: str, signature: str, latency_seconds: float) -> None:
        """Time spent in the TensorFlow session only (TF Serving's runtime `TF1` path)."""
        key = (model_name, api, signature)
        child = self._runtime_children.get(key)
        if child is None:
            child = _remember(
                self._runtime_children,
                key,
                self._runtime_latency.labels(model_name, _RUNTIME_API.get(api, api), "TF1", signature),
            )
        child.observe(latency_seconds * 1e6)

    def observe_examples(self, *, model_name: str, count: int) -> None:
        """Number of tf.Examples in one Classify/Regress request."""
        self._example_counts.labels(model_name).observe(count)
        self._example_count_total.labels(model_name).inc(count)

    def observe_load(
        self, *, name: str, version: int, path: str, stage: str, seconds: float, nbytes: int = 0
    ) -> None:
        """One stage of a successful version load (the manager's `LoadObserver`)."""
        micros = seconds * 1e6
        self._load_latency_by_stage.labels(path, stage).observe(micros)
        if stage == "load":
            self._load_latency.labels(path).inc(micros)
        if nbytes:
            self._bytes_downloaded.labels(name).inc(nbytes)

    def render(self) -> bytes:
        """Prometheus text format as TF Serving writes it: bare counter names, no `_created` samples."""
        return render_registry(self.registry)


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    """Cache a bound child. The label values come from served requests (existing models and
    signatures, and the codes of their errors), so the caches stay small; the bound keeps a flood of
    distinct failing model names from growing them without limit (prometheus_client keeps its own
    children regardless)."""
    if len(cache) >= _MAX_CACHED_CHILDREN:
        cache.clear()
    cache[key] = value
    return value


_MAX_CACHED_CHILDREN = 4096


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_name(name: str) -> str:
    return "".join(c if (c.isascii() and c.isalnum()) or c == "_" else "_" for c in name)


def _format_number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _sample_line(name: str, sample: Sample) -> str:
    labels = sample.labels
    if labels:
        inner = ",".join(f'{_label_name(k)}="{_escape_value(str(v))}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {_format_number(sample.value)}\n"
    return f"{name} {_format_number(sample.value)}\n"


_NAMES_ENDING_IN_TOTAL = frozenset({REQUEST_EXAMPLE_COUNT_TOTAL})


def render_registry(registry: CollectorRegistry) -> bytes:
    lines: list[str] = []
    for family in registry.collect():
        name = family.name
        kind = family.type
        samples: Iterable[Sample] = family.samples
        if kind == "counter":
            # prometheus_client strips a trailing `_total` from counter names; TF Serving has one
            # counter whose real name ends in `_total`.
            if name + "_total" in _NAMES_ENDING_IN_TOTAL:
                name += "_total"
            lines.append(f"# TYPE {name} counter\n")
            for s in samples:
                if s.name.endswith("_total"):
                    lines.append(_sample_line(name, s))
        elif kind == "histogram":
            lines.append(f"# TYPE {name} histogram\n")
            for s in samples:
                if not s.name.endswith("_created"):
                    lines.append(_sample_line(s.name, s))
        elif kind == "gauge":
            lines.append(f"# TYPE {name} gauge\n")
            lines.extend(_sample_line(s.name, s) for s in samples)
        else:
            lines.append(f"# TYPE {name} untyped\n")
            lines.extend(_sample_line(s.name, s) for s in samples if not s.name.endswith("_created"))
    return "".join(lines).encode("utf-8")
