"""The gRPC methods as transport-neutral callables: method path → what runs, with request metrics and
the one mapping from `SigserveError` to a gRPC status.

Both gRPC transports (`grpc_h2.py`, the default, and grpcio's server in `grpc_server.py`) serve this
one table, so a method, its metrics and its error texts are the same whichever carries the bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from sigserve.errors import Code, SigserveError
from sigserve.protos import MODEL_SERVICE, PREDICTION_SERVICE
from sigserve.server.grpc_handlers import PredictionServices
from sigserve.server.metrics import Metrics

logger = logging.getLogger("sigserve.grpc")

MAX_ERROR_MESSAGE = 1024  # grpc_status_util.cc

Body = Callable[[bytes, "float | None"], bytes]
InlineBody = Callable[[bytes, "float | None"], "bytes | None"]
StreamBody = Callable[[AsyncIterator[bytes], "float | None"], AsyncIterator[bytes]]


@dataclass(frozen=True)
class Method:
    """One unary method. `body(request, timeout)` runs in the `--grpc_max_threads` pool: parsing a
    256 MB request, TensorFlow and serializing the answer would otherwise stall every connection.
    `inline`, if set, is tried on the event loop first and returns None (having done nothing) to send
    the call to the pool: for a step of a few µs the hop to a worker and back costs more than the call.
    `timeout` is the seconds left before the client's deadline, or None without one."""

    body: Body
    inline: InlineBody | None = None


@dataclass(frozen=True)
class StreamMethod:
    """One streaming method (server streaming, or bidirectional with `client_streaming`):
    `body(requests, timeout)` is an async generator on the event loop that takes the request
    messages as they arrive and yields the answers; raising `SigserveError` ends the call with its
    status. It runs on the loop, so it must only await, never block (health Watch waits for status
    changes; reflection answers from a descriptor pool). Without `client_streaming`, `requests`
    holds exactly one message."""

    body: StreamBody
    client_streaming: bool = False


def truncate_message(message: str) -> str:
    """TF Serving's ToGRPCStatus: at most 1024 characters, then `...TRUNCATED`."""
    if len(message) > MAX_ERROR_MESSAGE:
        return message[:MAX_ERROR_MESSAGE] + "...TRUNCATED"
    return message


def rpc_status(error: BaseException) -> tuple[int, str]:
    """The gRPC status (code number, message) that answers `error`: TensorFlow's codes are gRPC's
    codes, so a `SigserveError` passes through; anything else is a bug, answered INTERNAL and logged."""
    if isinstance(error, SigserveError):
        return int(error.code), truncate_message(error.message)
    logger.error("Unexpected error in a gRPC call", exc_info=error)
    return int(Code.INTERNAL), truncate_message(f"{type(error).__name__}: {error}")


def _counted(metrics: Metrics, api: str, body: Callable[..., tuple[bytes, str, str] | None]) -> InlineBody:
    """`body` with TF Serving's request_count / request_latency around it; None (an inline body
    that declined) is not counted: the pool call that follows is."""

    def run(data: bytes, timeout: float | None) -> bytes | None:
        started = time.perf_counter()
        model_name, signature, code = "", "", Code.OK
        declined = False
        try:
            result = body(data, timeout)
            if result is None:
                declined = True
                return None
            out, model_name, signature = result
            return out
        except SigserveError as e:
            code = e.code
            raise
        except Exception:
            code = Code.INTERNAL
            raise
        finally:
            if not declined:
                if not model_name:
                    model_name = _model_name_of(data)
                metrics.observe_request(
                    model_name=model_name,
                    api=api,
                    entrypoint="GRPC",
                    signature=signature,
                    code=code,
                    latency_seconds=time.perf_counter() - started,
                )

    return run


def _model_name_of(data: bytes) -> str:
    """The model name of a request that failed before it was resolved, for the request_count label."""
    from sigserve.protos import get_model_status_pb2

    # Field 1 of PredictRequest, ClassificationRequest and RegressionRequest is the ModelSpec, as in
    # GetModelStatusRequest, which has nothing else.
    try:
        return str(get_model_status_pb2.GetModelStatusRequest.FromString(data).model_spec.name)
    except Exception:
        return ""


def _untimed(body: Callable[[bytes], bytes]) -> Body:
    def run(data: bytes, timeout: float | None) -> bytes:
        return body(data)

    return run


def _never_declines(body: InlineBody) -> Body:
    def run(data: bytes, timeout: float | None) -> bytes:
        out = body(data, timeout)
        assert out is not None  # only an inline body declines
        return out

    return run


def method_table(services: PredictionServices, metrics: Metrics) -> dict[str, dict[str, Method]]:
    """{service name: {method name: Method}} for PredictionService and ModelService."""

    def counted(api: str, body: Callable[..., tuple[bytes, str, str] | None]) -> Body:
        return _never_declines(_counted(metrics, api, body))

    return {
        PREDICTION_SERVICE: {
            "Classify": Method(counted("Classify", services.classify)),
            "Regress": Method(counted("Regress", services.regress)),
            "Predict": Method(
                counted("Predict", services.predict), _counted(metrics, "Predict", services.predict_inline)
            ),
            "MultiInference": Method(services.multi_inference),
            "GetModelMetadata": Method(_untimed(services.get_model_metadata)),
        },
        MODEL_SERVICE: {
            "GetModelStatus": Method(_untimed(services.get_model_status)),
            "HandleReloadConfigRequest": Method(_untimed(services.handle_reload_config_request)),
        },
    }
