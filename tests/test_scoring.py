"""The engine-neutral half of `sigserve score` (sigserve.integrations.scoring / columns), without a
Ray cluster: Arrow columns ⇄ tensors, planning a signature against a data set's columns, and a
`SignatureScorer` scoring Arrow tables against the same model's `Servable` called directly.

Ray Data on top of it (actors, readers, writers, the CLI): test_ray_data.py."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pa = pytest.importorskip("pyarrow")

from sigserve.errors import Code, SigserveError  # noqa: E402
from sigserve.integrations import columns, scoring  # noqa: E402
from sigserve.protos import example_pb2, types_pb2  # noqa: E402

# -- columns ----------------------------------------------------------------------------------------

NUMERIC = st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8, np.int8, np.bool_])


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        dtype=NUMERIC,
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4),
        elements={"allow_nan": False},
    )
)
def test_tensor_column_round_trip(array: np.ndarray) -> None:
    """Any rank-N tensor → a column of rows (nested fixed-size lists) → the same tensor."""
    column = columns.to_column(array, array.shape[0], "t")
    assert len(column) == array.shape[0]
    back = columns.to_tensor(pa.chunked_array([column]), "t")
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    assert back.shape == array.shape


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=8), min_size=2, max_size=2), max_size=6))
def test_bytes_tensor_round_trip(rows: list[list[bytes]]) -> None:
    array = np.empty((len(rows), 2), dtype=object)
    for i, row in enumerate(rows):
        array[i, :] = row
    back = columns.to_tensor(columns.to_column(array, len(rows), "s"), "s")
    assert back.shape == (len(rows), 2) and back.dtype == object
    assert back.tolist() == array.tolist()


def test_variable_length_lists_and_strings_become_tensors() -> None:
    chunked = pa.chunked_array(
        [pa.array([[1.0, 2.0]], pa.list_(pa.float32())), pa.array([[3.0, 4.0]], pa.list_(pa.float32()))]
    )
    np.testing.assert_array_equal(columns.to_tensor(chunked, "v"), [[1.0, 2.0], [3.0, 4.0]])
    text = columns.to_tensor(pa.array(["a", "é"]), "s")
    assert text.dtype == object and text.tolist() == [b"a", "é".encode()]
    sliced = pa.array([[9.0], [1.0], [2.0]], pa.list_(pa.float64())).slice(1)  # offsets honoured
    np.testing.assert_array_equal(columns.to_tensor(sliced, "v"), [[1.0], [2.0]])


@pytest.mark.parametrize(
    "column, message",
    [
        (pa.array([1.0, None]), "column c has 1 missing value(s)"),
        (pa.array([[1.0], [1.0, 2.0]]), "lists of different lengths (1 in one row, 2 in another)"),
        (pa.array([[1.0], None]), "missing value"),
        (pa.array([{"a": 1}]), "has type struct"),
    ],
)
def test_columns_that_are_not_tensors(column: Any, message: str) -> None:
    with pytest.raises(SigserveError) as e:
        columns.to_tensor(column, "c")
    assert e.value.code == Code.INVALID_ARGUMENT and message in e.value.message


def test_casts_only_without_loss_but_precision() -> None:
    f64 = np.array([0.1, 2.5])
    assert columns.cast_for_input(f64, types_pb2.DT_FLOAT, "c", "x").dtype == np.float32
    ints = np.array([1, 2], np.int64)
    np.testing.assert_array_equal(columns.cast_for_input(ints, types_pb2.DT_FLOAT, "c", "x"), [1.0, 2.0])
    assert columns.cast_for_input(ints, types_pb2.DT_INT32, "c", "x").dtype == np.int32
    for array, dtype, text in [
        (np.array([2**40]), types_pb2.DT_INT32, "values outside"),
        (f64, types_pb2.DT_INT64, "floating-point"),
        (f64, types_pb2.DT_STRING, "a string input takes"),
        (np.array([b"a"], object), types_pb2.DT_FLOAT, "holds strings"),
        (np.array([True]), types_pb2.DT_FLOAT, "cast the column first"),
    ]:
        with pytest.raises(SigserveError) as e:
            columns.cast_for_input(array, dtype, "c", "x")
        assert text in e.value.message and "column c" in e.value.message


def test_an_output_that_is_not_per_row_is_named() -> None:
    with pytest.raises(SigserveError) as e:
        columns.to_column(np.array(3, np.int64), 3, "count")
    assert "output count has shape [] for a batch of 3 rows" in e.value.message
    assert "--outputs" in e.value.message


def test_bfloat16_outputs_widen_to_float32() -> None:
    import ml_dtypes

    column = columns.to_column(np.array([1.5, 2.0], ml_dtypes.bfloat16), 2, "b")
    assert column.type == pa.float32() and column.to_pylist() == [1.5, 2.0]


# -- planning ---------------------------------------------------------------------------------------


def test_resolve_export_dir(exported_models: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    base = exported_models["tf1"].parent
    assert scoring.resolve_export_dir(str(base)) == (1, str(base / "1"))
    with pytest.raises(SigserveError) as e:
        scoring.resolve_export_dir(str(base), 7)
    assert e.value.code == Code.NOT_FOUND and "versions there: 1" in e.value.message
    with pytest.raises(SigserveError) as e:
        scoring.resolve_export_dir(str(tmp_path))
    assert "Did you forget to name your leaf directory as a number" in e.value.message


def test_plan_matches_inputs_and_carries_the_rest(exported_models: dict[str, pathlib.Path]) -> None:
    d = str(exported_models["tf1"])
    plan = scoring.plan_scoring(d, "multi", ["id", "a", "bee", "ts"], input_map={"b": "bee"})
    assert plan.method == "predict"
    assert plan.inputs == (("a", "a"), ("b", "bee"))
    assert plan.input_dtypes == (types_pb2.DT_FLOAT, types_pb2.DT_INT64)
    assert plan.keys == ("id", "ts")
    assert plan.outputs == ("count", "label_bytes", "sum")
    plan = scoring.plan_scoring(d, "multi", ["a", "b", "id"], outputs=["sum"], keys=["id"])
    assert plan.outputs == ("sum",) and plan.keys == ("id",)
    plan = scoring.plan_scoring(str(exported_models["estimator"]), "classification", ["inputs", "k"])
    assert (plan.method, plan.outputs, plan.keys) == ("classify", ("classes", "scores"), ("k",))
    assert scoring.plan_scoring(d, "serving_default", ["x"]).row_shapes == ((1,),)


@pytest.mark.parametrize(
    "kwargs, columns_, message",
    [
        ({"signature_name": "nope"}, ["x"], "Signature 'nope' is not in"),
        ({}, ["id"], "needs input 'x', but the data has no column 'x' (columns: id)"),
        ({"input_map": {"z": "x"}}, ["x"], "--input_map names z"),
        ({"outputs": ["nope"]}, ["x"], "--outputs names nope"),
        ({"keys": ["nope"]}, ["x"], "--keys names nope"),
        ({}, ["x", "y"], "Result column(s) y would replace"),
        ({"method": "classify"}, ["x"], "classify needs a signature with one string input"),
        ({"method": "explain"}, ["x"], "Unknown method 'explain'"),
    ],
)
def test_plan_errors_say_what_to_do(
    exported_models: dict[str, pathlib.Path], kwargs: dict[str, Any], columns_: list[str], message: str
) -> None:
    kwargs = {"signature_name": "serving_default", **kwargs}
    with pytest.raises(SigserveError) as e:
        scoring.plan_scoring(str(exported_models["tf1"]), data_columns=columns_, **kwargs)
    assert message in e.value.message


# -- SignatureScorer against the Servable -----------------------------------------------------------


@pytest.fixture(scope="module")
def servables(exported_models: dict[str, pathlib.Path]) -> Any:
    import sigserve

    loaded = {n: sigserve.load(p) for n, p in exported_models.items() if n in ("tf1", "tf2", "estimator")}
    yield loaded
    for s in loaded.values():
        s.close()


def _examples(xs: np.ndarray) -> list[bytes]:
    out = []
    for x in xs:
        ex = example_pb2.Example()
        ex.features.feature["x"].float_list.value.append(float(x))
        out.append(ex.SerializeToString())
    return out


@pytest.mark.tf
def test_scorer_predict_equals_the_servable(exported_models: dict[str, pathlib.Path], servables: Any) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal(50).astype(np.float32)
    b = rng.integers(-5, 5, 50)
    table = pa.table({"id": np.arange(50), "a": a, "b": b})
    plan = scoring.plan_scoring(
        str(exported_models["tf1"]), "multi", table.column_names, outputs=["sum", "label_bytes"]
    )
    out = scoring.SignatureScorer(plan)(table)
    assert out.column_names == ["id", "sum", "label_bytes"]
    want = servables["tf1"].predict({"a": a, "b": b}, "multi", output_filter=["sum", "label_bytes"])
    np.testing.assert_array_equal(out.column("sum").to_numpy(), want["sum"])
    assert out.column("label_bytes").to_pylist() == list(want["label_bytes"])
    assert out.column("id").to_pylist() == list(range(50))

    x = rng.standard_normal((20, 3)).astype(np.float32)
    table = pa.table({"x": columns.to_column(x, 20, "x"), "k": np.arange(20)})
    out = scoring.SignatureScorer(
        scoring.plan_scoring(str(exported_models["tf2"]), "serving_default", table.column_names)
    )(table)
    want = servables["tf2"].predict({"x": x})
    np.testing.assert_array_equal(columns.to_tensor(out.column("doubled"), "d"), want["doubled"])
    np.testing.assert_array_equal(out.column("total").to_numpy(), want["total"])


@pytest.mark.tf
def test_scorer_classify_and_regress_equal_the_servable(
    exported_models: dict[str, pathlib.Path], servables: Any
) -> None:
    xs = np.random.default_rng(2).standard_normal(40).astype(np.float32)
    table = pa.table({"inputs": pa.array(_examples(xs), pa.binary()), "k": np.arange(40)})
    est = servables["estimator"]
    model = str(exported_models["estimator"])

    out = scoring.SignatureScorer(scoring.plan_scoring(model, "classification", table.column_names))(table)
    want = est.classify([example_pb2.Example.FromString(b) for b in _examples(xs)], "classification")
    assert out.column("classes").to_pylist() == [[c.label for c in r.classes] for r in want.classifications]
    assert out.column("scores").to_pylist() == [
        [np.float32(c.score) for c in r.classes] for r in want.classifications
    ]

    out = scoring.SignatureScorer(scoring.plan_scoring(model, "regression", table.column_names))(table)
    want_r = est.regress([example_pb2.Example.FromString(b) for b in _examples(xs)], "regression")
    np.testing.assert_array_equal(out.column("outputs").to_numpy(), [r.value for r in want_r.regressions])
    np.testing.assert_allclose(out.column("outputs").to_numpy(), 3 * xs - 1, rtol=1e-6)

    bad = pa.table({"inputs": pa.array([b"\xff\xff"], pa.binary()), "k": [0]})
    with pytest.raises(SigserveError) as e:
        scoring.SignatureScorer(scoring.plan_scoring(model, "regression", bad.column_names))(bad)
    assert "is not a serialized tf.train.Example" in e.value.message
