"""`/v1/config` (sigserve extension, `--enable_model_management_api`): the ModelServerConfig over REST.

`POST /v1/config` takes a ModelServerConfig as JSON (protobuf's JSON mapping: field names as in the
text format, e.g. `{"model_config_list": {"config": [{"name": "m", "base_path": "/models/m",
"model_platform": "tensorflow"}]}}`) or as text proto (what `--model_config_file` holds), and does
exactly what gRPC `ModelService/HandleReloadConfigRequest` does, through the same service call:
availability-preserving, answered once the new models are AVAILABLE, with its errors. `GET
/v1/config` returns the config now served, as JSON, or as text proto to `Accept: text/plain`.
"""

from __future__ import annotations

from google.protobuf import json_format, text_format

from sigserve.errors import invalid_argument
from sigserve.protos import model_server_config_pb2

ModelServerConfig = model_server_config_pb2.ModelServerConfig
PATH = "/v1/config"
RELOADED = b'{"status": {"error_code": "OK", "error_message": ""}}'


def parse(body: bytes, content_type: str) -> ModelServerConfig:
    """A request body as a ModelServerConfig: JSON when the content type says so or the body is a
    JSON object, else text proto. INVALID_ARGUMENT with the parser's reason."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_argument("The ModelServerConfig must be UTF-8 text (JSON or text proto)") from None
    config = ModelServerConfig()
    is_json = "json" in content_type or (
        not content_type.startswith("text/") and text.lstrip().startswith("{")
    )
    try:
        if is_json:
            json_format.Parse(text, config)
        else:
            text_format.Parse(text, config)
    except (json_format.ParseError, text_format.ParseError) as e:
        kind = "JSON" if is_json else "text proto"
        raise invalid_argument(
            f"Could not parse the ModelServerConfig {kind}: {e}. Example: "
            '{"model_config_list": {"config": [{"name": "m", "base_path": "/models/m", '
            '"model_platform": "tensorflow"}]}}'
        ) from None
    return config


def encode(config: ModelServerConfig, accept: str) -> tuple[bytes, bytes]:
    """(body, content type) of `GET /v1/config`: text proto to `Accept: text/plain`, else JSON."""
    if "text/plain" in accept:
        return text_format.MessageToString(config).encode("utf-8"), b"text/plain; charset=utf-8"
    text = json_format.MessageToJson(config, preserving_proto_field_name=True, indent=None)
    return text.encode("utf-8"), b"application/json"
