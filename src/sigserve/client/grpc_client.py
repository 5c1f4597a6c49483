"""`sigserve.client.Client`: TF Serving's gRPC API from Python with numpy in and numpy out, without
TensorFlow or tensorflow-serving-api installed.

It speaks to sigserve and to TF Serving alike: the method paths are TF Serving's and the messages
are byte-identical (sigserve's protos keep TensorFlow's field numbers).

    from sigserve.client import Client
    with Client("localhost:8500") as c:
        c.predict("half_plus_two", {"x": np.array([[1.0]], np.float32)})  # {'y': array([[2.5]])}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from sigserve.client import _common
from sigserve.client._common import ModelMetadata, VersionStatus
from sigserve.errors import Code, SigserveError
from sigserve.protos import (
    MODEL_SERVICE,
    PREDICTION_SERVICE,
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

INT32_MAX = 2**31 - 1
_CODE_BY_STATUS = {status: Code(status.value[0]) for status in grpc.StatusCode}


def error_from_rpc(error: grpc.RpcError, target: str = "") -> SigserveError:
    """The server's status as the project's one error type (same code number, same message).

    grpcio's own connection errors get a hint at the usual cause: a REST port, or no server."""
    call: Any = error
    try:
        code = _CODE_BY_STATUS.get(call.code(), Code.UNKNOWN)
        message = call.details() or ""
    except Exception:  # an RpcError that is not a Call
        code, message = Code.UNKNOWN, str(error)
    if code in (Code.UNAVAILABLE, Code.UNKNOWN, Code.INTERNAL) and target:
        if "http1.x server" in message or "Failed parsing HTTP/2" in message:
            message = (
                f"{target} answers HTTP/1.x, not gRPC: is it the REST port? Use the gRPC port (--port, "
                "8500 by default), or the REST API (RestClient; `sigserve predict --rest`). "
                f"grpc: {message}"
            )
            code = Code.UNAVAILABLE
        elif "Connection refused" in message:
            message = (
                f"nothing listens on {target}: is the server running, and is this its gRPC port "
                f"(--port, 8500 by default)? grpc: {message}"
            )
            code = Code.UNAVAILABLE
    return SigserveError(code, message)


class Client:
    """A TF Serving gRPC client. `target` is `host:port` or `unix:/path/to.sock`.

    `credentials`: `grpc.ssl_channel_credentials(...)` for TLS (None: plaintext). `timeout`: default
    deadline in seconds for every call (None: no deadline); each method also takes `timeout=`.
    Numeric inputs travel as `tensor_content` (raw bytes; fastest to encode and decode).
    Every server error is raised as `SigserveError` with the server's code and message.

    `predict` inputs are arrays, Python values or TensorProtos. Arrays and values take the
    signature's dtype where the cast is same-kind (a float64 array or `[[1.0]]` for a DT_FLOAT input),
    as the REST API, `sigserve predict` and `sigserve.load` do; the dtypes come from the model's
    metadata, read once per model/version/label and cached. TensorProtos are sent exactly as given.
    `token`: an access token for a server started with `--auth_token_file` (sent as the metadata
    `authorization: Bearer <token>`).
    """

    def __init__(
        self,
        target: str = "localhost:8500",
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        timeout: float | None = None,
        compression: grpc.Compression | None = None,
        token: str | None = None,
    ) -> None:
        from sigserve.codec import tensor as codec_tensor

        self._tensor = codec_tensor
        self.target = target
        self.timeout = timeout
        given = {k for k, _ in options}
        channel_options = [
            (k, v)
            for k, v in (
                ("grpc.max_receive_message_length", INT32_MAX),
                ("grpc.max_send_message_length", INT32_MAX),
            )
            if k not in given
        ] + list(options)
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=channel_options, compression=compression)
        else:
            self.channel = grpc.secure_channel(
                target, credentials, options=channel_options, compression=compression
            )
        self._methods: dict[str, Any] = {}
        self._signatures = _common.SignatureCache(self._metadata_or_none)
        # Sent with every call: a server started with --auth_token_file checks it.
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None

    # -- plumbing --------------------------------------------------------------------------------

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, service: str, method: str, request: Any, response_class: Any, timeout: float | None
    ) -> Any:
        path = f"/{service}/{method}"
        stub = self._methods.get(path)
        if stub is None:
            stub = self.channel.unary_unary(
                path,
                request_serializer=_serialize,
                response_deserializer=response_class.FromString,
            )
            self._methods[path] = stub
        try:
            return stub(
                request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise error_from_rpc(e, self.target) from None

    @staticmethod
    def _spec(
        spec: Any, model: str, version: int | None, label: str | None, signature_name: str | None = None
    ) -> None:
        _common.check_version_choice(version, label)
        spec.name = model
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label
        if signature_name:
            spec.signature_name = signature_name

    # -- PredictionService -----------------------------------------------------------------------

    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        output_filter: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run a signature on tensors: `{alias: array}` in, `{alias: array}` out (strings as bytes)."""
        return self.predict_with_spec(model, inputs, signature_name, version, label, output_filter, timeout)[
            0
        ]

    def predict_with_spec(
        self,
        model: str,
        inputs: Mapping[str, Any],
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        output_filter: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> tuple[dict[str, np.ndarray], Any]:
        """`predict`, plus the response's ModelSpec (which version and signature answered)."""
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model, version, label, signature_name)
        dtypes = self._input_dtypes(model, version, label, signature_name, inputs, timeout)
        from_ndarray = self._tensor.from_ndarray
        for alias, value in inputs.items():
            if _common.is_tensor_proto(value):
                request.inputs[alias].ParseFromString(value.SerializeToString())
                continue
            array = _common.cast_to(_common.as_array(value), dtypes.get(alias))
            numeric = array.dtype != object
            request.inputs[alias].CopyFrom(from_ndarray(array, tensor_content=numeric))
            del array
        if output_filter:
            request.output_filter.extend(output_filter)
        try:
            response = self._call(
                PREDICTION_SERVICE, "Predict", request, predict_pb2.PredictResponse, timeout
            )
        except SigserveError:
            self._signatures.forget(model, version, label)  # a new version may have other dtypes
            raise
        del request
        to_ndarray = self._tensor.to_ndarray
        outputs = {alias: to_ndarray(proto, alias) for alias, proto in response.outputs.items()}
        spec = response.model_spec
        return outputs, spec

    def _input_dtypes(
        self,
        model: str,
        version: int | None,
        label: str | None,
        signature_name: str | None,
        inputs: Mapping[str, Any],
        timeout: float | None,
    ) -> dict[str, np.dtype[Any]]:
        """{alias: numpy dtype} of the signature's inputs; empty when every input is a TensorProto
        (no metadata needed) or the signature is unknown (the Predict call reports it)."""
        if all(_common.is_tensor_proto(v) for v in inputs.values()):
            return {}
        signature = self._signatures.get(model, version, label, signature_name, timeout)
        if signature is None:
            return {}
        from sigserve.codec import dtypes

        out: dict[str, np.dtype[Any]] = {}
        for alias, info in signature.inputs.items():
            try:
                out[alias] = dtypes.to_numpy_dtype(info.dtype)
            except SigserveError:  # a dtype numpy has no equivalent for: sent as given
                continue
        return out

    def _metadata_or_none(
        self, model: str, version: int | None, label: str | None, timeout: float | None
    ) -> ModelMetadata:
        """Metadata for the signature cache; a server without GetModelMetadata gets no casting."""
        try:
            return self.metadata(model, version, label, timeout)
        except SigserveError as e:
            if e.code != Code.UNIMPLEMENTED:
                raise
            return ModelMetadata(name=model, version=0, signatures={})

    def classify(
        self,
        model: str,
        examples: Any,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        context: Any = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Classify tf.Examples: `examples` is a list of feature dicts (`[{"x": 1.0}]`), a list of
        Example messages, or an `Input`. Returns `{"classes": str [n, k], "scores": float32 [n, k]}`."""
        request = classification_pb2.ClassificationRequest()
        self._spec(request.model_spec, model, version, label, signature_name)
        request.input.CopyFrom(_common.build_input(examples, context))
        response = self._call(
            PREDICTION_SERVICE, "Classify", request, classification_pb2.ClassificationResponse, timeout
        )
        return _common.classification_arrays(response.result)

    def regress(
        self,
        model: str,
        examples: Any,
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        context: Any = None,
        timeout: float | None = None,
    ) -> np.ndarray:
        """Regress tf.Examples (same `examples` forms as `classify`): one float32 per example."""
        request = regression_pb2.RegressionRequest()
        self._spec(request.model_spec, model, version, label, signature_name)
        request.input.CopyFrom(_common.build_input(examples, context))
        response = self._call(
            PREDICTION_SERVICE, "Regress", request, regression_pb2.RegressionResponse, timeout
        )
        return _common.regression_array(response.result)

    def multi_inference(
        self,
        model: str,
        examples: Any,
        tasks: Sequence[tuple[str, str]],
        version: int | None = None,
        label: str | None = None,
        context: Any = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """Several classify/regress signatures over the same examples in one run.

        `tasks` is `[(signature_name, "classify" | "regress"), ...]`; the answer is one entry per task,
        in order: the `classify` dict or the `regress` array.
        """
        request = inference_pb2.MultiInferenceRequest()
        for signature_name, method in tasks:
            task = request.tasks.add()
            self._spec(task.model_spec, model, version, label, signature_name)
            task.method_name = _common.method_name(method)
        request.input.CopyFrom(_common.build_input(examples, context))
        response = self._call(
            PREDICTION_SERVICE, "MultiInference", request, inference_pb2.MultiInferenceResponse, timeout
        )
        results: list[Any] = []
        for result in response.results:
            if result.WhichOneof("result") == "classification_result":
                results.append(_common.classification_arrays(result.classification_result))
            else:
                results.append(_common.regression_array(result.regression_result))
        return results

    def metadata(
        self, model: str, version: int | None = None, label: str | None = None, timeout: float | None = None
    ) -> ModelMetadata:
        """The SignatureDefs of a model version (GetModelMetadata, field `signature_def`)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec, model, version, label)
        request.metadata_field.append("signature_def")
        response = self._call(
            PREDICTION_SERVICE,
            "GetModelMetadata",
            request,
            get_model_metadata_pb2.GetModelMetadataResponse,
            timeout,
        )
        packed = response.metadata["signature_def"]
        signature_map = get_model_metadata_pb2.SignatureDefMap.FromString(packed.value)
        return ModelMetadata(
            name=response.model_spec.name,
            version=int(response.model_spec.version.value),
            signatures=dict(signature_map.signature_def.items()),
        )

    # -- ModelService ----------------------------------------------------------------------------

    def status(
        self, model: str, version: int | None = None, timeout: float | None = None
    ) -> list[VersionStatus]:
        """Every known version of a model (or just `version`) with its state, newest first."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version, None)
        response = self._call(
            MODEL_SERVICE, "GetModelStatus", request, get_model_status_pb2.GetModelStatusResponse, timeout
        )
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            VersionStatus(
                version=int(s.version),
                state=state_name(s.state),
                error_code=Code(s.status.error_code),
                error_message=s.status.error_message,
            )
            for s in response.model_version_status
        ]

    def reload_config(
        self, config: Any, metric_names: Iterable[str] = (), timeout: float | None = None
    ) -> dict[str, int]:
        """Replace the served models (HandleReloadConfigRequest). `config` is a ModelServerConfig
        (sigserve's or TF Serving's message, or its text form). Returns each requested metric's increase."""
        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(_common.parse_model_server_config(config))
        request.metric_names.extend(metric_names)
        response = self._call(
            MODEL_SERVICE,
            "HandleReloadConfigRequest",
            request,
            model_management_pb2.ReloadConfigResponse,
            timeout,
        )
        if response.status.error_code != 0:  # a server that reports failure only in the body
            raise SigserveError(Code(response.status.error_code), response.status.error_message)
        return {m.name: int(m.int64_value_increase) for m in response.metric}


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())
