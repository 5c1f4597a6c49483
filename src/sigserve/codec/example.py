"""tf.Example inputs: Python feature dicts -> `Input`, and `Input` -> the serialized-example tensor.

A classify/regress signature is fed one 1-D DT_STRING tensor of serialized Examples; with a context
each element is the context's bytes followed by the example's bytes (protobuf merge semantics: the
features are unioned and, for a name in both, the example's value wins), as TF Serving does in
`InputToSerializedExampleTensor`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from sigserve.codec.json import example_from_json
from sigserve.errors import Code, SigserveError
from sigserve.protos import example_pb2, input_pb2


def serialize_input(input: input_pb2.Input) -> np.ndarray:
    """The 1-D object array of serialized Examples a classify/regress signature is fed."""
    kind = input.WhichOneof("kind")
    if kind == "example_list":
        examples = input.example_list.examples
        prefix = b""
    elif kind == "example_list_with_context":
        examples = input.example_list_with_context.examples
        prefix = input.example_list_with_context.context.SerializeToString()
    else:
        return np.empty(0, dtype=object)
    out = np.empty(len(examples), dtype=object)
    out[:] = [prefix + e.SerializeToString() for e in examples]
    return out


def num_examples(input: input_pb2.Input) -> int:
    """How many examples the Input carries (0 when no kind is set)."""
    kind = input.WhichOneof("kind")
    if kind == "example_list":
        return len(input.example_list.examples)
    if kind == "example_list_with_context":
        return len(input.example_list_with_context.examples)
    return 0


def examples_from_dicts(dicts: Iterable[Mapping[str, Any]]) -> input_pb2.Input:
    """Feature dicts -> `Input.example_list` by TF Serving's JSON rules.

    float -> float_list, int/bool -> int64_list, str/bytes/{"b64": ...} -> bytes_list; a list is
    one feature's values, e.g. `[{"x": [1.0, 2.0], "tag": "a"}]`.
    """
    result = input_pb2.Input()
    examples = result.example_list.examples
    for features in dicts:
        if not isinstance(features, Mapping):
            raise SigserveError(
                Code.INVALID_ARGUMENT,
                f"An example is a dict of features such as {{'x': [1.0, 2.0]}}, "
                f"not {type(features).__name__}",
            )
        examples.append(example_from_json({str(k): _json_value(v) for k, v in features.items()}))
    return result


def _json_value(value: Any) -> Any:
    """Python/numpy values as the JSON values TF Serving's rules are stated for."""
    if isinstance(value, (list, tuple)):
        return [_json_scalar(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_scalar(v) for v in value.reshape(-1).tolist()]
    return _json_scalar(value)


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def as_input(value: Any) -> input_pb2.Input:
    """What the Python API accepts for classify/regress: an `Input`, or a list of Examples or of
    feature dicts (`[{"x": 1.0}]`)."""
    if isinstance(value, input_pb2.Input):
        return value
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, example_pb2.Example) for v in value):
            result = input_pb2.Input()
            result.example_list.examples.extend(value)
            return result
        return examples_from_dicts(list(value))
    raise SigserveError(
        Code.INVALID_ARGUMENT,
        f"classify/regress take an Input proto or a list of feature dicts such as [{{'x': 1.0}}], "
        f"not {type(value).__name__}",
    )
