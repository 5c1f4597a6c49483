"""What the gRPC and REST clients share: result types, numpy conversions and tf.Example inputs.

Nothing here imports TensorFlow or tensorflow-serving-api: messages are sigserve's own (same field
numbers as TF Serving's), and a TF message handed in by a caller is converted through its bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sigserve.errors import Code
from sigserve.protos import example_pb2, input_pb2

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """GetModelMetadata's answer: the resolved model version and every SignatureDef it serves."""

    name: str
    version: int
    signatures: dict[str, Any]  # signature key -> sigserve.protos.meta_graph_pb2.SignatureDef


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One entry of GetModelStatus: a version, its state name (`AVAILABLE`, `END`, ...) and its error."""

    version: int
    state: str
    error_code: Code
    error_message: str


def check_version_choice(version: int | None, label: str | None) -> None:
    if version is not None and label is not None:
        raise ValueError(
            f"Both model version ({version}) and model version label ({label}) cannot be supplied; "
            "give one, e.g. version=2 or label='stable'"
        )


def as_array(value: Any) -> np.ndarray:
    """A caller's input as the ndarray sent: str becomes UTF-8 bytes (strings travel as bytes)."""
    array = np.asarray(value)
    if array.dtype.kind == "U":
        flat = [s.encode("utf-8") for s in array.reshape(-1).tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(array.shape)
    if array.dtype.kind == "S":
        flat = array.reshape(-1).tolist()
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(array.shape)
    return array


def is_tensor_proto(value: Any) -> bool:
    """A TensorProto, sigserve's or TensorFlow's (`tf.make_tensor_proto`): sent as given."""
    descriptor = getattr(value, "DESCRIPTOR", None)
    return descriptor is not None and descriptor.full_name.endswith("tensorflow.TensorProto")


def cast_to(array: np.ndarray, dtype: np.dtype[Any] | None) -> np.ndarray:
    """`array` as the signature input's dtype where numpy calls that a same-kind cast (float64 to
    float32, int64 to int32, int to float): what TF Serving's JSON API and `sigserve predict` do with
    numbers. Anything else (float to int, bytes to numbers) is sent as is, for the server to reject
    with TF Serving's message rather than be truncated here."""
    if dtype is None or array.dtype == dtype or array.dtype.kind == "O" or dtype.kind == "O":
        return array
    try:
        castable = np.can_cast(array.dtype, dtype, casting="same_kind")
    except TypeError:  # a dtype numpy cannot compare (e.g. an ml_dtypes one)
        castable = array.dtype.kind == dtype.kind == "f"
    return array.astype(dtype) if castable else array


class SignatureCache:
    """Each model's SignatureDefs, read from its metadata once per (model, version, label), so that
    the clients can type inputs (gRPC) and name and type outputs (REST) like the other front ends.
    A signature missing from the cached copy triggers a re-read (a new version may have it)."""

    def __init__(self, fetch: Callable[[str, int | None, str | None, float | None], ModelMetadata]):
        self._fetch = fetch
        self._signatures: dict[tuple[str, int | None, str | None], dict[str, Any]] = {}

    def get(
        self,
        model: str,
        version: int | None,
        label: str | None,
        signature_name: str | None,
        timeout: float | None = None,
    ) -> Any:
        """The SignatureDef, or None if the model has no such signature (the server says so)."""
        key = (model, version, label)
        name = signature_name or DEFAULT_SIGNATURE
        signatures = self._signatures.get(key)
        if signatures is None or (signatures and name not in signatures):  # {}: a server without metadata
            signatures = self._fetch(model, version, label, timeout).signatures
            self._signatures[key] = signatures
        return signatures.get(name)

    def forget(self, model: str, version: int | None, label: str | None) -> None:
        self._signatures.pop((model, version, label), None)


def method_name(method: str) -> str:
    """`classify` / `regress` (or the full method name) as the InferenceTask method name."""
    if method in ("classify", CLASSIFY_METHOD):
        return CLASSIFY_METHOD
    if method in ("regress", REGRESS_METHOD):
        return REGRESS_METHOD
    return method  # sent as given: the server answers UNIMPLEMENTED with TF Serving's message


def _reparse(message: Any, cls: Any) -> Any:
    """A message of another proto package (e.g. TensorFlow's own tf.train.Example) as ours, by bytes."""
    if isinstance(message, cls):
        return message
    if hasattr(message, "SerializeToString"):
        return cls.FromString(message.SerializeToString())
    raise TypeError(f"expected a {cls.DESCRIPTOR.full_name} message, got {type(message).__name__}")


def _example_of(value: Any) -> Any:
    if isinstance(value, Mapping):
        from sigserve.codec import example as codec_example

        built = codec_example.examples_from_dicts([_plain_features(value)])
        return built.example_list.examples[0]
    return _reparse(value, example_pb2.Example)


def _plain_features(features: Mapping[str, Any]) -> dict[str, Any]:
    """numpy scalars/arrays in a feature dict as the Python values the JSON rules expect."""
    out: dict[str, Any] = {}
    for key, value in features.items():
        if isinstance(value, np.ndarray):
            value = value.reshape(-1).tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def build_input(examples: Any, context: Any = None) -> Any:
    """An `Input` from: an Input message; a list of dicts (feature -> value(s)) or Example messages;
    with an optional context (dict or Example), giving `example_list_with_context`.

    Dict values follow TF Serving's JSON rules: float -> float_list, int/bool -> int64_list,
    str/bytes -> bytes_list; a list is one feature's values.
    """
    if not isinstance(examples, (list, tuple)):
        if context is not None:
            raise ValueError("context is given with a full Input message: put it in the Input instead")
        return _reparse(examples, input_pb2.Input)
    message = input_pb2.Input()
    if context is not None:
        target = message.example_list_with_context
        target.context.CopyFrom(_example_of(context))
    else:
        target = message.example_list
    if all(isinstance(e, Mapping) for e in examples) and examples:
        from sigserve.codec import example as codec_example

        built = codec_example.examples_from_dicts([_plain_features(e) for e in examples])
        target.examples.extend(built.example_list.examples)
    else:
        target.examples.extend(_example_of(e) for e in examples)
    return message


def classification_arrays(result: Any) -> dict[str, np.ndarray]:
    """ClassificationResult as `{"classes": str [n, k], "scores": float32 [n, k]}`.

    Labels are `""` and scores 0.0 where the signature has no such output (TF Serving's proto defaults).
    """
    labels = [[c.label for c in item.classes] for item in result.classifications]
    scores = [[c.score for c in item.classes] for item in result.classifications]
    return {"classes": _string_matrix(labels), "scores": _float_matrix(scores)}


def classification_arrays_from_json(results: Sequence[Sequence[Sequence[Any]]]) -> dict[str, np.ndarray]:
    labels = [[str(pair[0]) for pair in item] for item in results]
    scores = [[float(pair[1]) for pair in item] for item in results]
    return {"classes": _string_matrix(labels), "scores": _float_matrix(scores)}


def _string_matrix(rows: list[list[str]]) -> np.ndarray:
    widths = {len(r) for r in rows}
    if len(widths) > 1:  # ragged: one object array per example
        out = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):
            out[i] = np.array(row, dtype=object)
        return out
    width = widths.pop() if widths else 0
    out = np.empty((len(rows), width), dtype=object)
    for i, row in enumerate(rows):
        out[i, :] = row
    return out


def _float_matrix(rows: list[list[float]]) -> np.ndarray:
    if len({len(r) for r in rows}) > 1:
        out = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):
            out[i] = np.asarray(row, dtype=np.float32)
        return out
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1 if rows and rows[0] else 0)


def regression_array(result: Any) -> np.ndarray:
    return np.asarray([r.value for r in result.regressions], dtype=np.float32)


def parse_model_server_config(config: Any) -> Any:
    """A ModelServerConfig from our message, anybody's message (by bytes) or its text form."""
    from sigserve.protos import model_server_config_pb2

    cls = model_server_config_pb2.ModelServerConfig
    if isinstance(config, str):
        from google.protobuf import text_format

        message = cls()
        text_format.Parse(config, message)
        return message
    return _reparse(config, cls)
