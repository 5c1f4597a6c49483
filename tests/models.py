"""SavedModels exported with real TensorFlow for the tests: the shapes users actually produce.

Each exporter writes `<base>/<name>/<version>/` (a TF Serving model base path with one numbered
version) and returns the version directory. Known behaviour, for assertions:

- ``tf1``: TF1 `SavedModelBuilder`, tag `serve`, variables a=0.5, b=2.
  * ``serving_default`` (predict): ``x`` float (-1, 1) -> ``y`` = a*x + b.
  * ``multi`` (predict): ``a`` float (-1,), ``b`` int64 (-1,) -> ``sum`` float (a + b),
    ``label_bytes`` string (-1,) (b"v" + str(b)), ``count`` int64 () (batch size).
  * ``classify_x`` (classify): serialized tf.Example with float feature ``x`` ->
    ``classes`` [["neg", "pos"]] per row, ``scores`` [[1 - s, s]] with s = sigmoid(x).
  * ``regress_x`` (regress): serialized tf.Example ``x`` -> ``outputs`` = a*x + b, shape (-1, 1).
- ``tf2``: TF2 `tf.saved_model.save` of a `tf.Module`.
  * ``serving_default``: ``x`` float (None, 3) -> ``{"doubled": 2x, "total": sum(x, axis=1)}``.
  * ``scale``: ``x`` float (None,), ``factor`` float () -> ``output_0`` = x * factor.
- ``keras``: Keras 3 `model.export`: Dense(1, kernel=[[1],[2]], bias=[0.5]) on input (None, 2);
  signatures ``serve`` and ``serving_default``, output key ``output_0``.
- ``estimator``: an estimator-style parsing graph (what `build_parsing_serving_input_receiver_fn` +
  canned heads export): placeholder ``input_example_tensor`` string (-1), features ``x`` float [1].
  * ``serving_default`` and ``classification`` (classify): ``classes`` [["0", "1"]], ``scores`` softmax
    of [-x, x]; ``regression`` (regress): ``outputs`` = 3x - 1, shape (-1, 1);
  * ``predict`` (predict): input key ``examples`` -> ``probabilities``, ``class_ids`` int64 (-1, 1).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

A, B = 0.5, 2.0


def _version_dir(base: pathlib.Path, name: str, version: int = 1) -> pathlib.Path:
    d = base / name / str(version)
    d.parent.mkdir(parents=True, exist_ok=True)
    return d


def export_tf1(base: pathlib.Path, version: int = 1) -> pathlib.Path:
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir = _version_dir(base, "tf1", version)
    graph = tf.Graph()
    with graph.as_default():
        a = v1.Variable(A, name="a")
        b = v1.Variable(B, name="b")
        x = v1.placeholder(tf.float32, shape=[None, 1], name="x")
        y = tf.add(a * x, b, name="y")

        ma = v1.placeholder(tf.float32, shape=[None], name="multi_a")
        mb = v1.placeholder(tf.int64, shape=[None], name="multi_b")
        total = tf.add(ma, tf.cast(mb, tf.float32), name="multi_sum")
        label = tf.strings.join(["v", tf.strings.as_string(mb)], name="multi_label")
        count = tf.cast(tf.shape(ma)[0], tf.int64, name="multi_count")

        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        features = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})
        fx = features["x"]
        s = tf.sigmoid(fx)
        scores = tf.concat([1.0 - s, s], axis=1, name="scores")
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(fx)[0], 1], name="classes")
        regression = tf.add(a * fx, b, name="regression")

        sig = v1.saved_model.signature_def_utils
        info = v1.saved_model.utils.build_tensor_info
        signatures = {
            "serving_default": sig.predict_signature_def({"x": x}, {"y": y}),
            "multi": sig.predict_signature_def(
                {"a": ma, "b": mb}, {"sum": total, "label_bytes": label, "count": count}
            ),
            "classify_x": sig.classification_signature_def(serialized, classes, scores),
            "regress_x": sig.regression_signature_def(serialized, regression),
        }
        # Keep the TensorInfo helper referenced for readers comparing with TF's docs.
        assert info(x).name == "x:0"
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
            builder.save()
    return export_dir


def export_tf2(base: pathlib.Path, version: int = 1) -> pathlib.Path:
    import tensorflow as tf

    export_dir = _version_dir(base, "tf2", version)

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"doubled": 2.0 * x, "total": tf.reduce_sum(x, axis=1)}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.float32, name="x"),
                tf.TensorSpec([], tf.float32, name="factor"),
            ]
        )
        def scale(self, x: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
            return x * factor

    module = Doubler()
    tf.saved_model.save(
        module, str(export_dir), signatures={"serving_default": module.serve, "scale": module.scale}
    )
    return export_dir


def export_keras(base: pathlib.Path, version: int = 1) -> pathlib.Path:
    import keras
    import numpy as np

    export_dir = _version_dir(base, "keras", version)
    inputs = keras.Input(shape=(2,), name="features")
    dense = keras.layers.Dense(1, name="dense")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([np.array([[1.0], [2.0]], np.float32), np.array([0.5], np.float32)])
    model.export(str(export_dir), format="tf_saved_model", verbose=False)
    return export_dir


def export_estimator(base: pathlib.Path, version: int = 1) -> pathlib.Path:
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir = _version_dir(base, "estimator", version)
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, shape=[None], name="input_example_tensor")
        features = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})
        x = features["x"]
        w = v1.Variable(3.0, name="w")
        logits = tf.concat([-x, x], axis=1, name="logits")
        probabilities = tf.nn.softmax(logits, name="probabilities")
        class_ids = tf.expand_dims(tf.argmax(logits, axis=1), 1, name="class_ids")
        classes = tf.tile(tf.constant([["0", "1"]]), [tf.shape(x)[0], 1], name="classes")
        predictions = tf.subtract(w * x, 1.0, name="predictions")

        sig = v1.saved_model.signature_def_utils
        classification = sig.classification_signature_def(serialized, classes, probabilities)
        signatures = {
            "serving_default": classification,
            "classification": classification,
            "regression": sig.regression_signature_def(serialized, predictions),
            "predict": sig.predict_signature_def(
                {"examples": serialized}, {"probabilities": probabilities, "class_ids": class_ids}
            ),
        }
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
            builder.save()
    return export_dir


EXPORTERS: dict[str, Callable[[pathlib.Path, int], pathlib.Path]] = {
    "tf1": export_tf1,
    "tf2": export_tf2,
    "keras": export_keras,
    "estimator": export_estimator,
}


def export_all(base: pathlib.Path) -> dict[str, pathlib.Path]:
    """Export every test model under `base`; returns name -> version directory."""
    return {name: exporter(base, 1) for name, exporter in EXPORTERS.items()}


DTYPES = (
    "half",
    "bfloat16",
    "float32",
    "float64",
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "string",
)


def export_dtypes(base: pathlib.Path, version: int = 1) -> pathlib.Path:
    """``dtypes``: a TF2 module for the Open Inference Protocol's datatypes (not in EXPORTERS).

    * ``serving_default``: ``h`` half (None, 2) -> ``doubled`` = 2h (half), ``total`` = sum over
      axis 1 as float32.
    * ``identity``: one input per dtype in DTYPES, named after it, shape (None,) -> the same tensor
      under ``<dtype>_out``; ``string_out`` is the input with b"!" appended, ``bool_out`` negated.
    * ``scores``: ``x`` float (None, 4) -> ``probabilities`` = softmax(x) (a score tensor for the
      classification extension).
    """
    import tensorflow as tf

    export_dir = _version_dir(base, "dtypes", version)

    def identity(**inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        out = {f"{name}_out": tf.identity(value) for name, value in inputs.items()}
        out["string_out"] = tf.strings.join([inputs["string"], "!"])
        out["bool_out"] = tf.logical_not(inputs["bool"])
        return out

    specs = [tf.TensorSpec([None], getattr(tf, name), name=name) for name in DTYPES]

    class Dtypes(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.half, name="h")])
        def half(self, h: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"doubled": h * 2, "total": tf.reduce_sum(tf.cast(h, tf.float32), axis=1)}

        @tf.function(input_signature=specs)
        def identity(self, *args: tf.Tensor) -> dict[str, tf.Tensor]:
            return identity(**dict(zip(DTYPES, args, strict=True)))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def scores(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"probabilities": tf.nn.softmax(x)}

    module = Dtypes()
    tf.saved_model.save(
        module,
        str(export_dir),
        signatures={"serving_default": module.half, "identity": module.identity, "scores": module.scores},
    )
    return export_dir
