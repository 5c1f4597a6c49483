"""`ModelServerConfig`: TF Serving's `--model_config_file` text, parsed and checked the way
`server_core.cc` checks it (tfserving-api.md §4 "Config file").

The text is parsed as-is: no `${VAR}` expansion (TF Serving does none either; the fixture configs carry
placeholders that the tests substitute).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from google.protobuf import text_format

from sigserve import storage
from sigserve.errors import Code, SigserveError, failed_precondition, invalid_argument
from sigserve.protos import model_server_config_pb2
from sigserve.protos.text import error_text

TENSORFLOW_PLATFORM = "tensorflow"
OTHER_PLATFORM = "other"

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig


def parse(text: str, path: str = "") -> Any:
    """A text-format ModelServerConfig, e.g. `model_config_list { config { name: "m" base_path: "/m"
    model_platform: "tensorflow" } }`. Parse errors are INVALID_ARGUMENT, as TF Serving's
    `ParseProtoTextFile`."""
    config = ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise invalid_argument(f"Invalid protobuf file: '{path}': {error_text(e)}") from None
    return config


def read(path: str) -> Any:
    """`parse` of the file at `path`."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise invalid_argument(f"Could not read model config file '{path}': {e.strerror}") from None
    return parse(text, path)


def single_model(name: str, base_path: str) -> Any:
    """The config `--model_name` + `--model_base_path` stand for."""
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = TENSORFLOW_PLATFORM
    return config


def platform_of(model: Any) -> str:
    """The model's platform, reading the deprecated `model_type` as `server_core.cc` does."""
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if model.model_platform:
            raise invalid_argument("Illegal setting both model_type(deprecated) and model_platform.")
        return (
            TENSORFLOW_PLATFORM if model.model_type == model_server_config_pb2.TENSORFLOW else OTHER_PLATFORM
        )
    if not model.model_platform:
        raise invalid_argument(
            "Illegal setting neither model_type(deprecated) nor model_platform. "
            f'Set model_platform: "tensorflow" for model {model.name}.'
        )
    return str(model.model_platform)


def is_absolute_path_or_uri(path: str) -> bool:
    return os.path.isabs(path) or "://" in path


def model_configs(config: Any) -> list[Any]:
    """The ModelConfigs of a config, after TF Serving's checks (empty config → no models).

    Raises INVALID_ARGUMENT with TF Serving's texts for relative base paths and duplicate names, and
    for the things sigserve cannot serve (a custom_model_config, a platform other than tensorflow,
    a URI whose scheme is unknown or whose fsspec package is not installed).
    """
    which = config.WhichOneof("config")
    if which is None:
        return []
    if which != "model_config_list":
        raise SigserveError(
            Code.UNIMPLEMENTED,
            "custom_model_config is not supported; list the models in model_config_list, e.g. "
            'model_config_list { config { name: "m" base_path: "/models/m" model_platform: "tensorflow" } }',
        )
    models = list(config.model_config_list.config)
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise invalid_argument(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
        if not is_absolute_path_or_uri(model.base_path):
            raise invalid_argument(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )
        if "://" in model.base_path:
            storage.scheme_of(model.base_path)  # unknown scheme, or its extra not installed
        platform = platform_of(model)
        if platform != TENSORFLOW_PLATFORM:
            raise invalid_argument(
                f"Model {model.name} has model_platform {platform!r}; sigserve serves only "
                'TensorFlow SavedModels (model_platform: "tensorflow")'
            )
    return models


def local_path(base_path: str) -> str:
    """A base path as a local directory (`file:///models/m` → `/models/m`)."""
    return storage.local_path(base_path)


def check_transition(old: Any, new: Any) -> None:
    """Only ModelConfigList → ModelConfigList reloads are legal (ServerCore::ReloadConfig)."""
    if old.WhichOneof("config") is None:
        return
    if old.WhichOneof("config") == "model_config_list" and new.WhichOneof("config") == "model_config_list":
        return
    raise failed_precondition(
        "Cannot transition to requested config. It is only legal to transition "
        "from one ModelConfigList to another."
    )


def names(models: Sequence[Any]) -> list[str]:
    return [m.name for m in models]
