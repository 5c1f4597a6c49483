"""The OpenAPI generator (`sigserve.openapi`): valid OpenAPI 3.1, and request schemas that accept what
the REST codec accepts (differentially, against `sigserve.codec.json`), up to the declared shapes."""

from __future__ import annotations

import base64
import pathlib
from typing import Any

import jsonschema
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from sigserve.codec import json as codec_json
from sigserve.errors import SigserveError
from sigserve.openapi import Options, ServedModel, ServedVersion, model_document, server_document
from sigserve.protos import types_pb2
from sigserve.saved_model import loader
from sigserve.saved_model.signature_def_utils import build_tensor_info, predict_signature_def

_T = types_pb2


def served_model(name: str, base: pathlib.Path) -> ServedModel:
    """Every numbered version under a TF Serving model base path, read without TensorFlow."""
    versions = []
    for d in sorted(base.iterdir()):
        if d.name.isdigit():
            meta = loader.get_meta_graph(loader.read_saved_model(str(d)), ["serve"])
            versions.append(ServedVersion(int(d.name), dict(meta.signature_def)))
    return ServedModel(name, versions)


def body_validator(doc: dict[str, Any], path: str, verb: str = "post") -> jsonschema.Draft202012Validator:
    """A validator for one operation's request body, with the document's components in scope."""
    schema = doc["paths"][path][verb]["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def response_validator(doc: dict[str, Any], path: str, verb: str = "post") -> jsonschema.Draft202012Validator:
    schema = doc["paths"][path][verb]["responses"]["200"]["content"]["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


# -- whole documents ------------------------------------------------------------------------------------


def test_fixture_documents_validate(fixtures_dir: pathlib.Path) -> None:
    models = [
        served_model(name, fixtures_dir / name)
        for name in (
            "saved_model_half_plus_two_cpu",
            "saved_model_half_plus_three",
            "saved_model_half_plus_two_2_versions",
            "saved_model_counter",
        )
    ]
    for model in models:
        validate(model_document(model))
        for v in model.versions:
            validate(model_document(model, v.version))
    doc = server_document(models, Options(auth=True, metrics_path="/monitoring/prometheus/metrics"))
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    two = doc["x-sigserve-models"]["saved_model_half_plus_two_2_versions"]
    assert two == {"latest": 124, "versions": [123, 124]}
    # Latest at TF Serving's unversioned URLs, each version at its own.
    for path in (
        "/v1/models/saved_model_half_plus_two_2_versions:predict",
        "/v1/models/saved_model_half_plus_two_2_versions/versions/123:predict",
        "/v1/models/saved_model_half_plus_two_2_versions/versions/124:predict",
        "/v1/models/saved_model_half_plus_three:regress",
        "/v1/models/saved_model_half_plus_two_cpu:classify",
    ):
        assert path in doc["paths"], path
    # With auth on, probes stay open and everything else asks for a bearer token.
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from the server's --auth_token_file",
    }
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert doc["paths"]["/readyz"]["get"]["security"] == []
    assert "security" not in doc["paths"]["/monitoring/prometheus/metrics"]["get"]
    predict = doc["paths"]["/v1/models/saved_model_half_plus_three:predict"]["post"]
    assert "401" in predict["responses"]


def test_exported_documents_validate(exported_models: dict[str, pathlib.Path]) -> None:
    models = [served_model(name, path.parent) for name, path in exported_models.items()]
    doc = server_document(models)
    validate(doc)
    # tf1's string, int and float multi-input signature; estimator's string input.
    multi = body_validator(doc, "/v1/models/tf1:predict")
    assert multi.is_valid({"signature_name": "multi", "instances": [{"a": 1.5, "b": 2}]})
    assert multi.is_valid({"signature_name": "multi", "inputs": {"a": [1.5, 2.0], "b": [1, 2]}})
    assert not multi.is_valid({"signature_name": "multi", "instances": [{"a": 1.5}]})  # b missing
    assert not multi.is_valid({"signature_name": "multi", "instances": [{"a": 1.5, "b": 2.5}]})
    assert not multi.is_valid({"signature_name": "multi", "instances": [1.5]})  # plain list, 2 inputs
    estimator = body_validator(doc, "/v1/models/estimator:predict")
    b64 = base64.b64encode(b"\x00\xff").decode()
    assert estimator.is_valid({"signature_name": "predict", "instances": ["text", {"b64": b64}]})
    assert not estimator.is_valid({"signature_name": "predict", "instances": [{"b64": "not base64!"}]})
    # keras: (None, 2) -> each instance has exactly two floats.
    keras = body_validator(doc, "/v1/models/keras:predict")
    assert keras.is_valid({"instances": [[1.0, 2.0]]})
    assert not keras.is_valid({"instances": [[1.0, 2.0, 3.0]]})
    # tf1's multi answers a `_bytes` string output as {"b64": ...}.
    reply = response_validator(doc, "/v1/models/tf1:predict")
    row = {"sum": 3.5, "label_bytes": {"b64": base64.b64encode(b"v2").decode()}, "count": 1}
    assert reply.is_valid({"predictions": [row]})
    assert not reply.is_valid({"predictions": [{**row, "label_bytes": "v2"}]})


def test_half_plus_two_document(fixtures_dir: pathlib.Path) -> None:
    model = served_model("half_plus_two", fixtures_dir / "saved_model_half_plus_two_cpu")
    doc = model_document(model)
    validate(doc)
    path = "/v1/models/half_plus_two:predict"
    request = body_validator(doc, path)
    # x is DT_FLOAT (-1, 1): the signature's shape, in both formats, with or without signature_name.
    assert request.is_valid({"instances": [[1.0], [2.0], [5.0]]})
    assert request.is_valid({"signature_name": "serving_default", "inputs": {"x": [[1.0], [2.0]]}})
    assert request.is_valid({"inputs": [[1.0]], "signature_name": ""})
    assert request.is_valid({"instances": [{"x": [1.0]}]})
    assert not request.is_valid({"instances": [[1.0, 2.0]]})  # the known dimension is 1
    assert not request.is_valid({"instances": []})  # TF Serving: "No values in 'instances' array"
    assert not request.is_valid({"instances": [[1.0]], "inputs": [[1.0]]})  # only one of the two
    assert not request.is_valid({"instances": [["a"]]})
    assert not request.is_valid({"signature_name": "nope", "instances": [[1.0]]})
    # Every generated example is valid for its own schema.
    examples = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert examples["serving_default (row)"]["value"] == {"instances": [[1.0]]}
    assert examples["serving_default (columnar)"]["value"] == {"inputs": {"x": [[1.0]]}}
    for name, example in examples.items():
        assert request.is_valid(example["value"]), name
    # The docs' answers fit the response schema; an error body does not.
    reply = response_validator(doc, path)
    assert reply.is_valid({"predictions": [2.5, 3.0, 4.5]})
    assert reply.is_valid({"outputs": [[2.5], [3.0]]})
    assert not reply.is_valid({"error": "x"})
    assert not reply.is_valid({"predictions": ["2.5"]})
    # Classify and regress list the signatures that pass TF Serving's structural checks.
    regress = body_validator(doc, "/v1/models/half_plus_two:regress")
    assert regress.is_valid({"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]})
    assert not regress.is_valid({"signature_name": "serving_default", "examples": [{"x": 1.0}]})
    assert not regress.is_valid({"signature_name": "regress_x_to_y", "examples": []})
    assert not regress.is_valid({"signature_name": "regress_x_to_y", "examples": [{"x": [[1.0]]}]})
    assert response_validator(doc, "/v1/models/half_plus_two:regress").is_valid({"results": [2.5, 3.0]})
    classify = response_validator(doc, "/v1/models/half_plus_two:classify")
    assert classify.is_valid({"results": [[["", 2.5]]]})
    assert not classify.is_valid({"results": [[2.5]]})


def test_method_name_check_narrows_classify_and_regress(fixtures_dir: pathlib.Path) -> None:
    model = served_model("m", fixtures_dir / "saved_model_half_plus_two_cpu")
    loose = model_document(model)
    strict = model_document(model, options=Options(method_name_check=True))

    def names(doc: dict[str, Any], verb: str) -> list[str]:
        schema = doc["paths"]["/v1/models/m:" + verb]["post"]["requestBody"]["content"]["application/json"]
        return list(schema["schema"]["properties"]["signature_name"]["enum"])

    # regress_x2_to_y3 has a DT_FLOAT `inputs`: structurally a regress signature (TF Serving only
    # checks the input's key), and its method name says regress too.
    assert names(loose, "regress") == ["regress_x2_to_y3", "regress_x_to_y", "regress_x_to_y2"]
    assert names(strict, "regress") == ["regress_x2_to_y3", "regress_x_to_y", "regress_x_to_y2"]
    # classify_x_to_y is the only classify-method signature; structurally, none other qualifies.
    assert names(loose, "classify") == ["classify_x_to_y"]
    assert names(strict, "classify") == ["classify_x_to_y"]


def test_names_are_percent_encoded() -> None:
    info = build_tensor_info("x:0", "float32", [None])
    sig = predict_signature_def({"x": info}, {"y": info})
    doc = model_document(ServedModel("a b/c", [ServedVersion(7, {"serving_default": sig})]))
    validate(doc)
    assert "/v1/models/a%20b%2Fc:predict" in doc["paths"]
    assert "/v1/models/a%20b%2Fc/versions/7:predict" in doc["paths"]


def test_unsupported_dtypes_are_left_out() -> None:
    half = build_tensor_info("h:0", "float16", [None])
    ok = build_tensor_info("x:0", "float32", [None])
    sigs = {
        "serving_default": predict_signature_def({"x": ok}, {"y": ok}),
        "half_in": predict_signature_def({"h": half}, {"y": ok}),
    }
    doc = model_document(ServedModel("m", [ServedVersion(1, sigs)]))
    validate(doc)
    titles = [
        s["title"]
        for s in doc["paths"]["/v1/models/m:predict"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]["anyOf"]
    ]
    assert titles == ["serving_default: row format", "serving_default: columnar format"]


# -- differential: the request schema against the REST codec ---------------------------------------------

_DTYPES = {
    "float": (_T.DT_FLOAT, "float32"),
    "int32": (_T.DT_INT32, "int32"),
    "int64": (_T.DT_INT64, "int64"),
    "uint8": (_T.DT_UINT8, "uint8"),
    "bool": (_T.DT_BOOL, "bool"),
    "string": (_T.DT_STRING, "string"),
}


def _leaves() -> st.SearchStrategy[Any]:
    b64 = st.binary(max_size=5).map(lambda b: {"b64": base64.b64encode(b).decode()})
    return st.one_of(
        st.integers(-(2**40), 2**40),
        st.integers(-5, 300),
        # Decimals only with a fraction: JSON Schema cannot tell 1.0 from 1 (the codec can).
        st.floats(-1e6, 1e6, allow_nan=False).filter(lambda f: not f.is_integer()),
        st.booleans(),
        st.text(max_size=3),
        b64,
        st.just({"b64": "!!"}),
        st.none(),
    )


@st.composite
def _tensor(draw: st.DrawFn) -> tuple[Any, tuple[int, ...]]:
    """A rectangular nested list (or scalar) and its shape."""
    shape = tuple(draw(st.lists(st.integers(1, 3), max_size=3)))
    leaf = draw(_leaves())
    mixed = draw(st.booleans())

    def build(level: int) -> Any:
        if level == len(shape):
            return draw(_leaves()) if mixed else leaf
        return [build(level + 1) for _ in range(shape[level])]

    return build(0), shape


def _fits(shape: tuple[int, ...], declared: tuple[int, ...] | None) -> bool:
    if declared is None:
        return True
    return len(shape) == len(declared) and all(d < 0 or d == s for s, d in zip(shape, declared, strict=True))


def _leaf_ok(value: Any, dtype: int) -> bool:
    """What `codec.json` converts for one scalar (the oracle for the type part of the schema)."""
    if dtype == _T.DT_FLOAT:
        return type(value) in (int, float)
    if dtype == _T.DT_BOOL:
        return type(value) is bool
    if dtype == _T.DT_STRING:
        if isinstance(value, dict):
            return value.get("b64") != "!!"
        return isinstance(value, str)
    low, high = {_T.DT_INT64: (-(2**63), 2**63 - 1)}.get(dtype, (-(2**31), 2**31 - 1))
    return type(value) is int and low <= value <= high


def _flat(value: Any) -> list[Any]:
    return [x for v in value for x in _flat(v)] if isinstance(value, list) else [value]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype_name=st.sampled_from(sorted(_DTYPES)),
    declared=st.one_of(st.none(), st.lists(st.sampled_from([-1, 1, 2]), max_size=3).map(tuple)),
    tensors=st.lists(_tensor(), min_size=1, max_size=3),
    row=st.booleans(),
    named=st.booleans(),
)
def test_schema_accepts_what_the_codec_accepts(
    dtype_name: str,
    declared: tuple[int, ...] | None,
    tensors: list[tuple[Any, tuple[int, ...]]],
    row: bool,
    named: bool,
) -> None:
    """For one input `x`: the schema accepts a body exactly when the codec does and the shape fits the
    signature's (the schema's one addition), for rectangular tensors written as the codec reads them.
    One gap JSON Schema cannot close: it checks each row-format instance alone, so instances of
    different shapes (which the codec refuses) pass when each fits the signature by itself."""
    dtype, np_name = _DTYPES[dtype_name]
    info = build_tensor_info(
        "x:0", np_name, None if declared is None else [None if d < 0 else d for d in declared]
    )
    sig = predict_signature_def({"x": info}, {"y": build_tensor_info("y:0", "float32", [None])})
    doc = model_document(ServedModel("m", [ServedVersion(1, {"serving_default": sig})]))
    validator = body_validator(doc, "/v1/models/m:predict")

    if row:
        body: dict[str, Any] = {"instances": [{"x": t} if named else t for t, _ in tensors]}
        # Rows stack instances on a new first dimension; a rank-0 input takes one scalar per row.
        shape_ok = all(
            declared is None
            or (declared == () and instance == ())
            or (declared != () and _fits((len(tensors), *instance), declared))
            for _, instance in tensors
        )
    else:
        value, shape = tensors[0]
        body = {"inputs": {"x": value} if named else value}
        shape_ok = _fits(shape, declared)
    try:
        codec_json.parse_predict(orjson.dumps(body)).to_inputs({"x": dtype})
        codec_ok = True
    except SigserveError:
        codec_ok = False

    leaves = [x for t, _ in tensors for x in _flat(t)] if row else _flat(tensors[0][0])
    leaves_ok = all(_leaf_ok(v, dtype) for v in leaves)
    same_shapes = not row or len({s for _, s in tensors}) == 1
    assert codec_ok == (leaves_ok and same_shapes), body
    assert validator.is_valid(body) == (leaves_ok and shape_ok), (body, declared)
    if same_shapes:
        assert validator.is_valid(body) == (codec_ok and shape_ok), (body, declared)


def test_nonfinite_and_large_numbers() -> None:
    """Floats may be any JSON number (the codec also takes NaN/Infinity, which JSON Schema cannot
    name); integers are bounded by the dtype's accepted range."""
    sigs = {
        "serving_default": predict_signature_def(
            {"i": build_tensor_info("i:0", "int32", [None])},
            {"y": build_tensor_info("y:0", "float32", [None])},
        )
    }
    doc = model_document(ServedModel("m", [ServedVersion(1, sigs)]))
    ok = body_validator(doc, "/v1/models/m:predict").is_valid
    assert ok({"instances": [2**31 - 1]})
    assert not ok({"instances": [2**31]})
