"""OpenAPI 3.1 documents of TF Serving's REST API for the models a server holds.

Pure data in, a JSON-ready dict out: a model's name, its available versions and their SignatureDefs
(no TensorFlow, no server). `model_document` describes one model (the latest version at TF
Serving's unversioned URLs, and each version at `/versions/<v>`), or one version of it;
`server_document` every model plus the server's own routes. The request and response schemas come
from `schemas.py`; every path is a literal URL of a served model, so a client generator or a fuzzer
gets one operation per model, version and verb.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sigserve.codec import dtypes
from sigserve.openapi import schemas as S
from sigserve.protos import meta_graph_pb2
from sigserve.saved_model import signature_constants as sc

SignatureDef = meta_graph_pb2.SignatureDef
Document = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
DEFAULT_SIGNATURE = sc.DEFAULT_SERVING_SIGNATURE_DEF_KEY
SECURITY_SCHEME = "bearerAuth"
_JSON = "application/json"
_ERROR_RESPONSES = {
    "400": "Bad request: the body, the URL or the signature does not fit (the message says which)",
    "404": "No such model or version is loaded",
    "413": "The body is larger than --max_request_body_bytes",
    "504": "The request took longer than --rest_api_timeout_in_ms",
}


@dataclass(frozen=True)
class ServedVersion:
    """One loaded (AVAILABLE) version and the SignatureDefs of its MetaGraph."""

    version: int
    signatures: Mapping[str, SignatureDef]


@dataclass(frozen=True)
class ServedModel:
    """A model's name and its available versions; the highest is what unversioned URLs serve."""

    name: str
    versions: Sequence[ServedVersion] = field(default_factory=tuple)

    @property
    def latest(self) -> ServedVersion | None:
        return max(self.versions, key=lambda v: v.version, default=None)


@dataclass(frozen=True)
class Options:
    """Server settings that change what the documents say.

    `method_name_check`: --enable_signature_method_name_check (which signatures classify/regress
    accept). `auth`: bearer tokens are required (--auth_token_file). `public_metrics`: the metrics page
    stays open with auth on. `metrics_path`: where Prometheus metrics are served (None: off).
    """

    method_name_check: bool = False
    auth: bool = False
    public_metrics: bool = False
    metrics_path: str | None = None
    title: str = "sigserve"
    version: str = ""


# -- which API a signature serves -------------------------------------------------------------------


def classify_ok(signature: SignatureDef, method_name_check: bool) -> bool:
    """TF Serving's structural checks for Classify (tfserving-api.md §3)."""
    if method_name_check and signature.method_name != sc.CLASSIFY_METHOD_NAME:
        return False
    outputs = set(signature.outputs)
    return (
        set(signature.inputs) == {sc.CLASSIFY_INPUTS}
        and len(outputs) in (1, 2)
        and bool(outputs & {sc.CLASSIFY_OUTPUT_CLASSES, sc.CLASSIFY_OUTPUT_SCORES})
    )


def regress_ok(signature: SignatureDef, method_name_check: bool) -> bool:
    """TF Serving's structural checks for Regress (tfserving-api.md §3)."""
    if method_name_check and signature.method_name != sc.REGRESS_METHOD_NAME:
        return False
    return set(signature.inputs) == {sc.REGRESS_INPUTS} and set(signature.outputs) == {sc.REGRESS_OUTPUTS}


def predict_ok(signature: SignatureDef, method_name_check: bool) -> bool:
    """Whether REST Predict can run this signature: it has inputs, all of dtypes JSON can carry."""
    if method_name_check and signature.method_name not in sc.SERVING_METHOD_NAMES:
        return False
    return bool(signature.inputs) and all(S.json_convertible(i.dtype) for i in signature.inputs.values())


# -- one model ---------------------------------------------------------------------------------------


def model_path(name: str, version: int | None = None) -> str:
    """`/v1/models/<name>[/versions/<v>]`, the name percent-encoded as the REST URL grammar decodes it."""
    path = "/v1/models/" + urllib.parse.quote(name, safe="")
    return path if version is None else f"{path}/versions/{int(version)}"


class _Writer:
    """Accumulates paths, tags and schema components for one document."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.schemas = S.SchemaBuilder()
        self.paths: dict[str, Any] = {}
        self.tags: dict[str, Any] = {}

    # -- operations -----------------------------------------------------------------------------------

    def operation(self, op_id: str, summary: str, tag: str, responses: dict[str, Any], **extra: Any) -> Any:
        op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag]}
        op.update(extra)
        op["responses"] = responses
        if self.options.auth:
            op["responses"].setdefault("401", {"$ref": "#/components/responses/Unauthenticated"})
        return op

    def open_operation(self, op: dict[str, Any]) -> dict[str, Any]:
        """A route that stays open with auth on (probes)."""
        if self.options.auth:
            op["security"] = []
            op["responses"].pop("401", None)
        return op

    @staticmethod
    def errors(*codes: str) -> dict[str, Any]:
        out: dict[str, Any] = {code: {"$ref": f"#/components/responses/E{code}"} for code in codes}
        out["default"] = {"$ref": "#/components/responses/Error"}
        return out

    @staticmethod
    def json_response(description: str, schema: Any) -> dict[str, Any]:
        return {"description": description, "content": {_JSON: {"schema": schema}}}

    # -- a model version -----------------------------------------------------------------------------

    def add_version(self, model: str, served: ServedVersion, *, explicit: bool) -> None:
        """The paths of one version: at `/versions/<v>` when `explicit`, else TF Serving's
        unversioned URLs (the latest version)."""
        version = served.version if explicit else None
        base = model_path(model, version)
        which = f"version {served.version}" if explicit else f"latest version ({served.version})"
        key = f"{model}:{served.version if explicit else 'latest'}"
        self.tags.setdefault(model, {"name": model, "description": f"Model {model}"})
        check = self.options.method_name_check
        sigs = dict(sorted(served.signatures.items()))

        self.paths[base] = {
            "get": self.operation(
                f"status:{key}",
                f"Status of {model}, " + (which if explicit else "all versions"),
                model,
                {
                    "200": self.json_response("Version states", S.ref(S.MODEL_STATUS)),
                    **self.errors("400", "404"),
                },
            )
        }
        self.paths[base + "/metadata"] = {
            "get": self.operation(
                f"metadata:{key}",
                f"SignatureDefs of {model}, {which}",
                model,
                {
                    "200": self.json_response("Signatures", S.ref(S.MODEL_METADATA)),
                    **self.errors("400", "404"),
                },
            )
        }
        predictable = {k: s for k, s in sigs.items() if predict_ok(s, check)}
        if predictable:
            self.paths[base + ":predict"] = {"post": self.predict_operation(model, key, which, predictable)}
        for verb, ok in (("classify", classify_ok), ("regress", regress_ok)):
            eligible = [k for k, s in sigs.items() if ok(s, check)]
            if eligible:
                self.paths[base + ":" + verb] = {
                    "post": self.examples_operation(model, key, which, verb, eligible)
                }
        self.paths[base + "/openapi.json"] = {
            "get": self.operation(
                f"openapi:{key}",
                f"This document for {model}, {which}",
                model,
                {"200": self.json_response("OpenAPI 3.1 document", {"type": "object"}), **self.errors("404")},
            )
        }

    def predict_operation(
        self, model: str, key: str, which: str, signatures: Mapping[str, SignatureDef]
    ) -> dict[str, Any]:
        requests: list[Any] = []
        replies: list[Any] = []
        examples: dict[str, Any] = {}
        for name, sig in signatures.items():
            row, columnar = self.predict_request(name, sig)
            requests.append({"title": f"{name}: row format", **row})
            requests.append({"title": f"{name}: columnar format", **columnar})
            reply = self.predict_response(name, sig)
            if reply is not None:
                replies.append(reply)
            for form, value in predict_examples(name, sig).items():
                examples[f"{name} ({form})"] = _example(f"{name}, {form} format", value)
        description = "\n".join(f"- `{name}`: {signature_summary(sig)}" for name, sig in signatures.items())
        body: dict[str, Any] = {"schema": {"anyOf": requests}}
        if examples:
            body["examples"] = examples
        reply_schema: Any = {"anyOf": replies} if replies else {"not": {}}
        return self.operation(
            f"predict:{key}",
            f"Predict with {model}, {which}",
            model,
            {
                "200": self.json_response(
                    '`{"predictions": ...}` for a row-format request, `{"outputs": ...}` for a columnar one',
                    reply_schema,
                ),
                **self.errors("400", "404", "413", "504"),
            },
            description="Signatures (pick one with `signature_name`; default `serving_default`):\n"
            + description,
            requestBody={"required": True, "content": {_JSON: body}},
        )

    def predict_request(self, name: str, sig: SignatureDef) -> tuple[dict[str, Any], dict[str, Any]]:
        """The row (`instances`) and columnar (`inputs`) request bodies for one signature."""
        aliases = sorted(sig.inputs)
        signature_name: dict[str, Any]
        if name == DEFAULT_SIGNATURE:
            signature_name = {
                "enum": [DEFAULT_SIGNATURE, ""],
                "description": "absent or empty: serving_default",
            }
            required: list[str] = []
        else:
            signature_name = {"const": name}
            required = ["signature_name"]

        def named(row: bool, closed: bool) -> dict[str, Any]:
            obj: dict[str, Any] = {
                "type": "object",
                "properties": {a: self.schemas.input_tensor(a, sig.inputs[a], row=row) for a in aliases},
                "required": aliases,
            }
            if closed:
                obj["additionalProperties"] = False
            return obj

        # Row: one element per instance; the first dimension of every input is the list's.
        instance: Any = named(row=True, closed=True)
        if len(aliases) == 1:
            plain = self.schemas.input_tensor(aliases[0], sig.inputs[aliases[0]], row=True)
            instance = {"anyOf": [plain, instance]}
        instances: dict[str, Any] = {"type": "array", "items": instance, "minItems": 1}
        batch = S.batch_size(sig.inputs)
        if batch is not None:
            instances["minItems"] = max(batch, 1)
            instances["maxItems"] = batch
        row = {
            "type": "object",
            "properties": {"signature_name": signature_name, "instances": instances},
            "required": [*required, "instances"],
            "not": {"required": ["inputs"]},
        }
        # Columnar: each input's whole tensor; keys that are not inputs are ignored.
        tensors: Any = named(row=False, closed=False)
        if len(aliases) == 1:
            whole = self.schemas.input_tensor(aliases[0], sig.inputs[aliases[0]], row=False)
            tensors = {"anyOf": [whole, tensors]}
        columnar = {
            "type": "object",
            "properties": {"signature_name": signature_name, "inputs": tensors},
            "required": [*required, "inputs"],
            "not": {"required": ["instances"]},
        }
        return row, columnar

    def predict_response(self, name: str, sig: SignatureDef) -> dict[str, Any] | None:
        """`{"predictions": ...}` or `{"outputs": ...}` for one signature; None if REST cannot write
        one of its outputs (such a signature always answers 400)."""
        aliases = sorted(sig.outputs)
        if not aliases or not all(S.json_convertible(sig.outputs[a].dtype) for a in aliases):
            return None
        tensors = {a: self.schemas.output_tensor(a, sig.outputs[a]) for a in aliases}
        if len(aliases) == 1:
            row_item: Any = tensors[aliases[0]]
            whole: Any = tensors[aliases[0]]
        else:
            row_item = {
                "type": "object",
                "properties": tensors,
                "required": aliases,
                "additionalProperties": False,
            }
            whole = row_item
        return {
            "title": name,
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"predictions": {"type": "array", "items": row_item}},
                    "required": ["predictions"],
                },
                {"type": "object", "properties": {"outputs": whole}, "required": ["outputs"]},
            ],
        }

    def examples_operation(
        self, model: str, key: str, which: str, verb: str, names: list[str]
    ) -> dict[str, Any]:
        """Classify or Regress: tf.Examples as JSON (§1.9), for the signatures that API accepts."""
        signature_name: dict[str, Any] = {"enum": list(names)}
        required = ["examples"]
        if DEFAULT_SIGNATURE in names:
            signature_name["enum"].append("")
            signature_name["description"] = "absent or empty: serving_default"
        else:
            required.append("signature_name")
        request = {
            "type": "object",
            "properties": {
                "signature_name": signature_name,
                "context": S.ref(S.EXAMPLE),
                "examples": {"type": "array", "items": S.ref(S.EXAMPLE), "minItems": 1},
            },
            "required": required,
        }
        examples = {}
        for name in names:
            value: dict[str, Any] = {"examples": [{"x": 1.0}, {"x": 2.0}]}
            if name != DEFAULT_SIGNATURE:
                value = {"signature_name": name, **value}
            examples[name] = _example(f"{name} (the feature names are the model's own)", value)
        if verb == "classify":
            # [label, score]; not `prefixItems`, which several OpenAPI tools still mishandle.
            pair = {
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                "minItems": 2,
                "maxItems": 2,
                "description": "[label, score]: a string and a number",
            }
            result: Any = {"type": "array", "items": {"type": "array", "items": pair}}
            note = "one list of [label, score] pairs per example"
        else:
            result = {"type": "array", "items": {"type": "number"}}
            note = "one number per example"
        reply = {"type": "object", "properties": {"results": result}, "required": ["results"]}
        return self.operation(
            f"{verb}:{key}",
            f"{verb.capitalize()} with {model}, {which}",
            model,
            {
                "200": self.json_response(f'`{{"results": ...}}`: {note}', reply),
                **self.errors("400", "404", "413", "504"),
            },
            description=f"Signatures this API accepts: {', '.join(f'`{n}`' for n in names)}.",
            requestBody={"required": True, "content": {_JSON: {"schema": request, "examples": examples}}},
        )

    # -- the document ---------------------------------------------------------------------------------

    def document(self, title: str, description: str, extra: Mapping[str, Any]) -> Document:
        components: dict[str, Any] = {
            "schemas": {**S.components_schemas(), **dict(sorted(self.schemas.components.items()))},
            "responses": {
                **{
                    f"E{code}": self.json_response(text, S.ref(S.ERROR))
                    for code, text in _ERROR_RESPONSES.items()
                },
                "Error": self.json_response("Any other error", S.ref(S.ERROR)),
            },
        }
        doc: Document = {
            "openapi": OPENAPI_VERSION,
            "info": {"title": title, "version": self.options.version or "0", "description": description},
            "tags": list(self.tags.values()),
            "paths": self.paths,
            "components": components,
        }
        if self.options.auth:
            components["responses"]["Unauthenticated"] = self.json_response(
                "No token, or not a valid one: send `Authorization: Bearer <token>`", S.ref(S.ERROR)
            )
            components["securitySchemes"] = {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from the server's --auth_token_file",
                }
            }
            doc["security"] = [{SECURITY_SCHEME: []}]
        doc.update(extra)
        return doc


def _add_model(writer: _Writer, model: ServedModel, version: int | None) -> None:
    if version is not None:
        chosen = [v for v in model.versions if v.version == version]
        for served in chosen:
            writer.add_version(model.name, served, explicit=True)
        return
    latest = model.latest
    if latest is not None:
        writer.add_version(model.name, latest, explicit=False)
    for served in sorted(model.versions, key=lambda v: v.version):
        writer.add_version(model.name, served, explicit=True)


def _models_extension(models: Sequence[ServedModel]) -> dict[str, Any]:
    """`x-sigserve-models`: name -> latest and available versions (the web console reads it)."""
    return {
        m.name: {
            "latest": m.latest.version if m.latest is not None else None,
            "versions": sorted(v.version for v in m.versions),
        }
        for m in models
    }


def model_document(
    model: ServedModel, version: int | None = None, options: Options | None = None
) -> Document:
    """The document of one model (`version` None: the latest at unversioned URLs and every version
    at `/versions/<v>`), or of one of its versions."""
    options = options or Options()
    writer = _Writer(options)
    _add_model(writer, model, version)
    what = model.name if version is None else f"{model.name}, version {version}"
    description = (
        f"TF Serving's REST API for {what}, derived from its SignatureDefs. "
        "Request shapes are the signatures' declared shapes; floats may be NaN/Infinity tokens."
    )
    return writer.document(
        f"{options.title}: {what}", description, {"x-sigserve-models": _models_extension([model])}
    )


def server_document(models: Sequence[ServedModel], options: Options | None = None) -> Document:
    """Every served model (as `model_document`) plus the server's own routes."""
    options = options or Options()
    writer = _Writer(options)
    for model in sorted(models, key=lambda m: m.name):
        _add_model(writer, model, None)
    server_tag = "server"
    writer.tags[server_tag] = {"name": server_tag, "description": "Probes, metrics, documents"}
    status = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
    readiness = {
        "type": "object",
        "properties": {
            "status": {"type": "string"},
            "models": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["status"],
    }
    writer.paths["/healthz"] = {
        "get": writer.open_operation(
            writer.operation(
                "healthz",
                "Alive (200 as soon as the process serves)",
                server_tag,
                {"200": writer.json_response("Alive", status)},
            )
        )
    }
    writer.paths["/readyz"] = {
        "get": writer.open_operation(
            writer.operation(
                "readyz",
                "Ready: every configured model has an AVAILABLE version",
                server_tag,
                {
                    "200": writer.json_response("Ready", readiness),
                    "503": writer.json_response("Not ready (or shutting down)", readiness),
                },
            )
        )
    }
    if options.metrics_path:
        op = writer.operation(
            "metrics",
            "Prometheus metrics (TF Serving's names)",
            server_tag,
            {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        )
        writer.paths[options.metrics_path] = {
            "get": writer.open_operation(op) if options.public_metrics else op
        }
    writer.paths["/openapi.json"] = {
        "get": writer.operation(
            "openapi",
            "This document: every served model",
            server_tag,
            {"200": writer.json_response("OpenAPI 3.1 document", {"type": "object"})},
        )
    }
    description = (
        "TF Serving's REST API for every model this server holds, derived from their SignatureDefs; "
        "it follows hot reloads. Per model: /v1/models/<name>[/versions/<v>]/openapi.json."
    )
    return writer.document(
        f"{options.title}: served models", description, {"x-sigserve-models": _models_extension(models)}
    )


# -- examples and summaries ------------------------------------------------------------------------------


def predict_examples(name: str, sig: SignatureDef) -> dict[str, Any]:
    """{"row": body, "columnar": body} built from the signature's shapes (absent when too large)."""
    aliases = sorted(sig.inputs)
    head: dict[str, Any] = {} if name == DEFAULT_SIGNATURE else {"signature_name": name}
    out: dict[str, Any] = {}
    batch = S.batch_size(sig.inputs) or 1
    rows = [S.example_tensor(a, sig.inputs[a], row=True) for a in aliases]
    if all(r is not None for r in rows) and batch <= 64:
        if len(aliases) == 1:
            instances = [rows[0]] * batch
        else:
            instances = [dict(zip(aliases, rows, strict=True))] * batch
        out["row"] = {**head, "instances": instances}
    whole = {a: S.example_tensor(a, sig.inputs[a], row=False) for a in aliases}
    if all(v is not None for v in whole.values()):
        out["columnar"] = {**head, "inputs": whole}
    return out


def _example(summary: str, value: Any) -> dict[str, Any]:
    """An Example Object; `x-sigserve-text` is the body as JSON text that keeps `1.0` apart from `1`
    (TF Serving makes a float feature of one and an int64 feature of the other), for the console."""
    return {"summary": summary, "value": value, "x-sigserve-text": json.dumps(value)}


def signature_summary(sig: SignatureDef) -> str:
    """`x: DT_FLOAT (-1, 1) -> y: DT_FLOAT (-1, 1)`, for descriptions."""

    def side(infos: Mapping[str, Any]) -> str:
        return (
            ", ".join(
                f"{a}: {dtypes.name(i.dtype)} {S.shape_text(S.shape(i))}" for a, i in sorted(infos.items())
            )
            or "(none)"
        )

    return f"{side(sig.inputs)} -> {side(sig.outputs)}"
