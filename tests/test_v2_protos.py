"""sigserve's V2 protos share a process with tritonclient's, kserve's and MLServer's (each registers
package `inference` in the default descriptor pool, and they clash with each other: kserve#3099,
MLServer#1730), in either import order, and speak the same wire format; sigserve's V2 codec agrees
with tritonclient's own encoders and decoders for every datatype and framing.

The clients live in .venv-v2 (`make v2venv`, part of `make test`), so these run as subprocesses."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from tests.conftest import ROOT

V2_PYTHON = ROOT / ".venv-v2" / "bin" / "python"
CHECK = pathlib.Path(__file__).parent / "v2clients" / "codec_check.py"


def run_check(*args: str) -> str:
    if not V2_PYTHON.exists():
        pytest.skip(f"{V2_PYTHON} is missing: run `make v2venv` (make test does) for the V2 client tests")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run(
        [str(V2_PYTHON), str(CHECK), *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("client", ["tritonclient", "kserve", "mlserver"])
@pytest.mark.parametrize("first", ["sigserve", "client"])
def test_sigserve_v2_protos_import_beside_each_client(first: str, client: str) -> None:
    assert run_check("coexist", first, client) == f"ok {first} {client}"


def test_codec_agrees_with_tritonclient_for_every_datatype() -> None:
    last = run_check("triton-codec")
    assert last.startswith("ok ") and int(last.split()[1]) >= 200, last
