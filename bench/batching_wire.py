"""Batching over the wire (`bench/batching.py --e2e`, and the sigserve side of `bench/triton.py`):
sigserve processes with and without `--enable_batching`, loaded by `wrk` (REST JSON) and `h2load`
(pre-encoded gRPC PredictRequest), one-row requests at each concurrency, modes interleaved per round.

Server CPU per request is read from /proc for the server process (all its threads) around each run;
req/s and p50/p99 are the load generator's. Models: `half_plus_two` (TF Serving's fixture: a step of
a few µs, so the per-request cost of batching is what shows) or `mlp` (bench/batching.py's 3×2048
MLP: a step that batching pays for).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import free_port, process_cpu_seconds, run_h2load, run_wrk, stop, wait_http  # noqa: E402

PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").is_dir() else sys.executable
HALF_PLUS_TWO = ROOT.parent / "shared" / "fixtures" / "tfserving" / "saved_model_half_plus_two_cpu"


@dataclass
class Model:
    name: str
    base_path: pathlib.Path
    row: np.ndarray  # one request's input `x`, 1 row

    def rest_body(self) -> bytes:
        import orjson

        return orjson.dumps({"instances": self.row.tolist()})

    def grpc_message(self) -> bytes:
        from sigserve.codec import tensor
        from sigserve.protos import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.name
        request.inputs["x"].CopyFrom(tensor.from_ndarray(self.row))
        return bytes(request.SerializeToString())


def half_plus_two() -> Model:
    return Model("half_plus_two", HALF_PLUS_TWO, np.asarray([1.0], np.float32))


def mlp(tmp: pathlib.Path) -> Model:
    from batching import IN, export_mlp

    export_dir = export_mlp(tmp)
    row = np.random.default_rng(1).standard_normal((1, IN)).astype(np.float32)
    return Model("mlp", export_dir.parent, row)


@dataclass
class Sigserve:
    """One `sigserve serve` process; `batching` is the parameters file's text, or None for off."""

    label: str
    model: Model
    batching: str | None
    tmp: pathlib.Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    rest_port: int = 0
    grpc_port: int = 0

    def start(self) -> None:
        self.rest_port, self.grpc_port = free_port(), free_port()
        cmd = [
            PYTHON, "-m", "sigserve.cli", "serve",
            f"--port={self.grpc_port}", "--grpc_host=127.0.0.1",
            f"--rest_api_port={self.rest_port}", "--rest_api_host=127.0.0.1",
            f"--model_name={self.model.name}", f"--model_base_path={self.model.base_path}",
            *self.extra,
        ]  # fmt: skip
        if self.batching is not None:
            params = self.tmp / f"batching-{self.label.replace(' ', '_')}.txt"
            params.write_text(self.batching)
            cmd += ["--enable_batching", f"--batching_parameters_file={params}"]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.rest_port}/readyz", self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def load(self, api: str, concurrency: int, duration: float) -> Point:
        if api == "REST":
            url = f"http://127.0.0.1:{self.rest_port}/v1/models/{self.model.name}:predict"
            return measure(self.pid, lambda: run_wrk(url, self.model.rest_body(), concurrency, duration))
        url = f"http://127.0.0.1:{self.grpc_port}/tensorflow.serving.PredictionService/Predict"
        return measure(self.pid, lambda: run_h2load(url, self.model.grpc_message(), concurrency, duration))


@dataclass
class Point:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float  # server CPU per request


def measure(pid: int, run: Callable[[], tuple[float, float, float, int, int]]) -> Point:
    before = process_cpu_seconds(pid)
    rps, p50, p99, errors, requests = run()
    cpu = process_cpu_seconds(pid) - before
    return Point(rps, p50, p99, errors, cpu / max(1, requests) * 1e6)


def batching_text(max_batch_size: int, timeout_us: int, threads: int) -> str:
    return (
        f"max_batch_size {{ value: {max_batch_size} }} batch_timeout_micros {{ value: {timeout_us} }} "
        f"max_enqueued_batches {{ value: 1000 }} num_batch_threads {{ value: {threads} }}\n"
    )


def run(
    systems: list[Sigserve], apis: list[str], concurrencies: list[int], duration: float, rounds: int
) -> dict[tuple[str, str, int], list[Point]]:
    """Every (system, API, concurrency), interleaved over `rounds`: {key: one Point per round}."""
    points: dict[tuple[str, str, int], list[Point]] = {}
    for r in range(rounds):
        for api in apis:
            for c in concurrencies:
                for system in systems:
                    point = system.load(api, c, duration)
                    points.setdefault((system.label, api, c), []).append(point)
                    print(
                        f"round {r + 1}: {system.label:<28} {api:<5} c={c:<3} {point.rps:>8.0f} req/s "
                        f"p50 {point.p50_ms:6.2f} ms  {point.cpu_us:6.0f} µs CPU/req  errors {point.errors}",
                        flush=True,
                    )
    return points


Points = dict[tuple[str, str, int], list["Point"]]


def table(points: Points, labels: list[str], apis: list[str]) -> Iterator[str]:
    """A markdown table of medians over rounds: one row per (system, API), req/s per concurrency."""
    concurrencies = sorted({c for _, _, c in points})
    head = " | ".join(f"c={c} req/s (µs CPU/req)" for c in concurrencies)
    yield f"| system | API | {head} |"
    yield "|---|---|" + "---|" * len(concurrencies)
    for label in labels:
        for api in apis:
            cells = []
            for c in concurrencies:
                got = points.get((label, api, c), [])
                if not got:
                    cells.append("-")
                    continue
                rps = float(np.median([p.rps for p in got]))
                cpu = float(np.median([p.cpu_us for p in got]))
                errors = sum(p.errors for p in got)
                # wrk counts a non-2xx answer as a request: a rate of errors is no throughput.
                cells.append(f"{rps:,.0f} ({cpu:,.0f})" + (f" **{errors:,} errors**" if errors else ""))
            yield f"| {label} | {api} | " + " | ".join(cells) + " |"


def median_rps(points: dict[tuple[str, str, int], list[Point]], label: str, api: str, c: int) -> float:
    got = points.get((label, api, c), [])
    return float(np.median([p.rps for p in got])) if got else float("nan")
