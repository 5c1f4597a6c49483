"""An inference request and its answer, whichever framing carried them (REST JSON, REST binary,
gRPC typed or raw contents): what the service needs from a V2 call, checked once.

The parameters sigserve reads:

* request `signature_name` (string): the SignatureDef to run; "" or absent is `serving_default`;
* request `timeout` (integer, microseconds, Triton's unit): the deadline; 0 or absent is none;
* request `binary_data_output` (bool, REST): every output as binary data unless the output says;
* output `binary_data` (bool, REST): this output as binary data (or not);
* output `classification` (integer N > 0): the N highest values per batch row, as BYTES
  "<value>:<index>" (Triton's classification extension);
* input `binary_data_size` (integer, REST): this input's bytes after the JSON header.

Any other parameter is accepted and ignored, as the spec lets a server do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from sigserve.codec import dtypes
from sigserve.codec.v2 import datatypes, tensors
from sigserve.codec.v2.tensors import invalid

ParamValue = str | int | float | bool
Parameters = dict[str, ParamValue]

SIGNATURE_NAME = "signature_name"
TIMEOUT = "timeout"
BINARY_DATA_OUTPUT = "binary_data_output"
BINARY_DATA = "binary_data"
BINARY_DATA_SIZE = "binary_data_size"
CLASSIFICATION = "classification"

_INT64_MAX = (1 << 63) - 1


def bool_parameter(parameters: Parameters, key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is None or type(value) is bool:
        return value
    raise invalid(f"{where}parameter '{key}' must be true or false, not {tensors.brief(value)}")


def int_parameter(parameters: Parameters, key: str, where: str, minimum: int) -> int | None:
    value = parameters.get(key)
    if value is None:
        return None
    if type(value) is not int or not minimum <= value <= _INT64_MAX:
        raise invalid(
            f"{where}parameter '{key}' must be an integer of at least {minimum}, not {tensors.brief(value)}"
        )
    return value


@dataclass
class InferInput:
    """One input tensor, decoded and checked against its own shape."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray
    parameters: Parameters = field(default_factory=dict)


@dataclass
class RequestedOutput:
    """One entry of the request's `outputs`: which output, and how to send it."""

    name: str
    parameters: Parameters = field(default_factory=dict)
    binary: bool | None = None
    classification: int = 0

    def __post_init__(self) -> None:
        where = f"output '{self.name}': "
        self.binary = bool_parameter(self.parameters, BINARY_DATA, where)
        self.classification = int_parameter(self.parameters, CLASSIFICATION, where, 1) or 0


@dataclass
class InferRequest:
    """A V2 inference request. `raw` is true when a gRPC request sent its inputs as raw contents
    (the answer then uses raw contents too)."""

    inputs: list[InferInput]
    outputs: list[RequestedOutput] = field(default_factory=list)
    id: str = ""
    parameters: Parameters = field(default_factory=dict)
    model_name: str = ""
    model_version: str = ""
    raw: bool = False
    signature_name: str = ""
    timeout: float | None = None  # seconds
    binary_output: bool = False

    def __post_init__(self) -> None:
        name = self.parameters.get(SIGNATURE_NAME, "")
        if not isinstance(name, str):
            raise invalid(
                f"parameter '{SIGNATURE_NAME}' must be a string naming a SignatureDef of the model, "
                f'e.g. {{"{SIGNATURE_NAME}": "serving_default"}}'
            )
        self.signature_name = name
        micros = int_parameter(self.parameters, TIMEOUT, "", 0)
        self.timeout = micros / 1e6 if micros else None
        self.binary_output = bool(bool_parameter(self.parameters, BINARY_DATA_OUTPUT, ""))
        seen: set[str] = set()
        for output in self.outputs:
            if output.name in seen:
                raise invalid(f"output '{output.name}' is requested twice")
            seen.add(output.name)

    def output_filter(self) -> list[str] | None:
        """The requested output names, in order, or None for every output."""
        return [o.name for o in self.outputs] or None

    def feeds(self, signature_inputs: Mapping[str, int], signature_name: str) -> dict[str, np.ndarray]:
        """The inputs as the signature's feeds (alias -> array), each datatype checked against the
        signature's DataType for that alias. Missing inputs are left to the runtime, which knows the
        signature's defaults."""
        out: dict[str, np.ndarray] = {}
        for item in self.inputs:
            if item.name in out:
                raise invalid(f"input '{item.name}' is given twice")
            dt = signature_inputs.get(item.name)
            if dt is None:
                known = ", ".join(sorted(signature_inputs)[:20]) or "(none)"
                raise invalid(
                    f"unknown input '{item.name}': signature '{signature_name}' takes {known}; pick "
                    f'another signature with the request parameter "{SIGNATURE_NAME}"'
                )
            expected = datatypes.from_tf(dt)
            if expected is None:
                raise invalid(
                    f"input '{item.name}' of signature '{signature_name}' is {dtypes.name(dt)}, "
                    "which the Open Inference Protocol cannot carry; use the TF Serving API for it"
                )
            if item.datatype != expected:
                raise invalid(
                    f"input '{item.name}' is {item.datatype}, but signature '{signature_name}' takes "
                    f"{expected} ({dtypes.name(dt)}) for it"
                )
            out[item.name] = item.array
        return out


@dataclass
class InferOutput:
    """One output tensor of the answer; `binary` asks REST to send it after the JSON header."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray
    binary: bool = False


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[InferOutput]
    parameters: Parameters = field(default_factory=dict)


def response(
    request: InferRequest, results: Mapping[str, np.ndarray], model_name: str, model_version: str
) -> InferResponse:
    """The answer to `request` from the signature's results: the requested outputs in the requested
    order (else every output by name), the classification extension applied, datatypes named."""
    requested = {o.name: o for o in request.outputs}
    names = [o.name for o in request.outputs] if request.outputs else sorted(results)
    outputs: list[InferOutput] = []
    for name in names:
        array = np.asarray(results[name])
        spec = requested.get(name)
        what = f"output '{name}'"
        if spec is not None and spec.classification:
            array = tensors.classify(array, spec.classification, what)
        datatype = datatypes.from_numpy(array.dtype)
        if datatype is None:
            raise invalid(
                f"{what} is {array.dtype}, which the Open Inference Protocol cannot carry; leave it out "
                "by naming the outputs you want in the request's 'outputs'"
            )
        binary = request.binary_output if spec is None or spec.binary is None else spec.binary
        outputs.append(InferOutput(name, datatype, tuple(array.shape), array, binary))
    return InferResponse(model_name, model_version, request.id, outputs)


def parse_version(version: str) -> tuple[int | None, str | None]:
    """A V2 version segment as (version number, label): "" or "-1" is the server's choice (latest),
    digits are a version number, anything else is a version label, as in TF Serving's
    /versions/N and /labels/L."""
    if version in ("", "-1"):
        return None, None
    if version.isascii() and version.isdigit():
        number = int(version)
        if number > _INT64_MAX:
            raise invalid(f"model version {version[:32]} is out of range (at most {_INT64_MAX})")
        return number, None
    return None, version
