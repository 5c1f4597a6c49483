"""V2 model metadata from a SavedModel's SignatureDefs.

V2 describes one set of inputs and outputs per model; a SavedModel has a set per signature. The
metadata lists the default signature's tensors (`serving_default`, what a request without a
`signature_name` parameter runs) and names every signature in its parameters:
`{"signature_name": "serving_default", "signatures": "serving_default,multi,..."}` (REST
`parameters`, gRPC `properties`; TensorFlow's internal `__saved_model_init_op` is left out). The
full SignatureDefs stay one call away at `/v1/models/{m}/metadata`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sigserve.codec import dtypes
from sigserve.codec.v2 import datatypes
from sigserve.protos import meta_graph_pb2
from sigserve.saved_model.signature_constants import DEFAULT_SERVING_SIGNATURE_DEF_KEY

PLATFORM = "tensorflow_savedmodel"
SIGNATURE_NAME = "signature_name"
SIGNATURES = "signatures"


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, str] = field(default_factory=dict)


def tensor_metadata(alias: str, info: meta_graph_pb2.TensorInfo) -> TensorMetadata:
    """One TensorInfo: its V2 datatype (TensorFlow's name, e.g. DT_COMPLEX64, for a type V2 cannot
    carry), its dims with -1 for an unknown size ([-1] when even the rank is unknown)."""
    datatype = datatypes.from_tf(info.dtype) or dtypes.name(info.dtype)
    shape = info.tensor_shape
    dims = (-1,) if shape.unknown_rank else tuple(d.size if d.size >= 0 else -1 for d in shape.dim)
    return TensorMetadata(alias, datatype, dims)


def model_metadata(
    name: str,
    versions: Iterable[int],
    signatures: Mapping[str, meta_graph_pb2.SignatureDef],
    signature_name: str = DEFAULT_SERVING_SIGNATURE_DEF_KEY,
) -> ModelMetadata:
    """The metadata of model `name`: `signature_name`'s tensors (none if the model lacks it)."""
    signature = signatures.get(signature_name)
    inputs = outputs = []
    callable_ = sorted(key for key in signatures if not key.startswith("__"))  # not __saved_model_init_op
    parameters = {SIGNATURES: ",".join(callable_)}
    if signature is not None:
        inputs = [tensor_metadata(a, i) for a, i in sorted(signature.inputs.items())]
        outputs = [tensor_metadata(a, i) for a, i in sorted(signature.outputs.items())]
        parameters[SIGNATURE_NAME] = signature_name
    return ModelMetadata(
        name=name,
        versions=[str(v) for v in sorted(versions)],
        platform=PLATFORM,
        inputs=inputs,
        outputs=outputs,
        parameters=parameters,
    )
