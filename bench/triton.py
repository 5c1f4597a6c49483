"""sigserve beside Triton (issue 19): half_plus_two over REST and gRPC, each with and without batching.

Triton is the `tritonserver` binary that the `nvidia-pytriton` package bundles (install it into
.venv-bench: `.venv-bench/bin/pip install nvidia-pytriton`), run CPU-only with its Python backend. The
backend's `model.py` loads the same SavedModel with `sigserve.runtime` and makes the same TensorFlow
session call as sigserve. Two Triton models: `half_plus_two` (dynamic batching, max batch 64, zero
queue delay) and `half_plus_two_nobatch`. The backend stub links libpython: `LD_LIBRARY_PATH` gets the
interpreter's `lib/` (where the stub's libpython differs from the interpreter's, it must).

Load: wrk with a V2 JSON body (REST), h2load with a pre-encoded `ModelInferRequest` (gRPC); Triton's
CPU per request is counted over its whole process tree (the server and its backend stubs).

    .venv/bin/python bench/triton.py [--concurrency 1,8,64] [--duration 3] [--rounds 1]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import batching_wire as wire  # noqa: E402
import numpy as np  # noqa: E402
from loadgen import free_port, run_h2load, run_wrk, stop  # noqa: E402

BENCH_VENV = ROOT / ".venv-bench"
MODEL_PY = """
import sys

sys.path[:0] = {paths!r}  # the stub does not pass PYTHONPATH on: TensorFlow and sigserve from here

import numpy as np
import triton_python_backend_utils as pb_utils
from sigserve import runtime


class TritonPythonModel:
    def initialize(self, args):
        self.servable = runtime.load({export!r}, name="half_plus_two", version=1)

    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "x").as_numpy() for r in requests]
        sizes = [len(x) for x in xs]
        # One TensorFlow call for the whole batch, as sigserve's batching runner makes.
        y = self.servable.predict({{"x": np.concatenate(xs)}})["y"]
        out, start = [], 0
        for n in sizes:
            # Through DLPack: `pb_utils.Tensor(name, ndarray)` of the stub bundled with pytriton 0.7.0
            # reads a NumPy 2 array (TensorFlow 2.21 needs NumPy 2) as 0 bytes, and Triton then
            # answers REST with 500 and gRPC with an empty raw_output_contents (`check` below).
            part = np.ascontiguousarray(y[start:start + n])
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("y", part.__dlpack__())]))
            start += n
        return out
"""
CONFIG = """name: "{name}"
backend: "python"
max_batch_size: {max_batch}
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{batching}
"""


def triton_home() -> pathlib.Path | None:
    found = list(BENCH_VENV.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    return found[0] if found else None


def _paths() -> list[str]:
    return [str(ROOT / "src"), *[p for p in sys.path if "site-packages" in p]]


def unavailable_reason() -> str | None:
    home = triton_home()
    if home is None:
        return "nvidia-pytriton is not installed in .venv-bench (.venv-bench/bin/pip install nvidia-pytriton)"
    if not (home / "bin" / "tritonserver").exists():
        return f"{home}/bin/tritonserver is missing"
    return None


def model_repository(tmp: pathlib.Path, export_dir: pathlib.Path) -> pathlib.Path:
    repo = tmp / "triton-models"
    batching = "dynamic_batching { max_queue_delay_microseconds: 0 }"
    for name, max_batch, text in (("half_plus_two", 64, batching), ("half_plus_two_nobatch", 64, "")):
        version = repo / name / "1"
        version.mkdir(parents=True)
        (version / "model.py").write_text(MODEL_PY.format(export=str(export_dir), paths=_paths()))
        (repo / name / "config.pbtxt").write_text(
            CONFIG.format(name=name, max_batch=max_batch, batching=text)
        )
    return repo


@dataclass
class Triton:
    """One tritonserver process serving both models; `model` picks which one a system loads."""

    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int

    @classmethod
    def start(cls, repo: pathlib.Path) -> Triton:
        home = triton_home()
        assert home is not None
        http_port, grpc_port = free_port(), free_port()
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (str(home / "external_libs"), libdir) if p)
        stubs = home / "python_backend_stubs" / py
        if stubs.is_dir():
            shutil.copy(stubs / "triton_python_backend_stub", home / "backends" / "python")
        cmd = [
            str(home / "bin" / "tritonserver"), f"--model-repository={repo}",
            f"--backend-directory={home / 'backends'}", f"--http-port={http_port}",
            f"--grpc-port={grpc_port}", "--allow-metrics=false", "--log-error=true",
        ]  # fmt: skip
        log = open(repo.parent / "triton.log", "wb")  # read back on failure
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                tail = (repo.parent / "triton.log").read_text(errors="replace")[-12000:]
                raise RuntimeError(f"tritonserver exited with {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return cls(proc, http_port, grpc_port)
            except OSError:
                pass
            if time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError("tritonserver not ready after 180 s")
            time.sleep(0.5)


def _grpcio() -> Any:
    """The grpcio package: `import grpc` from a script in bench/ finds bench/grpc.py first."""
    bench = str(ROOT / "bench")
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if str(pathlib.Path(p or ".").resolve()) != bench]
    try:
        return importlib.import_module("grpc")
    finally:
        sys.path[:] = saved


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and its children (Triton's backend stubs are child processes)."""
    total = wire.process_cpu_seconds(pid)
    try:
        children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(tree_cpu_seconds(int(c)) for c in children)


@dataclass
class TritonSystem:
    label: str
    server: Triton
    model: str

    def check(self) -> None:
        """One request each way must come back right (y = x/2 + 2), or the throughput is of errors."""
        grpc_lib = _grpcio()

        from sigserve.protos import open_inference_pb2 as pb

        url = f"http://127.0.0.1:{self.server.http_port}/v2/models/{self.model}/infer"
        body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1.0]}]}'
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            answer = json.loads(r.read())
        assert answer["outputs"][0]["data"] == [2.5], f"{self.label} REST answered {answer}"
        with grpc_lib.insecure_channel(f"127.0.0.1:{self.server.grpc_port}") as channel:
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            message = pb.ModelInferRequest(model_name=self.model)
            tensor = message.inputs.add(name="x", datatype="FP32", shape=[1, 1])
            tensor.contents.fp32_contents.append(1.0)
            reply = infer(message, timeout=30)
        got = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).tolist()
        assert got == [2.5], f"{self.label} gRPC answered {got}"

    def load(self, api: str, concurrency: int, duration: float) -> wire.Point:
        from sigserve.protos import open_inference_pb2 as pb

        before = tree_cpu_seconds(self.server.proc.pid)
        if api == "REST":
            url = f"http://127.0.0.1:{self.server.http_port}/v2/models/{self.model}/infer"
            body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1.0]}]}'
            rps, p50, p99, errors, requests = run_wrk(url, body, concurrency, duration)
        else:
            request = pb.ModelInferRequest(model_name=self.model)
            tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 1])
            tensor.contents.fp32_contents.append(1.0)
            url = f"http://127.0.0.1:{self.server.grpc_port}/inference.GRPCInferenceService/ModelInfer"
            rps, p50, p99, errors, requests = run_h2load(
                url, request.SerializeToString(), concurrency, duration
            )
        cpu = tree_cpu_seconds(self.server.proc.pid) - before
        return wire.Point(rps, p50, p99, errors, cpu / max(1, requests) * 1e6)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    reason = unavailable_reason()
    if reason:
        print(f"Triton left out: {reason}")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = pathlib.Path(tmp_dir)
        model = wire.half_plus_two()
        on = wire.batching_text(64, 0, os.cpu_count() or 1)
        systems: list[wire.Sigserve | TritonSystem] = [
            wire.Sigserve("sigserve batching off", model, None, tmp),
            wire.Sigserve("sigserve batching on", model, on, tmp),
        ]
        triton = None
        try:
            for system in systems:
                assert isinstance(system, wire.Sigserve)
                system.start()
            if reason is None:
                triton = Triton.start(model_repository(tmp, model.base_path / "00000123"))
                systems.append(TritonSystem("Triton", triton, "half_plus_two_nobatch"))
                systems.append(TritonSystem("Triton dynamic batching", triton, "half_plus_two"))
                for system in systems[2:]:
                    assert isinstance(system, TritonSystem)
                    system.check()
            points = wire.run(systems, ["REST", "gRPC"], concurrencies, args.duration, args.rounds)  # type: ignore[arg-type]
        finally:
            for system in systems:
                if isinstance(system, wire.Sigserve):
                    system.stop()
            if triton is not None:
                stop(triton.proc)
    labels = [s.label for s in systems]
    print()
    print(
        f"half_plus_two, 1-row requests, {os.cpu_count()} CPUs, {args.rounds} round(s) x {args.duration:g} s"
    )
    for line in wire.table(points, labels, ["REST", "gRPC"]):
        print(line)
    if triton is not None:
        for api in ("REST", "gRPC"):
            c = max(concurrencies)
            ratio = wire.median_rps(points, labels[1], api, c) / wire.median_rps(points, labels[3], api, c)
            failed = sum(p.errors for p in points.get((labels[3], api, c), []))
            note = f" (not comparable: {failed:,} of Triton's answers were errors)" if failed else ""
            print(f"{api} c={c}: sigserve batching on / Triton dynamic batching = {ratio:.2f}x{note}")
    print("command: .venv/bin/python bench/triton.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
