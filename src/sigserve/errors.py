"""One error type for every layer: a canonical status code and a message.

The layer that knows what went wrong raises `SigserveError(Code.X, "message")` with TF Serving's text;
nothing above it re-words the message. The REST front end maps the code to HTTP with `HTTP_STATUS`,
the gRPC front end passes the code through (TensorFlow's codes *are* gRPC's codes). Those are the only
two mappings in the project.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """Canonical error codes: tensorflow.error.Code, numerically equal to grpc.StatusCode values."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class SigserveError(Exception):
    """An error with a canonical code, raised by the layer that knows, shown to the user verbatim."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = Code(code)
        self.message = message

    def __repr__(self) -> str:
        return f"SigserveError({self.code.name}, {self.message!r})"

    def __reduce__(self) -> tuple[type[SigserveError], tuple[Code, str]]:
        # Pickled with both arguments, so it crosses process boundaries (a Ray worker's error
        # reaches the driver as itself; Exception's default pickles only the message).
        return (SigserveError, (self.code, self.message))

    def __str__(self) -> str:
        return self.message

    def to_string(self) -> str:
        """absl's Status::ToString() form, used when TF Serving nests one error inside another."""
        return f"{self.code.name}: {self.message}"


def invalid_argument(message: str) -> SigserveError:
    return SigserveError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> SigserveError:
    return SigserveError(Code.NOT_FOUND, message)


def failed_precondition(message: str) -> SigserveError:
    return SigserveError(Code.FAILED_PRECONDITION, message)


def unimplemented(message: str) -> SigserveError:
    return SigserveError(Code.UNIMPLEMENTED, message)


def unavailable(message: str) -> SigserveError:
    return SigserveError(Code.UNAVAILABLE, message)


def internal(message: str) -> SigserveError:
    return SigserveError(Code.INTERNAL, message)


# TF Serving's ToHTTPStatusCode (http_server.cc). Anything not listed is 500.
HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(code: Code) -> int:
    return HTTP_STATUS.get(code, 500)
