"""`sigserve.client.RestClient`: TF Serving's REST API (tfserving-api.md §1) with the same methods and
numpy results as the gRPC `Client` (MultiInference and reload have no REST form).

JSON carries no dtypes and names a lone output not at all, so `predict` reads the signature from
the model's metadata (once per model/version/label, cached) to type and name the outputs.

    from sigserve.client import RestClient
    with RestClient("http://localhost:8501") as c:
        c.predict("half_plus_two", {"x": np.array([[1.0]], np.float32)})  # {'y': array([[2.5]])}
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import numpy as np
import orjson

from sigserve.client import _common
from sigserve.client._common import ModelMetadata, VersionStatus
from sigserve.errors import Code, SigserveError

# The inverse of TF Serving's code -> HTTP table (errors.HTTP_STATUS), choosing the usual code for
# statuses that several codes share.
_CODE_BY_HTTP = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.ABORTED,
    413: Code.INVALID_ARGUMENT,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


def error_from_response(response: httpx.Response) -> SigserveError:
    code = _CODE_BY_HTTP.get(response.status_code, Code.UNKNOWN)
    try:
        body = _loads(response.content)
        message = str(body["error"]) if isinstance(body, dict) and "error" in body else response.text
    except ValueError:
        message = response.text
    return SigserveError(code, message)


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # NaN / Infinity tokens, which TF Serving writes for such floats


def _dumps(value: Any, *, nonfinite: bool = False) -> bytes:
    """JSON bytes; with NaN/Infinity present, the stdlib writer (orjson would write them as null,
    while TF Serving's parser takes the NaN / Infinity tokens)."""
    if nonfinite:
        return json.dumps(value).encode()
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def _has_nonfinite(array: np.ndarray) -> bool:
    return array.dtype.kind in "fc" and not bool(np.isfinite(array).all())


def _json_tensor(array: np.ndarray, *, plain: bool = False) -> Any:
    """A tensor as TF Serving's JSON value: strings as {"b64": ...} (valid for any DT_STRING input)."""
    if array.dtype == object:
        return _map_nested(array.tolist(), lambda v: {"b64": base64.b64encode(_as_bytes(v)).decode()})
    if not plain and array.dtype.kind in "fiub" and array.dtype.itemsize <= 8 and array.dtype != np.float16:
        return np.ascontiguousarray(array)  # orjson writes numpy arrays natively
    return array.tolist()


def _as_bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    raise TypeError(f"string tensors hold bytes or str, got {type(v).__name__}")


def _map_nested(value: Any, fn: Any) -> Any:
    if isinstance(value, list):
        return [_map_nested(v, fn) for v in value]
    return fn(value)


def _decode_strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _to_array(value: Any, dtype: int | None) -> np.ndarray:
    from sigserve.protos import types_pb2

    if dtype == types_pb2.DT_STRING:
        decoded = _decode_strings(value)
        shape = np.shape(np.asarray(decoded, dtype=object)) if isinstance(decoded, list) else ()
        out = np.empty(shape, dtype=object)
        if shape:
            out[...] = _object_fill(decoded, shape)
        else:
            out[()] = decoded
        return out
    if dtype is not None:
        from sigserve.codec import dtypes

        try:
            return np.asarray(value, dtype=dtypes.to_numpy_dtype(dtype))
        except Exception:
            pass
    return np.asarray(value)


def _object_fill(nested: Any, shape: tuple[int, ...]) -> np.ndarray:
    flat: list[Any] = []

    def walk(v: Any) -> None:
        if isinstance(v, list):
            for x in v:
                walk(x)
        else:
            flat.append(v)

    walk(nested)
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(shape)


def _json_feature_value(feature: Any) -> Any:
    kind = feature.WhichOneof("kind")
    if kind == "float_list":
        return [float(v) for v in feature.float_list.value]
    if kind == "int64_list":
        return [int(v) for v in feature.int64_list.value]
    if kind == "bytes_list":
        return [{"b64": base64.b64encode(v).decode()} for v in feature.bytes_list.value]
    return []


def _json_example(example: Any) -> dict[str, Any]:
    return {key: _json_feature_value(f) for key, f in example.features.feature.items()}


def _json_feature_dict(features: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in features.items():
        if isinstance(value, np.ndarray):
            value = value.reshape(-1).tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = {"b64": base64.b64encode(value).decode()}
        elif isinstance(value, list):
            value = [{"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v for v in value]
        out[key] = value
    return out


def examples_body(examples: Any, context: Any, signature_name: str | None) -> dict[str, Any]:
    """The classify/regress body: dict examples as given, Example/Input messages feature by feature."""
    body: dict[str, Any] = {}
    if signature_name:
        body["signature_name"] = signature_name
    if isinstance(examples, (list, tuple)) and all(isinstance(e, Mapping) for e in examples):
        body["examples"] = [_json_feature_dict(e) for e in examples]
        if context is not None:
            body["context"] = (
                _json_feature_dict(context)
                if isinstance(context, Mapping)
                else _json_example(_common.build_input([], context).example_list_with_context.context)
            )
        return body
    message = _common.build_input(examples, context)
    if message.WhichOneof("kind") == "example_list_with_context":
        body["context"] = _json_example(message.example_list_with_context.context)
        body["examples"] = [_json_example(e) for e in message.example_list_with_context.examples]
    else:
        body["examples"] = [_json_example(e) for e in message.example_list.examples]
    return body


class RestClient:
    """A TF Serving REST client: `RestClient("http://localhost:8501")`.

    `timeout` is the default per-request timeout in seconds (None: wait forever). Server errors are
    raised as `SigserveError`; the code is derived from the HTTP status (400 → INVALID_ARGUMENT, ...).
    `token`: an access token for a server started with `--auth_token_file` (sent as
    `Authorization: Bearer <token>`).
    """

    def __init__(
        self,
        base_url: str = "http://localhost:8501",
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        verify: Any = True,
        client: httpx.Client | None = None,
        token: str | None = None,
    ) -> None:
        # "localhost:8501" as `sigserve predict --rest --server` takes it: plain HTTP.
        self.base_url = (base_url if "://" in base_url else "http://" + base_url).rstrip("/")
        self.timeout = timeout
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        if client is not None and token:
            client.headers["Authorization"] = f"Bearer {token}"
        self._http = client or httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=all_headers, verify=verify
        )
        self._signatures = _common.SignatureCache(self.metadata)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------

    @staticmethod
    def _path(model: str, version: int | None, label: str | None, suffix: str = "") -> str:
        _common.check_version_choice(version, label)
        path = "/v1/models/" + urllib.parse.quote(model, safe="")
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += "/labels/" + urllib.parse.quote(label, safe="")
        return path + suffix

    def _request(self, method: str, path: str, body: bytes | None, timeout: float | None) -> Any:
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            if body is None:
                response = self._http.request(method, path, **kwargs)
            else:
                response = self._http.request(
                    method, path, content=body, headers={"Content-Type": "application/json"}, **kwargs
                )
        except httpx.TimeoutException as e:
            raise SigserveError(Code.DEADLINE_EXCEEDED, f"{method} {path}: {e or 'timed out'}") from None
        except httpx.RemoteProtocolError as e:
            raise SigserveError(
                Code.UNAVAILABLE,
                f"{self.base_url} did not answer HTTP/1.1: is it the gRPC port? Use the REST port "
                "(--rest_api_port, 8501 by default), or the gRPC API (Client; `sigserve predict` "
                f"without --rest). {method} {path}: {e}",
            ) from None
        except httpx.ConnectError as e:
            raise SigserveError(
                Code.UNAVAILABLE,
                f"nothing answers at {self.base_url}: is the server running, and is this its REST port "
                f"(--rest_api_port, 8501 by default)? {method} {path}: {e}",
            ) from None
        except httpx.TransportError as e:
            raise SigserveError(Code.UNAVAILABLE, f"{method} {self.base_url}{path}: {e}") from None
        if response.status_code != 200:
            raise error_from_response(response)
        return _loads(response.content)

    # -- API -------------------------------------------------------------------------------------

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
        """Run a signature on tensors (columnar `inputs` request). REST has no output filter, so
        `output_filter` selects outputs from the full answer."""
        signature = self._signatures.get(model, version, label, signature_name, timeout)
        arrays = {k: _common.as_array(v) for k, v in inputs.items()}
        nonfinite = any(_has_nonfinite(a) for a in arrays.values())
        body: dict[str, Any] = {"inputs": {k: _json_tensor(a, plain=nonfinite) for k, a in arrays.items()}}
        if signature_name:
            body["signature_name"] = signature_name
        data = _dumps(body, nonfinite=nonfinite)
        del body, arrays
        answer = self._request("POST", self._path(model, version, label, ":predict"), data, timeout)
        outputs = answer["outputs"]
        output_infos = dict(signature.outputs.items()) if signature is not None else {}
        if len(output_infos) == 1:
            ((alias, info),) = output_infos.items()
            result = {alias: _to_array(outputs, info.dtype)}
        elif isinstance(outputs, dict):
            result = {
                alias: _to_array(value, output_infos[alias].dtype if alias in output_infos else None)
                for alias, value in outputs.items()
            }
        else:
            result = {"outputs": _to_array(outputs, None)}
        if output_filter:
            wanted = list(output_filter)
            missing = [a for a in wanted if a not in result]
            if missing:
                raise SigserveError(
                    Code.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {missing[0]} "
                    f"Outputs expected to be in the set {{{','.join(sorted(result))}}}.",
                )
            result = {a: result[a] for a in wanted}
        return result

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
        """As `Client.classify`: `{"classes": str [n, k], "scores": float32 [n, k]}`."""
        body = examples_body(examples, context, signature_name)
        answer = self._request(
            "POST", self._path(model, version, label, ":classify"), _dumps(body, nonfinite=True), timeout
        )
        return _common.classification_arrays_from_json(answer["results"])

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
        """As `Client.regress`: one float32 per example."""
        body = examples_body(examples, context, signature_name)
        answer = self._request(
            "POST", self._path(model, version, label, ":regress"), _dumps(body, nonfinite=True), timeout
        )
        return np.asarray(answer["results"], dtype=np.float32)

    def metadata(
        self, model: str, version: int | None = None, label: str | None = None, timeout: float | None = None
    ) -> ModelMetadata:
        from google.protobuf import json_format

        from sigserve.protos import meta_graph_pb2

        answer = self._request("GET", self._path(model, version, label, "/metadata"), None, timeout)
        spec = answer.get("model_spec", {})
        raw = answer.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
        signatures = {
            key: json_format.ParseDict(value, meta_graph_pb2.SignatureDef(), ignore_unknown_fields=True)
            for key, value in raw.items()
        }
        return ModelMetadata(
            name=str(spec.get("name", model)), version=int(spec.get("version", 0)), signatures=signatures
        )

    def status(
        self, model: str, version: int | None = None, timeout: float | None = None
    ) -> list[VersionStatus]:
        answer = self._request("GET", self._path(model, version, None), None, timeout)
        out = []
        for entry in answer.get("model_version_status", []):
            status = entry.get("status", {})
            code = status.get("error_code", "OK")
            out.append(
                VersionStatus(
                    version=int(entry.get("version", 0)),
                    state=str(entry.get("state", "UNKNOWN")),
                    error_code=Code[code] if isinstance(code, str) else Code(int(code)),
                    error_message=str(status.get("error_message", "")),
                )
            )
        return out
