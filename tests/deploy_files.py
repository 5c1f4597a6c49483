"""Reading deploy/ the way Kubernetes and KServe do, for the manifest and contract tests.

- `strict_schema` turns a CRD's openAPIV3Schema into one that rejects unknown fields, as
  `kubectl apply --validate=strict` does (the API server would silently prune a misspelt field,
  so plain schema validation would pass a `readinesProbe` that never runs).
- `render` substitutes KServe's Go-template placeholders (`{{.Name}}`, `{{.Labels.x}}`, ...) the way
  the controller's `ReplacePlaceholders` does: over the JSON of the whole container.
"""

from __future__ import annotations

import copy
import functools
import json
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import yaml

from tests.conftest import ROOT, SHARED

DEPLOY = ROOT / "deploy"
KSERVE_FIXTURES = SHARED / "fixtures" / "kserve"
STOCK_TF_RUNTIME = "kserve-tensorflow-serving.yaml"


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: pathlib.Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)  # a safe loader (the C one when built)


@functools.lru_cache(maxsize=8)
def _crd(path: pathlib.Path) -> Any:
    return load_yaml(path)


def crd_schema(path: pathlib.Path, version: str = "v1alpha1") -> dict[str, Any]:
    """The CRD's openAPIV3Schema for `version` (a fresh copy: callers may change it)."""
    crd = copy.deepcopy(_crd(path))
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return dict(v["schema"]["openAPIV3Schema"])
    raise KeyError(f"{path.name} has no version {version}")


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy where every object schema that lists its properties rejects others (unless the CRD
    says `x-kubernetes-preserve-unknown-fields` or gives `additionalProperties` itself)."""
    out = copy.deepcopy(dict(schema))

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties", "definitions"):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), (dict, list)):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            walk(node.get(key, []))

    walk(out)
    return out


def schema_errors(document: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


_PLACEHOLDER = re.compile(r"\{\{\s*\.([A-Za-z]+)(?:\.([A-Za-z0-9_./-]+))?\s*\}\}")


def render(obj: Any, metadata: Mapping[str, Any]) -> Any:
    """`obj` with every `{{.Field}}` / `{{.Labels.key}}` / `{{.Annotations.key}}` replaced from the
    InferenceService's ObjectMeta. An unknown field is an error, as it is for text/template."""

    def substitute(match: re.Match[str]) -> str:
        field, key = match.group(1), match.group(2)
        if key is None and field in ("Name", "Namespace"):
            return json.dumps(str(metadata.get(field.lower(), "")))[1:-1]
        if key is not None and field in ("Labels", "Annotations"):
            return json.dumps(str(metadata.get(field.lower(), {}).get(key, "")))[1:-1]
        raise ValueError(f"unknown template field {match.group(0)}")

    return json.loads(_PLACEHOLDER.sub(substitute, json.dumps(obj)))


def flag_values(args: list[str]) -> dict[str, str]:
    """`--name=value` arguments as a dict (the only form the manifests use)."""
    out = {}
    for arg in args:
        assert arg.startswith("--") and "=" in arg, f"write flags as --name=value: {arg!r}"
        name, value = arg[2:].split("=", 1)
        out[name] = value
    return out


def dockerfile_entrypoint(path: pathlib.Path) -> list[str]:
    for line in path.read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            return list(json.loads(line[len("ENTRYPOINT ") :]))
    raise AssertionError(f"{path} has no exec-form ENTRYPOINT")
