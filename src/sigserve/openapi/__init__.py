"""OpenAPI 3.1 documents of the REST API, derived from the served models' SignatureDefs (no TensorFlow).

from sigserve.openapi import ServedModel, ServedVersion, model_document
doc = model_document(ServedModel("half_plus_two", [ServedVersion(123, signatures)]))
"""

from __future__ import annotations

from sigserve.openapi.document import (
    Options,
    ServedModel,
    ServedVersion,
    model_document,
    model_path,
    server_document,
)

__all__ = ["Options", "ServedModel", "ServedVersion", "model_document", "model_path", "server_document"]
