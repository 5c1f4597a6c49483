"""Server-side batching with TF Serving's BatchingParameters (tfserving-api.md §5). No TensorFlow here.

`serve` builds one `BatchScheduler(parse_batching_parameters(text), registry=...)` and loads every
servable with `runner_wrapper=scheduler.wrapper()`: the servable's runner is then a `BatchingRunner`
around its own session call, and predict/classify/regress/multi-inference all batch through it.
"""

from sigserve.batching.params import PER_MODEL_FILE, parse_batching_parameters, per_model_params
from sigserve.batching.scheduler import BatchingRunner, BatchScheduler

__all__ = [
    "PER_MODEL_FILE",
    "BatchScheduler",
    "BatchingRunner",
    "parse_batching_parameters",
    "per_model_params",
]
