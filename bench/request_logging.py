"""What request logging costs: REST and gRPC throughput at concurrency 64 with `sampling_rate` 0,
0.01 and 1.0, side by side in one run. (Issue 17 calls it `bench/logging.py`; that name would shadow
the standard library's `logging` for every other script in bench/.)

    .venv/bin/python bench/request_logging.py [--duration 5] [--rounds 2] [--concurrency 64] [--sink tfrecord]

Three `sigserve serve` processes serve TF Serving's half_plus_two fixture (../shared), identical but
for the model's `logging_config` (TFRecord files in a temporary directory, or `--sink jsonl`). Each
round measures every server with wrk (REST, 1-row predict) and h2load (gRPC Predict), in turn, so that
drift on a shared machine spreads over all three; the table shows each server's median over the rounds,
its server CPU per request, and how many records it wrote (checked against rate x requests answered).
Goal (issue 17): sampling 1.0 costs <= 15 % of the throughput at 0; 0.01 is within noise of 0.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
# bench/ holds grpc.py: keep `import grpc` (in sigserve.client) from importing it; the directory
# goes last, after site-packages, for `import loadgen`.
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE] + [str(HERE)]

import loadgen  # noqa: E402  (after the sys.path line above)

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT.parent / "shared" / "fixtures" / "tfserving" / "saved_model_half_plus_two_cpu"
RATES = (0.0, 0.01, 1.0)
BODY = b'{"instances": [[1.0]]}'


def predict_request() -> bytes:
    import numpy as np

    from sigserve.codec import tensor
    from sigserve.protos import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tensor.from_ndarray(np.asarray([[1.0]], np.float32)))
    return bytes(request.SerializeToString())


class Server:
    def __init__(self, rate: float, directory: pathlib.Path, sink: str) -> None:
        self.rate = rate
        self.prefix = directory / f"rate-{rate}" / "half_plus_two"
        config = directory / f"rate-{rate}.config"
        config.write_text(
            f'model_config_list {{ config {{ name: "half_plus_two" base_path: "{MODEL}" '
            'model_platform: "tensorflow" logging_config { '
            f'log_collector_config {{ type: "{sink}" filename_prefix: "{self.prefix}" }} '
            f"sampling_config {{ sampling_rate: {rate} }} }} }} }}\n"
        )
        self.rest_port = loadgen.free_port()
        self.grpc_port = loadgen.free_port()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sigserve.cli",
                "serve",
                f"--port={self.grpc_port}",
                f"--rest_api_port={self.rest_port}",
                "--rest_api_host=127.0.0.1",
                "--grpc_host=127.0.0.1",
                f"--model_config_file={config}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.answered = 0
        self.rest: list[tuple[float, float]] = []  # (req/s, server CPU µs per request)
        self.grpc: list[tuple[float, float]] = []

    def wait(self) -> None:
        import numpy as np

        from sigserve.client import Client, RestClient

        loadgen.wait_http(f"http://127.0.0.1:{self.rest_port}/readyz", self.proc)
        x = {"x": np.asarray([[1.0]], np.float32)}
        with Client(f"127.0.0.1:{self.grpc_port}", timeout=30) as g:
            with RestClient(f"http://127.0.0.1:{self.rest_port}") as r:
                for client in (g, r):
                    if client.predict("half_plus_two", x)["y"].tolist() != [[2.5]]:
                        raise RuntimeError("sigserve did not answer [[2.5]]")
        self.answered += 2

    def measure(self, concurrency: int, duration: float) -> None:
        url = f"http://127.0.0.1:{self.rest_port}/v1/models/half_plus_two:predict"
        cpu = loadgen.process_cpu_seconds(self.proc.pid)
        rps, _, _, errors, requests = loadgen.run_wrk(url, BODY, concurrency, duration)
        used = loadgen.process_cpu_seconds(self.proc.pid) - cpu
        self.rest.append((rps, used / max(1, requests) * 1e6))
        self.answered += requests - errors
        grpc_url = f"http://127.0.0.1:{self.grpc_port}/tensorflow.serving.PredictionService/Predict"
        cpu = loadgen.process_cpu_seconds(self.proc.pid)
        rps, _, _, errors, requests = loadgen.run_h2load(grpc_url, predict_request(), concurrency, duration)
        used = loadgen.process_cpu_seconds(self.proc.pid) - cpu
        self.grpc.append((rps, used / max(1, requests) * 1e6))
        self.answered += requests - errors

    def records(self) -> int:
        from sigserve.manager import tfrecord

        total = 0
        for path in self.prefix.parent.glob(self.prefix.name + "-*"):
            if path.suffix == ".jsonl":
                total += len(path.read_bytes().splitlines())
            else:
                with open(path, "rb") as f:
                    total += sum(1 for _ in tfrecord.read_records(f))
        return total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="measurements per server and protocol (default 2)"
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sink", choices=("tfrecord", "jsonl"), default="tfrecord")
    args = parser.parse_args()
    if not MODEL.is_dir():
        print(f"needs TF Serving's half_plus_two fixture at {MODEL} (../shared)")
        return 1
    load = os.getloadavg()[0]
    print(
        f"Request logging cost: 1-row predict, concurrency {args.concurrency}, {args.rounds} x "
        f"{args.duration:g} s per server and protocol, {args.sink} sink, load average before {load:.2f} "
        "(results on a shared machine are noisy)"
    )
    with tempfile.TemporaryDirectory(prefix="sigserve-bench-logging-") as tmp:
        servers = [Server(rate, pathlib.Path(tmp), args.sink) for rate in RATES]
        try:
            for server in servers:
                server.wait()
            for _ in range(args.rounds):
                for server in servers:
                    server.measure(args.concurrency, args.duration)
        finally:
            for server in servers:
                loadgen.stop(server.proc)  # SIGTERM: the logger writes what is queued before exit
        time.sleep(0.2)
        base_rest = statistics.median(r for r, _ in servers[0].rest)
        base_grpc = statistics.median(r for r, _ in servers[0].grpc)
        print()
        print(
            "| sampling_rate | REST req/s | vs 0 | REST CPU µs/req | gRPC req/s | vs 0 | gRPC CPU µs/req "
            "| records |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---|")
        for server in servers:
            rest = statistics.median(r for r, _ in server.rest)
            grpc = statistics.median(r for r, _ in server.grpc)
            rest_cpu = statistics.median(c for _, c in server.rest)
            grpc_cpu = statistics.median(c for _, c in server.grpc)
            records = server.records()
            expected = server.rate * server.answered
            print(
                f"| {server.rate:g} | {rest:,.0f} | {rest / base_rest:.2f} | {rest_cpu:.0f} | {grpc:,.0f} | "
                f"{grpc / base_grpc:.2f} | {grpc_cpu:.0f} | {records:,} (expected ~{expected:,.0f}) |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
