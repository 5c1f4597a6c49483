"""`--batching_parameters_file`: text BatchingParameters with TF Serving's defaults and checks (§5).

The returned proto has every field the scheduler reads filled in, so the rest of the package never
has to know which defaults TF Serving applies when a field is absent. The checks are the ones TF
Serving and TensorFlow's shared batch scheduler do at start-up, with their messages, so that a file
TF Serving rejects is rejected here for the same reason and a file it accepts is accepted.
"""

from __future__ import annotations

import itertools
import os
import pathlib

from google.protobuf import text_format

from sigserve.cpus import schedulable_cpus
from sigserve.errors import SigserveError, invalid_argument
from sigserve.protos.session_bundle_config_pb2 import BatchingParameters
from sigserve.protos.text import error_text

# TensorFlow's SharedBatchScheduler QueueOptions defaults, used by TF Serving for absent fields.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10
# TF Serving's server.cc names the pool when no parameters file is given.
DEFAULT_THREAD_POOL_NAME = "model_server_batch_threads"
# `--enable_per_model_batching_parameters` looks for this file inside each version directory.
PER_MODEL_FILE = "batching_params.pbtxt"

EXAMPLE = (
    "max_batch_size { value: 128 } batch_timeout_micros { value: 0 } "
    "max_enqueued_batches { value: 100 } num_batch_threads { value: 8 }"
)


def default_num_batch_threads() -> int:
    """TensorFlow's port::MaxParallelism(): the CPUs this process may run on."""
    return schedulable_cpus()


def parse_batching_parameters(text: str, source: str = "") -> BatchingParameters:
    """Parse, fill TF Serving's defaults and validate. `source` (a path) only names the file in errors.

    An empty text is valid: it is what `--enable_batching` without a parameters file means.
    """
    params = BatchingParameters()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as e:
        where = f"Invalid protobuf file: '{source}'" if source else "Invalid batching parameters"
        raise invalid_argument(
            f"{where}: {error_text(e)}. Expected text BatchingParameters with wrapper fields, e.g. {EXAMPLE}"
        ) from None
    _apply_defaults(params)
    try:
        validate(params)
    except SigserveError as e:
        if source:
            raise invalid_argument(f"Invalid batching parameters in '{source}': {e.message}") from None
        raise
    return params


def per_model_params(version_dir: str | os.PathLike[str]) -> BatchingParameters | None:
    """`batching_params.pbtxt` of one SavedModel version directory, or None when it has none.

    With `--enable_batching --enable_per_model_batching_parameters`, TF Serving batches a version
    with these parameters when the file exists and does not batch it at all when it does not
    (bundle_factory_util.cc GetPerModelBatchingParams); the global file's queue fields are then
    ignored, only its thread-pool fields (num_batch_threads, thread_pool_name) count. So:
    `params = per_model_params(dir)`; `if params is not None: wrapper = scheduler.wrapper(params)`.
    """
    path = pathlib.Path(version_dir) / PER_MODEL_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise invalid_argument(f"Could not read '{path}': {e}") from None
    return parse_batching_parameters(text, source=str(path))


def _apply_defaults(params: BatchingParameters) -> None:
    if not params.HasField("max_batch_size"):
        params.max_batch_size.value = DEFAULT_MAX_BATCH_SIZE
    if not params.HasField("batch_timeout_micros"):
        params.batch_timeout_micros.value = DEFAULT_BATCH_TIMEOUT_MICROS
    if not params.HasField("max_enqueued_batches"):
        params.max_enqueued_batches.value = DEFAULT_MAX_ENQUEUED_BATCHES
    if not params.HasField("num_batch_threads"):
        params.num_batch_threads.value = default_num_batch_threads()
    if not params.HasField("thread_pool_name"):
        params.thread_pool_name.value = DEFAULT_THREAD_POOL_NAME
    if not params.HasField("enable_large_batch_splitting"):
        params.enable_large_batch_splitting.SetInParent()
    if not params.HasField("max_execution_batch_size"):
        params.max_execution_batch_size.value = params.max_batch_size.value
    if params.max_enqueued_batches.value == 0 and not params.enable_large_batch_splitting.value:
        # TensorFlow rewrites 0 to 1 without splitting so that old configs keep working.
        params.max_enqueued_batches.value = 1


def max_execution_batch_size(params: BatchingParameters) -> int:
    """The largest batch actually run: max_execution_batch_size with splitting, else max_batch_size."""
    if params.enable_large_batch_splitting.value:
        return int(params.max_execution_batch_size.value)
    return int(params.max_batch_size.value)


def validate(params: BatchingParameters) -> None:
    """TF Serving's and TensorFlow's start-up checks on defaults-filled parameters."""
    splitting = params.enable_large_batch_splitting.value
    max_batch = params.max_batch_size.value
    max_exec = params.max_execution_batch_size.value
    for field, value in (
        ("max_batch_size", max_batch),
        ("max_enqueued_batches", params.max_enqueued_batches.value),
        ("num_batch_threads", params.num_batch_threads.value),
    ):
        if value <= 0:
            raise invalid_argument(f"{field} must be positive; was {value}")
    if params.batch_timeout_micros.value < 0:
        timeout = params.batch_timeout_micros.value
        raise invalid_argument(f"batch_timeout_micros must be non-negative; was {timeout}")
    if splitting:
        if max_exec <= 0:
            raise invalid_argument(f"max_execution_batch_size must be positive; was {max_exec}")
        if max_batch < max_exec:
            raise invalid_argument(
                "When enable_large_batch_splitting is true, max_batch_size must be greater than or "
                f"equal to max_execution_batch_size (max_batch_size={max_batch}, "
                f"max_execution_batch_size={max_exec})"
            )
    sizes = list(params.allowed_batch_sizes)
    if not sizes:
        return
    for size in sizes:
        if size <= 0:
            raise invalid_argument(f"allowed_batch_sizes entries must be positive; was {size}")
    if any(b <= a for a, b in itertools.pairwise(sizes)):
        raise invalid_argument("allowed_batch_sizes entries must be monotonically increasing")
    last = sizes[-1]
    if splitting:
        if last > max_batch:
            raise invalid_argument(
                "Last entry in allowed_batch_sizes must be less than or equal to max_batch_size; "
                f"last entry was {last}; expected {max_batch}"
            )
        if last != max_exec:
            raise invalid_argument(
                "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; "
                f"last entry was {last}; expected {max_exec}"
            )
    elif last != max_batch:
        raise invalid_argument(
            f"Last entry in allowed_batch_sizes must match max_batch_size; last entry was {last}; "
            f"expected {max_batch}"
        )
