"""Arrays between the test process and the client scripts (.npz files), shared by the scripts in this
folder. numpy only: the scripts import different clients whose protos cannot share a process."""

from __future__ import annotations

from typing import Any

import numpy as np

BF16 = "#bf16"  # .npz has no bfloat16: such arrays travel as their uint16 bits under `<key>#bf16`
_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bfloat16": "BF16",
    "object": "BYTES",
}


def load(arrays: Any, key: str) -> np.ndarray:
    if key + BF16 in arrays.files:
        import ml_dtypes

        return np.asarray(arrays[key + BF16]).view(ml_dtypes.bfloat16)
    return np.asarray(arrays[key])


def store(out: dict[str, np.ndarray], key: str, array: np.ndarray) -> None:
    if array.dtype.name == "bfloat16":
        out[key + BF16] = array.view(np.uint16)
    else:
        out[key] = array


def datatype_of(array: np.ndarray) -> str:
    return _DATATYPES[array.dtype.name]
