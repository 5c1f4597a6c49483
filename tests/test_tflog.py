"""TensorFlow's C++ start-up lines are hidden by default (`sigserve run`, `serve`, `sigserve.load`) and
come back with `--verbose` or `TF_CPP_MIN_LOG_LEVEL=0` (issue 21, item 7). Each check runs in a
fresh process: the lines are printed once, at TensorFlow's first import."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.cli import sigserve
from tests.conftest import ROOT, free_port

pytest.importorskip("tensorflow")

HPT = "saved_model_half_plus_two_cpu/00000123"
# What TensorFlow writes through absl/glog: "I0000 00:00:1796473923.830894   12730 port.cc:153] ...".
GLOG_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+\] ", re.MULTILINE)
NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard")


def test_filter_lines_keeps_what_the_level_asks_for() -> None:
    from sigserve.runtime.tflog import filter_lines

    data = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        b"I0000 00:00:1796474239.366050   22185 port.cc:153] oneDNN custom operations are on.\n"
        b"I0000 00:00:1796474239.427638   22185 cpu_feature_guard.cc:227] This TensorFlow binary\n"
        b"To enable the following instructions: AVX2 FMA, rebuild TensorFlow.\n"
        b"W0000 00:00:1796474239.500000   22185 loader.cc:1] a warning\n"
        b"E1205 12:00:01.000000   22185 y.cc:2] an error\n"
        b"Traceback (most recent call last): not TensorFlow's\n"
    )
    assert filter_lines(data, 0) == data
    assert filter_lines(data, 1) == (
        b"W0000 00:00:1796474239.500000   22185 loader.cc:1] a warning\n"
        b"E1205 12:00:01.000000   22185 y.cc:2] an error\n"
        b"Traceback (most recent call last): not TensorFlow's\n"
    )
    # The line after an E line counts as its continuation: at level 3 both go.
    assert filter_lines(data, 3) == b""
    assert filter_lines(b"plain text\n", 3) == b"plain text\n"


def _run_cli(
    fixtures_dir: pathlib.Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return sigserve(
        "run", "--dir", str(fixtures_dir / HPT), "--signature_def", "serving_default",
        "--input_exprs", "x=[[1.0]]", *extra, env=env, unset=("TF_CPP_MIN_LOG_LEVEL",),
    )  # fmt: skip


def test_run_is_quiet_by_default_and_verbose_on_request(fixtures_dir: pathlib.Path) -> None:
    quiet = _run_cli(fixtures_dir)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "Result for output key y:\n[[2.5]]\n"
    assert quiet.stderr == ""
    verbose = _run_cli(fixtures_dir, "--verbose")
    by_env = _run_cli(fixtures_dir, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert verbose.stdout == by_env.stdout == quiet.stdout
    if not GLOG_LINE.search(verbose.stderr):
        pytest.skip("this TensorFlow build prints no start-up lines at all")
    for proc in (verbose, by_env):
        assert GLOG_LINE.search(proc.stderr), proc.stderr


def test_sigserve_load_is_quiet(fixtures_dir: pathlib.Path) -> None:
    code = "import sys, sigserve; print(sigserve.load(sys.argv[1]).predict({'x': [[1.0]]})['y'].tolist())"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(fixtures_dir / HPT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[[2.5]]\n"
    assert proc.stderr == ""


def test_serve_log_has_no_tensorflow_start_up_lines(
    fixtures_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "sigserve.cli", "serve", "--port=0", f"--rest_api_port={free_port()}",
                "--rest_api_host=127.0.0.1", "--model_name=hpt",
                f"--model_base_path={fixtures_dir / HPT.split('/')[0]}",
            ],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "Exporting HTTP/REST API" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    text = log.read_text()
    assert "AVAILABLE" in text
    assert not GLOG_LINE.search(text), text
    assert not any(noise in text for noise in NOISE), text
