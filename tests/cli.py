"""The real `sigserve` entry point (the console script pip installs) as a subprocess, for CLI tests."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from tests.conftest import ROOT

_BESIDE = pathlib.Path(sys.executable).parent / "sigserve"
SIGSERVE = str(_BESIDE if _BESIDE.exists() else ROOT / ".venv" / "bin" / "sigserve")


def sigserve(
    *args: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = (), timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`sigserve ARGS...`; `env` adds variables, `unset` removes them (e.g. TF_CPP_MIN_LOG_LEVEL,
    which conftest sets for every test process)."""
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    full_env.update(env or {})
    return subprocess.run(
        [SIGSERVE, *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=str(ROOT)
    )
