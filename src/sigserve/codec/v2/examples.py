"""Classify and Regress signatures over V2: tf.Example features given as named inputs.

A classify/regress SignatureDef takes one DT_STRING tensor of serialized tf.Examples, which V2
clients cannot be expected to build. So a V2 request to such a signature may instead name features:
each input is one feature, its first dimension the batch (one Example per row), the rest of the
row that feature's values. FP16/FP32/FP64/BF16 become a float_list, integer and BOOL types an
int64_list, BYTES a bytes_list; e.g. inputs `x` FP32 [2, 1] = [[1.0], [2.0]] and `tag` BYTES [2]
= ["a", "b"] make two Examples {x: [1.0], tag: [b"a"]} and {x: [2.0], tag: [b"b"]}.

A request whose only input carries the signature's own input name (`inputs`, as a BYTES tensor)
is taken as serialized Examples, as the TF Serving Predict API would take it.
"""

from __future__ import annotations

import numpy as np

from sigserve.codec.example import examples_from_dicts, serialize_input
from sigserve.codec.v2.request import InferInput
from sigserve.codec.v2.tensors import invalid, shape_text


def serialized_examples(inputs: list[InferInput]) -> np.ndarray:
    """The 1-D object array of serialized Examples that the named feature inputs describe."""
    if not inputs:
        raise invalid(
            "a Classify or Regress signature needs tf.Example features as named inputs, "
            'e.g. {"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1.0, 2.0]}'
        )
    batch: int | None = None
    seen: set[str] = set()
    for item in inputs:
        if item.name in seen:
            raise invalid(f"feature '{item.name}' is given twice")
        seen.add(item.name)
        if not item.shape:
            raise invalid(
                f"feature '{item.name}' has shape []: its first dimension must be the batch "
                "(one tf.Example per row), e.g. [2] or [2, 1]"
            )
        if batch is None:
            batch = item.shape[0]
        elif item.shape[0] != batch:
            raise invalid(
                f"feature '{item.name}' has shape {shape_text(item.shape)}, but the batch (first "
                f"dimension) of the other features is {batch}"
            )
    assert batch is not None
    rows = [{item.name: item.array[i] for item in inputs} for i in range(batch)]
    return serialize_input(examples_from_dicts(rows))
