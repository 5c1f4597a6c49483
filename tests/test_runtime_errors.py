"""Every §3 error text of Predict, Classify and Regress, driven by a TF1 model whose signatures are
wrong on purpose; deadlines; and hostile Python input that must end in a SigserveError, never a crash."""

from __future__ import annotations

import pathlib
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sigserve.errors import Code, SigserveError

runtime = pytest.importorskip("sigserve.runtime")


def _export_odd(export_dir: pathlib.Path) -> None:
    """Signatures that break each structural or output rule once."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        ex = v1.placeholder(tf.string, [None], name="ex")
        other = v1.placeholder(tf.string, [None], name="other")
        fx = v1.io.parse_example(ex, {"x": v1.io.FixedLenFeature([1], tf.float32)})["x"]
        n = tf.shape(fx)[0]
        labels2 = tf.tile(tf.constant([["a", "b"]]), [n, 1])
        scores1 = tf.identity(fx)
        a = v1.placeholder(tf.float32, [None], name="a")
        ten = tf.constant(10.0)
        b = v1.placeholder_with_default(ten, [], name="b")
        steps = v1.placeholder(tf.int64, [], name="steps")
        [loop] = tf.while_loop(lambda i: i < steps, lambda i: i + 1, [tf.constant(0, tf.int64)])

        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils

        def make(inputs: dict, outputs: dict, method: str = "tensorflow/serving/classify", defaults=None):
            return sig.build_signature_def(
                {k: info(v) for k, v in inputs.items()},
                {k: info(v) for k, v in outputs.items()},
                method,
                defaults=defaults,
            )

        reg = "tensorflow/serving/regress"
        signatures = {
            "classes_rank1": make({"inputs": ex}, {"classes": tf.reshape(labels2, [-1])}),
            "classes_not_string": make({"inputs": ex}, {"classes": fx}),
            "scores_not_float": make({"inputs": ex}, {"scores": tf.cast(fx, tf.int64)}),
            "classes_batch": make({"inputs": ex}, {"classes": tf.constant([["a"]])}),
            "scores_batch": make({"inputs": ex}, {"scores": tf.constant([[1.0]])}),
            "dim_mismatch": make({"inputs": ex}, {"classes": labels2, "scores": scores1}),
            "classes_only": make({"inputs": ex}, {"classes": labels2}),
            "two_inputs": make({"inputs": ex, "more": other}, {"scores": scores1}),
            "three_outputs": make({"inputs": ex}, {"scores": scores1, "classes": labels2, "x": fx}),
            "no_known_outputs": make({"inputs": ex}, {"probabilities": scores1}),
            "reg_rank3": make({"inputs": ex}, {"outputs": tf.reshape(fx, [-1, 1, 1])}, reg),
            "reg_batch": make({"inputs": ex}, {"outputs": tf.constant([1.0, 2.0, 3.0])}, reg),
            "reg_dtype": make({"inputs": ex}, {"outputs": tf.cast(fx, tf.float64)}, reg),
            "reg_two_outputs": make({"inputs": ex}, {"outputs": fx, "more": fx}, reg),
            "reg_wrong_output_key": make({"inputs": ex}, {"values": fx}, reg),
            "reg_rank1": make({"inputs": ex}, {"outputs": fx[:, 0]}, reg),
            "with_default": make(
                {"a": a, "b": b},
                {"sum": a + b},
                "tensorflow/serving/predict",
                defaults={"b": ten},
            ),
            "slow": make({"steps": steps}, {"count": loop}, "tensorflow/serving/predict"),
            "custom_method": make({"a": a}, {"a": tf.identity(a)}, "my/custom"),
        }
        with v1.Session(graph=graph) as sess:
            builder = v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
            builder.save()


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> runtime.Servable:
    export_dir = tmp_path_factory.mktemp("odd") / "1"
    _export_odd(export_dir)
    servable = runtime.load(export_dir)
    yield servable
    servable.close()


@pytest.fixture(scope="module")
def hpt(fixtures_dir: pathlib.Path) -> runtime.Servable:
    servable = runtime.load(fixtures_dir / "saved_model_half_plus_two_cpu/00000123")
    yield servable
    servable.close()


TWO = [{"x": 1.0}, {"x": 2.0}]


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("classes_rank1", "Expected Tensor shape: [batch_size num_classes] but got [4]"),
        ("classes_not_string", "Expected classes Tensor of DT_STRING. Got: DT_FLOAT"),
        ("scores_not_float", "Expected scores Tensor of DT_FLOAT. Got: DT_INT64"),
        ("classes_batch", "Expected classes output batch size of 2. Got: 1"),
        ("scores_batch", "Expected scores output batch size of 2. Got: 1"),
        ("dim_mismatch", "Tensors class and score should match in dim_size(1). Got 2 vs. 1"),
        ("two_inputs", "Expected one input Tensor."),
        ("three_outputs", "Expected one or two output Tensors, found 3"),
        (
            "no_known_outputs",
            'Expected classification signature outputs to contain at least one of "classes"',
        ),
    ],
)
def test_classify_errors(odd: runtime.Servable, signature: str, message: str) -> None:
    with pytest.raises(SigserveError) as info:
        odd.classify(TWO, signature_name=signature)
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.message.startswith(message), info.value.message


def test_classify_classes_only_gives_labels_with_zero_scores(odd: runtime.Servable) -> None:
    result = odd.classify(TWO, signature_name="classes_only")
    assert [[(c.label, c.score) for c in cl.classes] for cl in result.classifications] == [
        [("a", 0.0), ("b", 0.0)],
        [("a", 0.0), ("b", 0.0)],
    ]


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (
            "reg_rank3",
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [2,1,1]",
        ),
        ("reg_batch", "Input batch size did not match output batch size: 2 vs. 3"),
        ("reg_dtype", "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
        ("reg_two_outputs", "Expected one output Tensor."),
        ("reg_wrong_output_key", "No regression outputs found in SignatureDef: "),
        ("two_inputs", "Expected one input Tensor."),
    ],
)
def test_regress_errors(odd: runtime.Servable, signature: str, message: str) -> None:
    with pytest.raises(SigserveError) as info:
        odd.regress(TWO, signature_name=signature)
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.message.startswith(message), info.value.message


def test_regress_rank1_output(odd: runtime.Servable) -> None:
    assert [r.value for r in odd.regress(TWO, signature_name="reg_rank1").regressions] == [1.0, 2.0]


# -- Predict ---------------------------------------------------------------------------------------


def test_predict_defaults(odd: runtime.Servable) -> None:
    assert "b" in odd.signatures["with_default"].defaults
    out = odd.predict({"a": [1.0, 2.0]}, signature_name="with_default")
    np.testing.assert_array_equal(out["sum"], [11.0, 12.0])
    out = odd.predict({"a": [1.0], "b": np.float32(0.5)}, signature_name="with_default")
    np.testing.assert_array_equal(out["sum"], [1.5])


def test_predict_invalid_name_with_defaults(odd: runtime.Servable) -> None:
    # Size check passes (2 == 2); b comes from its default; c was never used.
    with pytest.raises(SigserveError) as info:
        odd.predict({"a": [1.0], "c": [2.0]}, signature_name="with_default")
    assert info.value.message == (
        "Inputs contains invalid name. Used request inputs: a, request input: a,c, unused request input: c"
    )


def test_predict_missing_input_without_default(odd: runtime.Servable) -> None:
    with pytest.raises(SigserveError) as info:
        odd.predict({"b": [1.0]}, signature_name="with_default")
    assert info.value.message == (
        "Signature input alias: a(feed name: a:0) not found in request and no default value provided. "
        "Inputs expected to be in the set {a,b}."
    )


def test_predict_size_errors(hpt: runtime.Servable) -> None:
    with pytest.raises(SigserveError) as info:
        hpt.predict({})
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.message == (
        "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. "
        "Missing but required: {x}."
    )
    with pytest.raises(SigserveError) as info:
        hpt.predict({"y": [[1.0]]})
    assert info.value.message.startswith("Signature input alias: x(feed name: x:0) not found in request")


def test_output_filter_errors(hpt: runtime.Servable) -> None:
    with pytest.raises(SigserveError) as info:
        hpt.predict({"x": [[1.0]]}, output_filter=["z"])
    assert (
        info.value.message
        == "output tensor alias not found in signature: z Outputs expected to be in the set {y}."
    )
    with pytest.raises(SigserveError) as info:
        hpt.predict({"x": [[1.0]]}, output_filter=["y", "y"])
    assert info.value.message == "duplicate output tensor alias: y"


def test_predict_wrong_dtype_is_tensorflows_message(hpt: runtime.Servable) -> None:
    with pytest.raises(SigserveError) as info:
        hpt.predict({"x": np.array([[b"a"]], dtype=object)})
    assert (info.value.code, info.value.message) == (
        Code.INVALID_ARGUMENT,
        "Expects arg[0] to be float but string is provided",
    )


def test_method_name_check_on_predict(odd: runtime.Servable) -> None:
    # Off by default: any method name runs.
    np.testing.assert_array_equal(odd.predict({"a": [1.0]}, "custom_method")["a"], [1.0])
    with runtime.load(odd.export_dir, method_name_check=True) as checked:
        with pytest.raises(SigserveError) as info:
            checked.predict({"a": [1.0]}, "custom_method")
    assert info.value.code == Code.INTERNAL
    assert info.value.message.endswith("}. Was: my/custom")


# -- Deadlines ------------------------------------------------------------------------------------


def test_deadline_exceeded_cancels_the_run(odd: runtime.Servable) -> None:
    started = time.monotonic()
    with pytest.raises(SigserveError) as info:
        odd.predict({"steps": np.int64(10**12)}, "slow", timeout=0.2)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10
    # The session is fine afterwards, and a generous deadline does not get in the way.
    assert int(odd.predict({"steps": np.int64(1000)}, "slow", timeout=30.0)["count"]) == 1000


def test_deadline_wins_over_the_caller_thread_hint(odd: runtime.Servable) -> None:
    """A step in the caller's thread cannot be cancelled, so a call with a deadline ignores the hint."""
    started = time.monotonic()
    with pytest.raises(SigserveError) as info:
        odd.predict({"steps": np.int64(10**12)}, "slow", timeout=0.2, in_caller_thread=True)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10
    assert int(odd.predict({"steps": np.int64(1000)}, "slow", in_caller_thread=True)["count"]) == 1000


def test_deadline_already_passed(hpt: runtime.Servable) -> None:
    with pytest.raises(SigserveError) as info:
        hpt.predict({"x": [[1.0]]}, timeout=0.0)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    with pytest.raises(SigserveError) as info:
        hpt.regress([{"x": 1.0}], "regress_x_to_y", timeout=-1.0)
    assert info.value.code == Code.DEADLINE_EXCEEDED


def test_timeout_options_encoding() -> None:
    from tensorflow.core.protobuf import config_pb2

    from sigserve.runtime.session import _timeout_options

    for seconds, ms in [(0.0001, 1), (0.2, 200), (5.0, 5000), (3600.0, 3_600_000), (1e6, 10**9)]:
        assert _timeout_options(seconds) == config_pb2.RunOptions(timeout_in_ms=ms).SerializeToString()


# -- Hostile input ---------------------------------------------------------------------------------

_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.bool_, np.uint8, np.float16]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
)
_values = st.one_of(
    _arrays,
    st.lists(st.floats(allow_nan=True, width=32), max_size=4),
    st.lists(st.lists(st.integers(-(2**70), 2**70), max_size=3), max_size=3),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.none(),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.lists(st.one_of(st.text(max_size=2), st.floats(), st.none()), max_size=3),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    inputs=st.dictionaries(st.sampled_from(["x", "y", "inputs", ""]), _values, max_size=3),
    signature=st.sampled_from(["serving_default", "regress_x2_to_y3", "classify_x_to_y", None]),
    output_filter=st.one_of(
        st.none(), st.lists(st.sampled_from(["y", "outputs", "scores", "q"]), max_size=2)
    ),
)
def test_hostile_predict_gives_result_or_sigserve_error(
    hpt: runtime.Servable, inputs: dict, signature: str | None, output_filter: list[str] | None
) -> None:
    try:
        out = hpt.predict(inputs, signature_name=signature, output_filter=output_filter)
    except SigserveError as e:
        assert e.code in (Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION), e
        return
    # Success: every output is a float32 array with one row per input row.
    [value] = inputs.values()
    rows = np.asarray(value).shape[:1]
    for array in out.values():
        assert isinstance(array, np.ndarray) and array.dtype == np.float32
        assert array.shape[:1] == rows


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    examples=st.lists(
        st.dictionaries(
            st.sampled_from(["x", "y"]),
            st.one_of(
                st.floats(width=32, allow_nan=False),
                st.integers(-5, 5),
                st.text(max_size=3),
                st.lists(st.floats(width=32, allow_nan=False), max_size=3),
            ),
            max_size=2,
        ),
        max_size=4,
    ),
    method=st.sampled_from(["classify", "regress"]),
)
def test_hostile_examples_give_result_or_sigserve_error(
    hpt: runtime.Servable, examples: list, method: str
) -> None:
    try:
        if method == "classify":
            result = hpt.classify(examples, "classify_x_to_y")
            count = len(result.classifications)
        else:
            result = hpt.regress(examples, "regress_x_to_y")
            count = len(result.regressions)
    except SigserveError as e:
        assert e.code == Code.INVALID_ARGUMENT, e
        return
    assert count == len(examples) > 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    x=hnp.arrays(
        dtype=st.sampled_from([np.dtype("<f4"), np.dtype(">f4")]),
        shape=hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
        elements=st.integers(-(2**20), 2**20).map(float),
    ),
    step=st.integers(1, 3),
)
def test_predict_any_layout_gives_exact_half_plus_two(
    hpt: runtime.Servable, x: np.ndarray, step: int
) -> None:
    """Byte order and strides of the caller's array never change the answer."""
    view = x[::step, ::step]
    out = hpt.predict({"x": view})["y"]
    np.testing.assert_array_equal(out, 0.5 * view.astype(np.float32) + 2)
