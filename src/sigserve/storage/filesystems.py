"""One fsspec filesystem per store, configured from the environment each SDK reads, and store
errors turned into one line a user can act on.

Credentials come from each SDK's usual chain (`AWS_ACCESS_KEY_ID`/`AWS_PROFILE`/instance role,
`GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_CONNECTION_STRING`/`AZURE_STORAGE_ACCOUNT_NAME`, ...).
For S3-compatible stores (MinIO, Ceph) the endpoint is `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, or
TF Serving's S3 plugin's `S3_ENDPOINT` (host:port; `S3_USE_HTTPS=0` for http, `S3_VERIFY_SSL=0` to skip
certificate checks), and the region `AWS_REGION`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from sigserve.errors import Code, SigserveError
from sigserve.storage.uri import scheme_of

logger = logging.getLogger("sigserve.storage")

# Bounded so that an unreachable store fails a poll in seconds rather than minutes.
S3_CONNECT_TIMEOUT_SECONDS = 5
S3_READ_TIMEOUT_SECONDS = 60
S3_ATTEMPTS = 3

_AZURE_HINT = (
    "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY"
)
_CREDENTIALS_HINT = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an IAM role)",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or run as a service account)",
    "az": _AZURE_HINT,
    "abfs": _AZURE_HINT,
}
_REJECTED = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
}
_NO_CREDENTIALS = {"NoCredentialsError", "DefaultCredentialsError"}


def s3_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """The S3 endpoint override, or "" for AWS itself."""
    env = os.environ if environ is None else environ
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if env.get(name):
            return env[name]
    endpoint = env.get("S3_ENDPOINT", "")
    if endpoint and "://" not in endpoint:
        scheme = "http" if env.get("S3_USE_HTTPS", "1").strip().lower() in ("0", "false") else "https"
        endpoint = f"{scheme}://{endpoint}"
    return endpoint


def storage_options(protocol: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fsspec constructor options for `protocol` in this environment."""
    env = os.environ if environ is None else environ
    if protocol != "s3":
        return {}
    client: dict[str, Any] = {}
    endpoint = s3_endpoint(env)
    if endpoint:
        client["endpoint_url"] = endpoint
    if env.get("S3_VERIFY_SSL", "1").strip().lower() in ("0", "false"):
        client["verify"] = False
    if env.get("AWS_REGION"):
        client["region_name"] = env["AWS_REGION"]
    return {
        "client_kwargs": client,
        "config_kwargs": {
            "connect_timeout": S3_CONNECT_TIMEOUT_SECONDS,
            "read_timeout": S3_READ_TIMEOUT_SECONDS,
            "retries": {"max_attempts": S3_ATTEMPTS, "mode": "standard"},
        },
        # One stream per file (files are fetched in parallel instead): s3fs's ranged reads re-request
        # the object per range, which S3-compatible servers such as MinIO or moto serve slowly.
        "max_concurrency": 1,
    }


def filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec filesystem, path in it) for `uri`. fsspec caches instances by their options, so a
    changed endpoint or region gets a new client."""
    import fsspec

    scheme = scheme_of(uri)
    try:
        fs = fsspec.filesystem(scheme.protocol, **storage_options(scheme.protocol))
    except Exception as e:
        raise describe(e, uri) from None
    if scheme.protocol == "s3":
        fs.retries = S3_ATTEMPTS  # s3fs's own retries of a failed call (a class attribute, 5)
    return fs, fs._strip_protocol(uri)


def _chain(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while e is not None and e not in out and len(out) < 10:
        out.append(e)
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return out


def _aws_code(chain: list[BaseException]) -> tuple[str, str]:
    for e in chain:
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            if error.get("Code"):
                return str(error["Code"]), str(error.get("Message", ""))
    return "", ""


def bucket_of(uri: str) -> str:
    rest = uri.split("://", 1)[-1]
    return rest.split("/", 1)[0]


def describe(e: BaseException, uri: str) -> SigserveError:
    """One line for a store error on `uri`, with the code a client can act on. A SigserveError passes
    through unchanged."""
    if isinstance(e, SigserveError):
        return e
    try:
        protocol = scheme_of(uri).protocol
    except SigserveError as scheme_error:
        return scheme_error
    chain = _chain(e)
    names = {type(x).__name__ for x in chain}
    code, aws_message = _aws_code(chain)
    text = " ".join(str(x) for x in chain)
    hint = _CREDENTIALS_HINT.get(protocol, "check the store's credentials")
    endpoint = s3_endpoint() if protocol == "s3" else ""
    where = f" at {endpoint}" if endpoint else ""
    if (
        "NoCredentialsError" in names
        or "DefaultCredentialsError" in names
        or "Unable to locate credentials" in text
    ):
        return SigserveError(Code.UNAUTHENTICATED, f"{uri}: no credentials found; {hint}")
    if code in (
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
    ):
        return SigserveError(
            Code.UNAUTHENTICATED, f"{uri}: the store{where} rejected the credentials ({code}); {hint}"
        )
    if code == "NoSuchBucket" or "The specified bucket does not exist" in text:
        return SigserveError(
            Code.NOT_FOUND,
            f"{uri}: bucket '{bucket_of(uri)}' does not exist{where}; create it or fix the base path",
        )
    if code in ("AccessDenied", "AllAccessDisabled", "AccountProblem") or isinstance(e, PermissionError):
        detail = f" ({code})" if code else ""
        return SigserveError(
            Code.PERMISSION_DENIED,
            f"{uri}: access denied{detail}{where}; the credentials need permission to list and read "
            f"it (for S3: s3:ListBucket and s3:GetObject)",
        )
    if names & {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ConnectionClosedError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ConnectionRefusedError",
        "ReadTimeoutError",
        "TimeoutError",
        "FSTimeoutError",
    } or isinstance(e, ConnectionError):
        target = endpoint or uri
        knob = " (S3_ENDPOINT / AWS_ENDPOINT_URL)" if protocol == "s3" else ""
        return SigserveError(
            Code.UNAVAILABLE, f"{uri}: cannot reach the store at {target}{knob}: {_first_line(chain[-1])}"
        )
    if isinstance(e, FileNotFoundError):
        return SigserveError(Code.NOT_FOUND, f"{uri} not found")
    if code:
        return SigserveError(Code.UNKNOWN, f"{uri}: {code}: {aws_message or _first_line(e)}")
    return SigserveError(Code.UNKNOWN, f"{uri}: {type(e).__name__}: {_first_line(e)}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
