"""The model manager: which versions of which models are served, loaded from disk and swapped without
dropping a request (tfserving-api.md §4; docs/architecture.md, `sigserve.manager`).

`ServerCore(config, loader=...)` polls each model's base path, applies its version policy, loads and
unloads versions in the availability-preserving order, replays warmup requests, assigns version
labels, and answers ModelSpec lookups (`handle`) and the status API (`model_status`).
"""

from __future__ import annotations

from sigserve.manager.clock import Clock, ManualClock, SystemClock
from sigserve.manager.core import ServableHandle, ServerCore
from sigserve.manager.lifecycle import Loader, LoadRequest, ManagedServable
from sigserve.manager.states import ServableState

__all__ = [
    "Clock",
    "LoadRequest",
    "Loader",
    "ManagedServable",
    "ManualClock",
    "ServableHandle",
    "ServableState",
    "ServerCore",
    "SystemClock",
]
