"""The Prometheus page: TF Serving's metric names and text format (tfserving-api.md §6), plus the
`signature` label."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from sigserve.errors import Code
from sigserve.service.metrics import LATENCY_BUCKETS_US, Metrics, prometheus_name


def test_name_mapping() -> None:
    assert prometheus_name("/tensorflow/serving/request_count") == ":tensorflow:serving:request_count"
    assert prometheus_name("1st/metric-x") == "_1st:metric:x"


def test_latency_buckets_are_tf_servings() -> None:
    assert len(LATENCY_BUCKETS_US) == 33
    assert LATENCY_BUCKETS_US[:3] == pytest.approx((10.0, 18.0, 32.4))


def test_request_count_always_latency_only_on_success() -> None:
    m = Metrics()
    for code in (Code.OK, Code.OK, Code.NOT_FOUND):
        m.observe_request(
            model_name="m",
            api="predict",
            entrypoint="REST",
            signature="serving_default",
            code=code,
            latency_seconds=0.0015,
        )
    text = m.render().decode()
    assert "# TYPE :tensorflow:serving:request_count counter\n" in text
    assert (
        ':tensorflow:serving:request_count{model_name="m",status="OK",signature="serving_default",'
        'protocol="tfserving"} 2\n' in text
    )
    assert (
        ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND",signature="serving_default",'
        'protocol="tfserving"} 1\n' in text
    )
    labels = 'model_name="m",API="predict",entrypoint="REST",signature="serving_default",protocol="tfserving"'
    assert f":tensorflow:serving:request_latency_count{{{labels}}} 2\n" in text
    assert f":tensorflow:serving:request_latency_sum{{{labels}}} 3000\n" in text
    assert f':tensorflow:serving:request_latency_bucket{{{labels},le="+Inf"}} 2\n' in text
    # No prometheus_client-isms: no `_total` suffix on TF Serving's counters, no `_created` samples.
    assert "request_count_total" not in text
    assert "_created" not in text


def test_runtime_latency_and_example_counts() -> None:
    m = Metrics()
    m.observe_runtime(model_name="m", api="classify", signature="s", latency_seconds=0.0001)
    m.observe_examples(model_name="m", count=3)
    text = m.render().decode()
    labels = 'model_name="m",API="Classify",runtime="TF1",signature="s"'
    assert f":tensorflow:serving:runtime_latency_count{{{labels}}} 1" in text
    assert "# TYPE :tensorflow:serving:request_example_count_total counter\n" in text
    assert ':tensorflow:serving:request_example_count_total{model="m"} 3\n' in text
    assert ':tensorflow:serving:request_example_counts_bucket{model="m",le="4.0"} 1\n' in text


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.observe_request(
        model_name='a"b\\c',
        api="",
        entrypoint="REST",
        signature="",
        code=Code.INVALID_ARGUMENT,
        latency_seconds=0.0,
    )
    assert 'model_name="a\\"b\\\\c"' in m.render().decode()


def test_other_metrics_on_the_same_registry_are_rendered() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    Counter(":tensorflow:serving:batching_session:wrapped_run_count", "runs", registry=registry).inc()
    assert ":tensorflow:serving:batching_session:wrapped_run_count 1\n" in m.render().decode()
