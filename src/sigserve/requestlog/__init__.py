"""Request logging: sampled calls written as TF Serving `PredictionLog` records (or JSON lines) by a
writer thread, as each model's `logging_config` says (README "Request logging")."""

from sigserve.requestlog.calls import Call
from sigserve.requestlog.logger import RequestLogger, Route, Settings, check_logging_config

__all__ = ["Call", "RequestLogger", "Route", "Settings", "check_logging_config"]
