"""Classify and Regress: run a signature on serialized tf.Examples and check and convert its outputs
exactly as TF Serving's `PostProcessClassificationResult` / `PostProcessRegressionResult` do
(tfserving-api.md §3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from sigserve.codec import example as codec_example
from sigserve.errors import Code, SigserveError
from sigserve.protos import classification_pb2, input_pb2, regression_pb2, types_pb2
from sigserve.runtime.signatures import ClassifyPlan, RegressPlan

ClassificationResult = classification_pb2.ClassificationResult
RegressionResult = regression_pb2.RegressionResult


def examples_tensor(inp: input_pb2.Input) -> np.ndarray:
    """The 1-D DT_STRING feed; "Input is empty." when there are no examples."""
    tensor = codec_example.serialize_input(inp)
    if tensor.shape[0] == 0:
        raise SigserveError(Code.INVALID_ARGUMENT, "Input is empty.")
    return tensor


def dtype_name(array: np.ndarray) -> str:
    """TensorFlow's DataType_Name of an output array (`DT_FLOAT`, `DT_STRING`, ...)."""
    try:
        enum = tf.as_dtype(array.dtype).as_datatype_enum
    except TypeError:
        return str(array.dtype)
    return str(types_pb2.DataType.Name(enum))


def shape_string(array: np.ndarray) -> str:
    """TensorShape::DebugString: `[2,3]`."""
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _check_matrix(array: np.ndarray, what: str, want: int, want_name: str, num_examples: int) -> None:
    if array.ndim != 2:
        raise SigserveError(
            Code.INVALID_ARGUMENT,
            f"Expected Tensor shape: [batch_size num_classes] but got {shape_string(array)}",
        )
    if tf.as_dtype(array.dtype).base_dtype.as_datatype_enum != want:
        raise SigserveError(
            Code.INVALID_ARGUMENT, f"Expected {what} Tensor of {want_name}. Got: {dtype_name(array)}"
        )
    if array.shape[0] != num_examples:
        raise SigserveError(
            Code.INVALID_ARGUMENT,
            f"Expected {what} output batch size of {num_examples}. Got: {array.shape[0]}",
        )


def classification_result(
    plan: ClassifyPlan, num_examples: int, names: Sequence[str], outputs: Sequence[np.ndarray]
) -> ClassificationResult:
    classes: np.ndarray | None = None
    scores: np.ndarray | None = None
    for name, array in zip(names, outputs, strict=True):
        if name == plan.classes_name:
            classes = array
        elif name == plan.scores_name:
            scores = array
    if classes is not None:
        _check_matrix(classes, "classes", types_pb2.DT_STRING, "DT_STRING", num_examples)
    if scores is not None:
        _check_matrix(scores, "scores", types_pb2.DT_FLOAT, "DT_FLOAT", num_examples)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise SigserveError(
            Code.INVALID_ARGUMENT,
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} "
            f"vs. {scores.shape[1]}",
        )
    result = ClassificationResult()
    labels = classes.tolist() if classes is not None else None
    values = scores.tolist() if scores is not None else None
    num_classes = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    for i in range(num_examples):
        row = result.classifications.add().classes
        if labels is not None and values is not None:
            for label, score in zip(labels[i], values[i], strict=True):
                row.add(label=_label(label), score=score)
        elif labels is not None:
            for label in labels[i]:
                row.add(label=_label(label))
        elif values is not None:
            for score in values[i]:
                row.add(score=score)
        else:  # pragma: no cover - the plan always has one of the two
            for _ in range(num_classes):
                row.add()
    return result


def _label(value: object) -> str:
    # Class.label is a proto3 string; TF Serving copies the bytes as they are.
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def regression_result(
    plan: RegressPlan, num_examples: int, names: Sequence[str], outputs: Sequence[np.ndarray]
) -> RegressionResult:
    output: np.ndarray | None = None
    for name, array in zip(names, outputs, strict=True):
        if name == plan.output_name:
            output = array
            break
    if output is None:
        raise SigserveError(Code.FAILED_PRECONDITION, f"Could not find output tensor '{plan.output_name}'")
    if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise SigserveError(
            Code.INVALID_ARGUMENT,
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{shape_string(output)}",
        )
    if output.shape[0] != num_examples:
        raise SigserveError(
            Code.INVALID_ARGUMENT,
            f"Input batch size did not match output batch size: {num_examples} vs. {output.shape[0]}",
        )
    if output.dtype != np.float32:
        raise SigserveError(
            Code.INVALID_ARGUMENT, f"Expected output Tensor of DT_FLOAT.  Got: {dtype_name(output)}"
        )
    result = RegressionResult()
    add = result.regressions.add
    for value in output.reshape(-1).tolist():
        add(value=value)
    return result
