"""The TF-free layers stay TF-free: importing them, and running `sigserve show`, loads no `tensorflow`
module (architecture.md). Checked in fresh subprocesses, since this test process may hold TensorFlow."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

TF_FREE = [
    "sigserve.errors",
    "sigserve.interfaces",
    "sigserve.saved_model",
    "sigserve.codec",
    "sigserve.codec.v2.rest",
    "sigserve.codec.v2.grpc",
    "sigserve.codec.v2.examples",
    "sigserve.client",
    "sigserve.cli",
    "sigserve.manager",
    "sigserve.batching",
    "sigserve.service",
    "sigserve.storage",
    # The front ends reach TensorFlow only through the servables the manager loads.
    "sigserve.server.rest",
    "sigserve.server.grpc_server",
    "sigserve.server.v2_rest",
    "sigserve.server.serve",
    "sigserve.requestlog",
    "sigserve.requestlog.calls",
    "sigserve.requestlog.sinks",
    "sigserve.openapi",
    "sigserve",
]
SAVED_MODEL_SUBMODULES = [
    "sigserve.saved_model.constants",
    "sigserve.saved_model.signature_constants",
    "sigserve.saved_model.tag_constants",
    "sigserve.saved_model.signature_def_utils",
    "sigserve.saved_model.loader",
    "sigserve.saved_model.editor",
    "sigserve.saved_model.show",
    "sigserve.saved_model.validate",
]

_PROBE = r"""
import importlib, importlib.util, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
    for sub in getattr(sys.modules[name], "__all__", []) or []:
        # __all__ may name submodules (import them too) or plain attributes (skip those).
        if importlib.util.find_spec(name + "." + sub) is not None:
            importlib.import_module(name + "." + sub)
exec(sys.argv[2])
print(json.dumps(sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))))
"""


def _tf_modules_after(modules: list[str], then: str = "") -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(modules), then], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", TF_FREE + SAVED_MODEL_SUBMODULES)
def test_import_loads_no_tensorflow(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist yet")
    assert _tf_modules_after([module]) == []


def test_sigserve_show_validate_and_edit_load_no_tensorflow(
    fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    src = fixtures_dir / "saved_model_half_plus_two_tf2_cpu/00000123"
    out = tmp_path / "copy"
    run = (
        "from sigserve.cli import main\n"
        f"assert main(['show', '--dir', {str(src)!r}, '--all']) == 0\n"
        f"assert main(['show', '--dir', {str(src)!r}, '--tag_set', 'serve', '--list_ops']) == 0\n"
        f"main(['validate', '--dir', {str(src)!r}])\n"
        f"assert main(['signature', 'set-method', '--dir', {str(src)!r}, '--output_dir', {str(out)!r}, "
        "'--key', 'serving_default', '--method', 'regress']) == 0\n"
    )
    assert _tf_modules_after(["sigserve.cli"], run) == []
    assert (out / "saved_model.pb").exists()


def test_sigserve_show_does_not_import_numpy(fixtures_dir: pathlib.Path) -> None:
    src = fixtures_dir / "saved_model_half_plus_two_cpu/00000123"
    code = (
        "import sys\nfrom sigserve.cli import main\n"
        f"main(['show', '--dir', {str(src)!r}, '--all'])\n"
        "print('NUMPY' if 'numpy' in sys.modules else 'NO_NUMPY')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "NO_NUMPY"
