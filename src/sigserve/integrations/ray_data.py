"""Batch scoring on Ray Data: read a data set, score it with a signature on an actor pool, write the
results next to their keys. `sigserve score` is the command line; `score()` is the Python API.

    sigserve score --model_base_path /models/m --signature_def serving_default \\
        --input data.parquet --output scored.parquet

Each actor loads the model once (`scoring.SignatureScorer`) and scores Arrow batches, so parquet
columns reach TensorFlow without a per-row Python object. Rows flow in blocks: the data set never
has to fit in memory, and Ray's progress bar shows how far it got. On a cluster
(`--ray-address`), the model path and the input/output paths must be readable by every node.

Formats: parquet, CSV, JSON lines, numpy (`.npy`, one array, rows along its first axis) and
TFRecord files of serialized tf.train.Example (read as raw records, for Classify and Regress
signatures or a predict signature taking serialized Examples). Object-store paths (s3://, gs://)
work where Ray's reader (pyarrow's file systems) reaches them; the model path goes through
`scoring.resolve_export_dir`, where the storage work plugs in object-store base paths.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data.datasource import FileBasedDatasource

from sigserve.errors import Code, SigserveError
from sigserve.integrations import scoring

FORMATS = ("parquet", "csv", "json", "numpy", "tfrecords")
OUTPUT_FORMATS = ("parquet", "csv", "json")
DEFAULT_BATCH_SIZE = 1024  # rows per signature call: large enough that TensorFlow's per-call cost vanishes
TFRECORD_COLUMNS = ("example", "file", "record")  # serialized Example; its file and index there (keys)
NUMPY_COLUMN = "data"  # what ray.data.read_numpy names the array's column
_TFRECORD_BLOCK_ROWS = 8192
_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".npy": "numpy",
    ".tfrecord": "tfrecords",
    ".tfrecords": "tfrecords",
    ".tfrec": "tfrecords",
}


def detect_format(path: str) -> str:
    """The format a path's extension names (or, for a local directory, its first file's)."""
    candidates = [path]
    if os.path.isdir(path):
        candidates = sorted(os.path.join(path, n) for n in os.listdir(path) if not n.startswith((".", "_")))
    for candidate in candidates:
        name = candidate[:-3] if candidate.endswith(".gz") else candidate
        fmt = _EXTENSIONS.get(os.path.splitext(name)[1].lower())
        if fmt:
            return fmt
    raise SigserveError(
        Code.INVALID_ARGUMENT,
        f"Cannot tell the format of {path} from its name; give it, e.g. --input_format parquet "
        f"(one of {', '.join(FORMATS)})",
    )


class TFRecordExamples(FileBasedDatasource):
    """TFRecord files as raw records: the serialized tf.train.Example a Classify or Regress signature
    takes, byte for byte, with its file and index as keys. (`ray.data.read_tfrecords` parses each
    Example into feature columns, which would have to be serialized again, and checks no CRC; this
    checks both CRCs of every record, as TensorFlow's reader does.)"""

    def _read_stream(self, f: Any, path: str) -> Iterator[pa.Table]:
        from sigserve.manager.tfrecord import read_records

        records: list[bytes] = []
        start = 0
        for record in read_records(f):
            records.append(record)
            if len(records) == _TFRECORD_BLOCK_ROWS:
                yield _tfrecord_block(records, path, start)
                start += len(records)
                records = []
        if records or start == 0:
            yield _tfrecord_block(records, path, start)


def _tfrecord_block(records: list[bytes], path: str, start: int) -> pa.Table:
    example, file, record = TFRECORD_COLUMNS
    return pa.table(
        {
            example: pa.array(records, pa.large_binary()),
            file: pa.array([path] * len(records), pa.string()),
            record: pa.array(np.arange(start, start + len(records), dtype=np.int64)),
        }
    )


def read_dataset(paths: str | Sequence[str], fmt: str) -> ray.data.Dataset:
    path = paths if isinstance(paths, str) else list(paths)
    if fmt == "parquet":
        return ray.data.read_parquet(path)
    if fmt == "csv":
        return ray.data.read_csv(path)
    if fmt == "json":
        return ray.data.read_json(path)
    if fmt == "numpy":
        return ray.data.read_numpy(path)
    if fmt == "tfrecords":
        return ray.data.read_datasource(TFRecordExamples(path))
    raise SigserveError(
        Code.INVALID_ARGUMENT, f"Unknown input format {fmt!r}; use one of {', '.join(FORMATS)}"
    )


def default_input_map(fmt: str, signature_inputs: Sequence[str]) -> dict[str, str]:
    """Where a single-input signature reads from when the format names the column itself."""
    if len(signature_inputs) != 1:
        return {}
    (alias,) = signature_inputs
    if fmt == "tfrecords":
        return {alias: TFRECORD_COLUMNS[0]}
    if fmt == "numpy":
        return {alias: NUMPY_COLUMN}
    return {}


def score_dataset(
    ds: ray.data.Dataset,
    plan: scoring.ScoringPlan,
    *,
    actors: int = 0,
    cpus_per_actor: float = 1.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    scorer: type[scoring.SignatureScorer] = scoring.SignatureScorer,
) -> ray.data.Dataset:
    """`ds` scored by `plan` on an actor pool: `actors` of them, or (0) from one up to as many as the
    cluster's CPUs hold, less one for reading and writing. Each reserves `cpus_per_actor` CPUs.
    `scorer`: a subclass of `SignatureScorer` to run instead (to time or log batches)."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    if actors > 0:
        if actors * cpus_per_actor > cpus - 1:
            # Ray Data's read and write tasks take a whole CPU each: with every CPU held by an
            # actor they never run, and the job waits forever.
            raise SigserveError(
                Code.INVALID_ARGUMENT,
                f"{actors} actor(s) x {cpus_per_actor:g} CPU leave less than one of the cluster's "
                f"{cpus:g} CPUs for reading and writing; lower --actors or --cpus_per_actor "
                f"(e.g. --actors {actors} --cpus_per_actor {max(0.1, (cpus - 1) / actors):.2g})",
            )
        compute = ray.data.ActorPoolStrategy(size=actors)
    else:
        spare = max(1, int((cpus - 1) // cpus_per_actor))  # one CPU stays for reads and writes
        compute = ray.data.ActorPoolStrategy(min_size=1, max_size=spare)
    return ds.map_batches(
        scorer,
        fn_constructor_args=(plan,),
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=compute,
        num_cpus=cpus_per_actor,
        zero_copy_batch=True,
    )


def write_dataset(ds: ray.data.Dataset, path: str, fmt: str, *, overwrite: bool = False) -> None:
    """A directory of `fmt` files at `path`, as Ray (and Spark) write them."""
    from ray.data import SaveMode

    mode = SaveMode.OVERWRITE if overwrite else SaveMode.ERROR
    if fmt == "parquet":
        ds.write_parquet(path, mode=mode)
    elif fmt == "csv":
        ds.write_csv(path, mode=mode)
    elif fmt == "json":
        ds.write_json(path, mode=mode)
    else:
        raise SigserveError(
            Code.INVALID_ARGUMENT, f"Unknown output format {fmt!r}; use one of {', '.join(OUTPUT_FORMATS)}"
        )


def check_output(output: str, overwrite: bool) -> None:
    """A local output that exists is an error unless `overwrite` (Ray's writer checks remote ones)."""
    if not overwrite and "://" not in output and os.path.exists(output):
        raise SigserveError(
            Code.ALREADY_EXISTS, f"{output} exists; remove it or pass --overwrite to replace it"
        )


@dataclasses.dataclass
class ScoreReport:
    export_dir: str
    plan: scoring.ScoringPlan
    output: str
    output_format: str
    seconds: float


def score(
    *,
    export_dir: str,
    signature_name: str,
    input: str | Sequence[str],
    output: str,
    input_format: str | None = None,
    output_format: str | None = None,
    method: str | None = None,
    input_map: Mapping[str, str] | None = None,
    outputs: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
    tags: Sequence[str] = ("serve",),
    actors: int = 0,
    cpus_per_actor: float = 1.0,
    threads_per_actor: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    preserve_order: bool = False,
    overwrite: bool = False,
    scorer: type[scoring.SignatureScorer] = scoring.SignatureScorer,
) -> ScoreReport:
    """Read `input`, score every row with `signature_name` of the SavedModel at `export_dir`, write
    the results next to their keys at `output`. Needs a running Ray (`ray.init()`).

    Each actor reserves `cpus_per_actor` CPUs and gives TensorFlow `threads_per_actor` threads
    (default: the CPUs, rounded up). Rows come out in the input's order with `preserve_order` (always
    for numpy input, which has no key column); otherwise in whatever order the actors finish, each
    next to its keys."""
    first = input if isinstance(input, str) else input[0]
    fmt = input_format or detect_format(first)
    out_fmt = output_format or _output_format(output)
    if out_fmt not in OUTPUT_FORMATS:
        raise SigserveError(
            Code.INVALID_ARGUMENT, f"Cannot write {out_fmt}; use one of {', '.join(OUTPUT_FORMATS)}"
        )
    check_output(output, overwrite)
    signature = scoring.read_signature(export_dir, signature_name, tags)
    mapping = {**default_input_map(fmt, list(signature.inputs)), **(input_map or {})}
    ds = read_dataset(input, fmt)
    columns = list(TFRECORD_COLUMNS) if fmt == "tfrecords" else list(ds.columns())
    plan = scoring.plan_scoring(
        export_dir,
        signature_name,
        columns,
        method=method,
        input_map=mapping,
        outputs=outputs,
        keys=keys,
        tags=tags,
        threads=threads_per_actor or max(1, math.ceil(cpus_per_actor)),
    )
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = preserve_order or fmt == "numpy"
    started = time.monotonic()
    scored = score_dataset(
        ds, plan, actors=actors, cpus_per_actor=cpus_per_actor, batch_size=batch_size, scorer=scorer
    )
    write_dataset(scored, output, out_fmt, overwrite=overwrite)
    return ScoreReport(export_dir, plan, output, out_fmt, time.monotonic() - started)


def _output_format(path: str) -> str:
    fmt = _EXTENSIONS.get(os.path.splitext(path.rstrip("/"))[1].lower(), "parquet")
    return fmt
