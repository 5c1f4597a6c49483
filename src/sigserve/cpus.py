"""How many CPUs this process may use: the one answer behind every "0 means a default per CPU" setting
(TF Serving's 4 x CPUs front-end pools, TensorFlow's port::MaxParallelism() batch threads)."""

from __future__ import annotations

import os


def schedulable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)
