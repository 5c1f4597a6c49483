"""Score rows with one signature of a SavedModel: a table of rows in, the same rows' results out.

The engine-neutral half of `sigserve score` (`ray_data.py` runs it on a Ray actor pool). Two steps:

1. `plan_scoring` (on the driver, without TensorFlow): read the SignatureDef from saved_model.pb,
   match its inputs to the data's columns, choose the carried key columns and the result columns,
   and fail before any worker starts if they do not fit.
2. `SignatureScorer(plan)` (in each worker): load the model once with `sigserve.load`, then turn each
   batch (an Arrow table) into the signature's inputs, run it through the same `Servable.predict`,
   `classify` or `regress` that the server calls, and return the key columns next to the results.

So a row scored here gets exactly the numbers the server returns for it: the same runtime, the same
signature resolution, the same TF Serving rules for Classify and Regress.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from sigserve.errors import Code, SigserveError
from sigserve.integrations import columns
from sigserve.protos import example_pb2, meta_graph_pb2, types_pb2
from sigserve.saved_model import signature_constants as sc

PREDICT, CLASSIFY, REGRESS = "predict", "classify", "regress"
METHODS = (PREDICT, CLASSIFY, REGRESS)
_METHOD_NAMES = {sc.CLASSIFY_METHOD_NAME: CLASSIFY, sc.REGRESS_METHOD_NAME: REGRESS}


def _invalid(message: str) -> SigserveError:
    return SigserveError(Code.INVALID_ARGUMENT, message)


def resolve_export_dir(model_base_path: str, version: int | None = None) -> tuple[int, str]:
    """(version, directory) under a TF Serving base path: the highest version, or `version`.

    Object-store base paths (s3://, gs://) plug in here, through the storage work's listing of a
    base path; until then this is a local directory, as for `sigserve serve`."""
    from sigserve.manager import source

    versions = source.list_versions("score", model_base_path)
    if not versions:
        raise SigserveError(Code.NOT_FOUND, source.no_versions_message("score", model_base_path))
    if version is None:
        version = max(versions)
    elif version not in versions:
        found = ", ".join(str(v) for v in sorted(versions))
        raise SigserveError(
            Code.NOT_FOUND, f"Version {version} is not under {model_base_path} (versions there: {found})"
        )
    return version, versions[version]


def method_of(signature: meta_graph_pb2.SignatureDef) -> str:
    """The API a signature is served by: its method_name's, else predict (TF2 exports say predict)."""
    return _METHOD_NAMES.get(signature.method_name, PREDICT)


@dataclasses.dataclass(frozen=True)
class ScoringPlan:
    """What every worker needs, resolved on the driver against the data's columns (picklable)."""

    export_dir: str
    signature_name: str
    method: str
    inputs: tuple[tuple[str, str], ...]  # (signature input alias, column)
    input_dtypes: tuple[int, ...]  # DataType of each input, in the order of `inputs`
    row_shapes: tuple[tuple[int, ...] | None, ...]  # the signature's shape past the batch dimension
    outputs: tuple[str, ...]  # result columns: output aliases, or classes/scores, or outputs
    keys: tuple[str, ...]  # input columns carried next to the results
    tags: tuple[str, ...] = ("serve",)
    threads: int = 0  # TensorFlow intra- and inter-op threads per worker (0: TensorFlow's default)


def read_signature(
    export_dir: str, signature_name: str, tags: Sequence[str] = ("serve",)
) -> meta_graph_pb2.SignatureDef:
    """The SignatureDef, read from saved_model.pb without TensorFlow."""
    from sigserve.saved_model import loader

    meta_graph = loader.get_meta_graph(loader.read_saved_model(export_dir), tags)
    if signature_name not in meta_graph.signature_def:
        keys = ", ".join(sorted(meta_graph.signature_def)) or "none"
        raise SigserveError(
            Code.NOT_FOUND,
            f"Signature {signature_name!r} is not in {export_dir} (signatures: {keys}); "
            f"list them with: sigserve show --dir {export_dir} --all",
        )
    return meta_graph.signature_def[signature_name]


def plan_scoring(
    export_dir: str,
    signature_name: str,
    data_columns: Sequence[str],
    *,
    method: str | None = None,
    input_map: Mapping[str, str] | None = None,
    outputs: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
    tags: Sequence[str] = ("serve",),
    threads: int = 0,
) -> ScoringPlan:
    """Match the signature to the data: input alias A reads column `input_map[A]`, else column A;
    `keys` (default: every column that is not an input) are carried next to the results."""
    signature = read_signature(export_dir, signature_name, tags)
    method = method or method_of(signature)
    if method not in METHODS:
        raise _invalid(f"Unknown method {method!r}; use one of {', '.join(METHODS)}")
    mapping = dict(input_map or {})
    unknown = sorted(set(mapping) - set(signature.inputs))
    if unknown:
        raise _invalid(
            f"--input_map names {', '.join(unknown)}, which signature {signature_name} does not have "
            f"(its inputs: {', '.join(sorted(signature.inputs))})"
        )
    available = list(data_columns)
    if method != PREDICT:
        _check_example_signature(signature, signature_name, method)
    inputs: list[tuple[str, str]] = []
    for alias in sorted(signature.inputs):
        column = mapping.get(alias, alias)
        if column in available:
            inputs.append((alias, column))
        elif method == PREDICT and alias in signature.defaults and alias not in mapping:
            continue  # the signature's default value feeds it
        else:
            raise _invalid(
                f"Signature {signature_name} needs input {alias!r}, but the data has no column "
                f"{column!r} (columns: {', '.join(available) or 'none'}). Name the column with "
                f"--input_map {alias}=COLUMN"
            )
    used = {column for _, column in inputs}
    if keys is None:
        key_columns = tuple(c for c in available if c not in used)
    else:
        missing = [k for k in keys if k not in available]
        if missing:
            raise _invalid(
                f"--keys names {', '.join(missing)}, not among the columns: {', '.join(available)}"
            )
        key_columns = tuple(keys)
    result_columns = _result_columns(signature, signature_name, method, outputs)
    clash = sorted(set(result_columns) & set(key_columns))
    if clash:
        raise _invalid(
            f"Result column(s) {', '.join(clash)} would replace the carried column(s) of the same name; "
            "choose the carried columns with --keys (e.g. --keys id)"
        )
    return ScoringPlan(
        export_dir=export_dir,
        signature_name=signature_name,
        method=method,
        inputs=tuple(inputs),
        input_dtypes=tuple(int(signature.inputs[a].dtype) for a, _ in inputs),
        row_shapes=tuple(_row_shape(signature.inputs[a]) for a, _ in inputs),
        outputs=tuple(result_columns),
        keys=key_columns,
        tags=tuple(tags),
        threads=threads,
    )


def _check_example_signature(signature: meta_graph_pb2.SignatureDef, name: str, method: str) -> None:
    if len(signature.inputs) != 1 or next(iter(signature.inputs.values())).dtype != types_pb2.DT_STRING:
        raise _invalid(
            f"{method} needs a signature with one string input of serialized tf.train.Example; "
            f"{name} has inputs {', '.join(sorted(signature.inputs))}. Score it with --method predict"
        )


def _result_columns(
    signature: meta_graph_pb2.SignatureDef, name: str, method: str, outputs: Sequence[str] | None
) -> list[str]:
    if method == CLASSIFY:
        available = [
            k for k in (sc.CLASSIFY_OUTPUT_CLASSES, sc.CLASSIFY_OUTPUT_SCORES) if k in signature.outputs
        ]
    elif method == REGRESS:
        available = [sc.REGRESS_OUTPUTS]
    else:
        available = sorted(signature.outputs)
    if not outputs:
        return available
    unknown = [o for o in outputs if o not in available]
    if unknown:
        raise _invalid(
            f"--outputs names {', '.join(unknown)}; {method} on signature {name} gives {', '.join(available)}"
        )
    return list(dict.fromkeys(outputs))


def _row_shape(info: meta_graph_pb2.TensorInfo) -> tuple[int, ...] | None:
    shape = info.tensor_shape
    if shape.unknown_rank or not shape.dim:
        return None
    return tuple(int(d.size) for d in shape.dim[1:])


class SignatureScorer:
    """Callable on an Arrow table of rows; loads the model once (a Ray actor keeps one per worker)."""

    def __init__(self, plan: ScoringPlan) -> None:
        import sigserve

        self.plan = plan
        self.servable = sigserve.load(
            plan.export_dir,
            plan.tags,
            intra_op_parallelism=plan.threads,
            inter_op_parallelism=plan.threads,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.num_rows
        if self.plan.method == PREDICT:
            results = self._predict(batch, rows)
        else:
            results = self._classify_or_regress(batch, rows)
        out = batch.select(list(self.plan.keys))
        for name in self.plan.outputs:
            out = out.append_column(name, results[name])
        return out

    def _predict(self, batch: pa.Table, rows: int) -> dict[str, pa.Array]:
        plan = self.plan
        inputs: dict[str, Any] = {}
        for (alias, column), dtype, shape in zip(
            plan.inputs, plan.input_dtypes, plan.row_shapes, strict=True
        ):
            tensor = columns.cast_for_input(
                columns.to_tensor(batch.column(column), column), dtype, column, alias
            )
            if shape == (1,) and tensor.ndim == 1:
                tensor = tensor.reshape(-1, 1)  # a plain column feeds a [-1, 1] input, one value per row
            inputs[alias] = tensor
        outputs = self.servable.predict(inputs, plan.signature_name, output_filter=list(plan.outputs))
        return {alias: columns.to_column(outputs[alias], rows, alias) for alias in plan.outputs}

    def _classify_or_regress(self, batch: pa.Table, rows: int) -> dict[str, pa.Array]:
        plan = self.plan
        ((_, column),) = plan.inputs
        if rows == 0:
            return {
                sc.CLASSIFY_OUTPUT_CLASSES: pa.array([], pa.list_(pa.string())),
                sc.CLASSIFY_OUTPUT_SCORES: pa.array([], pa.list_(pa.float32())),
                sc.REGRESS_OUTPUTS: pa.array([], pa.float32()),
            }
        examples = _parse_examples(columns.to_tensor(batch.column(column), column), column)
        if plan.method == REGRESS:
            regression = self.servable.regress(examples, plan.signature_name)
            values = np.fromiter((r.value for r in regression.regressions), np.float32, rows)
            return {sc.REGRESS_OUTPUTS: pa.array(values)}
        classification = self.servable.classify(examples, plan.signature_name)
        labels = [[c.label for c in row.classes] for row in classification.classifications]
        scores = [[c.score for c in row.classes] for row in classification.classifications]
        return {
            sc.CLASSIFY_OUTPUT_CLASSES: pa.array(labels, pa.list_(pa.string())),
            sc.CLASSIFY_OUTPUT_SCORES: pa.array(scores, pa.list_(pa.float32())),
        }


def _parse_examples(serialized: np.ndarray, column: str) -> list[example_pb2.Example]:
    if serialized.dtype != object:
        raise _invalid(
            f"column {column} must hold serialized tf.train.Example (binary), not {serialized.dtype}"
        )
    out = []
    for i, data in enumerate(serialized):
        try:
            out.append(example_pb2.Example.FromString(data))
        except Exception as e:  # protobuf's DecodeError
            raise _invalid(
                f"column {column}, row {i} of a batch, is not a serialized tf.train.Example: {e}"
            ) from None
    return out
