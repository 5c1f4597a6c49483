"""gRPC serving overhead: sigserve gRPC vs sigserve REST vs KServe's V2 gRPC server, same model.

A 1-row predict on TF Serving's half_plus_two (x = [[1.0]] → y = [[2.5]]) on loopback at concurrency
1, 8 and 64, one system at a time. KServe's `Model.predict` calls the same `sigserve.runtime`
Servable, so the difference is the serving front end alone. KServe lives in its own venv because it
pins many dependencies: `python -m venv .venv-bench && .venv-bench/bin/pip install kserve`.

Load comes from C load generators when they are installed (`apt-get install nghttp2-client wrk`):
h2load for gRPC, on one HTTP/2 connection with N streams in flight (like ghz's default) and a 30 s
`grpc-timeout`, and wrk for REST, one keep-alive connection per concurrent caller (bench/loadgen.py).
Without them, a separate Python process on uvloop with equally thin clients is used: grpc.aio on one
channel sending pre-serialized bytes, and a raw asyncio HTTP/1.1 client; on 2 cores that client costs
as much CPU per call as the servers, so its numbers say more about the client (the output says which
one ran).
All servers run at once and the systems are interleaved: `--rounds` rounds per concurrency, each
system a 1 s warm-up then `--duration` seconds of closed-loop load per round; the median round is
shown (this machine is shared, so single runs are noisy).

    .venv/bin/python bench/grpc.py [--duration 3] [--rounds 3] [--concurrency 1,8,64] [--grpcio]

`--grpcio` adds a row for sigserve with `--grpc_transport=grpcio` (grpcio's server instead of
sigserve's own HTTP/2 transport), to show what the transport alone is worth. `--baseline-src DIR`
adds a row for sigserve's gRPC run from the source tree DIR (e.g. `../main/src`), side by side with
this one, for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import loadgen
from loadgen import free_port, process_cpu_seconds, stop, wait_http

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
# This file is named grpc.py: keep `import grpc` (in sigserve.client) from importing it; the
# directory goes last, after site-packages, for `import loadgen`.
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE] + [str(HERE)]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
BENCH_PYTHON = str(ROOT / ".venv-bench" / "bin" / "python")
MODEL = ROOT.parent / "shared" / "fixtures" / "tfserving" / "saved_model_half_plus_two_cpu"
sys.path.insert(0, str(ROOT / "src"))

PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"
KSERVE_PATH = "/inference.GRPCInferenceService/ModelInfer"
REST_BODY = b'{"inputs": {"x": [[1.0]]}}'


@dataclass
class Point:
    system: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float = float("nan")
    note: str = ""


# -- load generation (runs in its own process) -----------------------------------------------------

LOADGEN = r"""
import asyncio, json, sys, time

def summary(lat, elapsed, errors):
    lat.sort()
    n = len(lat)
    return [n / elapsed, lat[n // 2] * 1e3, lat[min(n - 1, int(n * 0.99))] * 1e3, errors, n]

async def closed_loop(one, concurrency, duration):
    lat, errors = [], 0
    end = time.perf_counter() + duration

    async def worker(i):
        nonlocal errors
        state = await one.start(i)
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            if not await one.call(state):
                errors += 1
            lat.append(time.perf_counter() - t0)
        await one.stop(state)

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return summary(lat, time.perf_counter() - start, errors)

class Grpc:
    def __init__(self, target, path, request):
        import grpc
        self.grpc = grpc
        self.channel = grpc.aio.insecure_channel(target)
        self.method = self.channel.unary_unary(path)
        self.request = request
    async def start(self, i):
        return None
    async def call(self, state):
        try:
            await self.method(self.request, timeout=30)
            return True
        except self.grpc.aio.AioRpcError:
            return False
    async def stop(self, state):
        pass

class Http:
    def __init__(self, host, port, path, body):
        self.host, self.port = host, port
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
    async def start(self, i):
        return await asyncio.open_connection(self.host, self.port)
    async def call(self, state):
        reader, writer = state
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        return head.startswith(b"HTTP/1.1 200")
    async def stop(self, state):
        state[1].close()

async def main(spec, concurrency, duration):
    if spec["kind"] == "grpc":
        one = Grpc(spec["target"], spec["path"], bytes.fromhex(spec["request"]))
    else:
        one = Http(spec["host"], spec["port"], spec["path"], bytes.fromhex(spec["request"]))
    warm = await closed_loop(one, concurrency, min(1.0, duration))
    result = await closed_loop(one, concurrency, duration)
    result[4] += warm[4]  # every request sent, for the server's CPU time per request
    print(json.dumps(result))

try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
asyncio.run(main(json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
"""


H2LOAD = shutil.which("h2load")
WRK = shutil.which("wrk")


def load(
    spec: dict[str, object], concurrency: int, duration: float
) -> tuple[float, float, float, int, float]:
    """(req/s, p50 ms, p99 ms, errors, server CPU µs per request) of one closed-loop run: h2load for
    gRPC and wrk for REST when installed, else the Python load generator above."""
    pid = int(str(spec["pid"]))
    cpu0 = process_cpu_seconds(pid)
    request = bytes.fromhex(str(spec["request"]))
    if spec["kind"] == "grpc" and H2LOAD:
        url = f"http://{spec['target']}{spec['path']}"
        rps, p50, p99, errors, sent = loadgen.run_h2load(url, request, concurrency, duration)
    elif spec["kind"] == "http" and WRK:
        url = f"http://{spec['host']}:{spec['port']}{spec['path']}"
        headers = spec.get("headers")
        assert headers is None or isinstance(headers, dict)
        rps, p50, p99, errors, sent = loadgen.run_wrk(url, request, concurrency, duration, headers)
    else:
        out = subprocess.run(
            [PYTHON, "-c", LOADGEN, json.dumps(spec), str(concurrency), str(duration)],
            capture_output=True,
            text=True,
            timeout=duration + 120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{out.stderr[-2000:]}")
        rps, p50, p99, errors, sent = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = process_cpu_seconds(pid) - cpu0
    return rps, p50, p99, int(errors), cpu / max(1, sent) * 1e6


# -- sigserve --------------------------------------------------------------------------------------


def sigserve_predict_request() -> bytes:
    import numpy as np

    from sigserve.codec import tensor
    from sigserve.protos import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tensor.from_ndarray(np.asarray([[1.0]], np.float32)))
    return bytes(request.SerializeToString())


def check_sigserve(grpc_port: int, rest_port: int) -> None:
    import numpy as np

    from sigserve.client import Client, RestClient

    x = {"x": np.asarray([[1.0]], np.float32)}
    with Client(f"127.0.0.1:{grpc_port}", timeout=30) as g, RestClient(f"http://127.0.0.1:{rest_port}") as r:
        for client in (g, r):
            y = client.predict("half_plus_two", x)["y"]
            if y.tolist() != [[2.5]]:
                raise RuntimeError(f"sigserve answered {y!r}, expected [[2.5]]")


def start_sigserve(
    transport: str = "native", src: str = "", label: str = ""
) -> tuple[subprocess.Popen[bytes], dict[str, dict[str, object]]]:
    """`sigserve serve` with gRPC and REST on one model; returns the process and one load spec per API.
    With `transport="grpcio"` (`--grpc_transport=grpcio`), only its gRPC spec; with `src` (a source
    tree, run instead of the installed package), only its gRPC spec, named `label`."""
    grpc_port, rest_port = free_port(), free_port()
    cmd = [
        PYTHON, "-m", "sigserve.cli", "serve",
        f"--port={grpc_port}", "--grpc_host=127.0.0.1", f"--grpc_transport={transport}",
        f"--rest_api_port={rest_port}", "--rest_api_host=127.0.0.1",
        "--model_name=half_plus_two", f"--model_base_path={MODEL}",
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if src:
        env["PYTHONPATH"] = src
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{rest_port}/readyz", proc)
        check_sigserve(grpc_port, rest_port)
    except BaseException:
        stop(proc)
        raise
    specs: dict[str, dict[str, object]] = {
        "sigserve gRPC": {
            "pid": proc.pid,
            "kind": "grpc",
            "target": f"127.0.0.1:{grpc_port}",
            "path": PREDICT_PATH,
            "request": sigserve_predict_request().hex(),
        },
        "sigserve REST": {
            "pid": proc.pid,
            "kind": "http",
            "host": "127.0.0.1",
            "port": rest_port,
            "path": "/v1/models/half_plus_two:predict",
            "request": REST_BODY.hex(),
        },
    }
    if src:
        return proc, {label: specs["sigserve gRPC"]}
    if transport != "native":
        return proc, {f"sigserve gRPC ({transport})": specs["sigserve gRPC"]}
    return proc, specs


# -- KServe ----------------------------------------------------------------------------------------

KSERVE_SERVER = """
import sys
sys.path.append({src!r})
sys.path.append({site!r})
import numpy as np
import kserve
from kserve import InferOutput, InferResponse
from sigserve import runtime

class HalfPlusTwo(kserve.Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.servable = runtime.load(path, ("serve",), name=name, version=123)
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        y = self.servable.predict({{"x": x}})["y"]
        out = InferOutput(name="y", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=False)
        return InferResponse(
            response_id=payload.id, model_name=self.name, infer_outputs=[out], from_grpc=payload.from_grpc
        )

if __name__ == "__main__":
    model = HalfPlusTwo("half_plus_two", {path!r})
    kserve.ModelServer(
        http_port={http_port}, grpc_port={grpc_port}, enable_grpc=True, enable_latency_logging=False
    ).start([model])
"""

KSERVE_CLIENT = f"""
import sys
import grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
request = pb.ModelInferRequest(
    model_name="half_plus_two",
    inputs=[pb.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1, 1], contents=pb.InferTensorContents(fp32_contents=[1.0]))],
)
data = request.SerializeToString()
if sys.argv[1] == "request":
    print(data.hex())
else:
    with grpc.insecure_channel(sys.argv[2]) as channel:
        raw = channel.unary_unary({KSERVE_PATH!r})(data, timeout=30)
    response = pb.ModelInferResponse.FromString(raw)
    out = response.outputs[0]
    import numpy as np
    values = list(out.contents.fp32_contents)
    if not values:
        values = np.frombuffer(response.raw_output_contents[0], np.float32).tolist()
    assert values == [2.5], response
    print("ok")
"""


def kserve_unavailable_reason() -> str | None:
    if not os.path.exists(BENCH_PYTHON):
        return "no .venv-bench (python -m venv .venv-bench && .venv-bench/bin/pip install kserve)"
    probe = subprocess.run([BENCH_PYTHON, "-c", "import kserve"], capture_output=True, text=True)
    if probe.returncode != 0:
        return "kserve does not import in .venv-bench: " + probe.stderr.strip().splitlines()[-1]
    return None


def launch_kserve() -> tuple[subprocess.Popen[bytes], int, int]:
    """KServe's ModelServer around the same Servable, ready: (process, HTTP port, gRPC port)."""
    http_port, grpc_port = free_port(), free_port()
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    script = KSERVE_SERVER.format(
        src=str(ROOT / "src"),
        site=str(site),
        path=str(MODEL / "00000123"),
        http_port=http_port,
        grpc_port=grpc_port,
    )
    with tempfile.NamedTemporaryFile("w", suffix="_kserve_grpc_server.py", delete=False) as f:
        f.write(script)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [BENCH_PYTHON, f.name, "--configure_logging=false"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{http_port}/v2/models/half_plus_two/ready", proc)
    except BaseException:
        stop(proc)
        raise
    finally:
        os.unlink(f.name)
    return proc, http_port, grpc_port


def start_kserve() -> tuple[subprocess.Popen[bytes] | None, dict[str, object] | str]:
    """KServe's ModelServer with its V2 gRPC endpoint; returns the process and the load spec, or
    (None, why not)."""
    reason = kserve_unavailable_reason()
    if reason:
        return None, reason
    proc, _, grpc_port = launch_kserve()
    try:
        target = f"127.0.0.1:{grpc_port}"
        check = subprocess.run(
            [BENCH_PYTHON, "-c", KSERVE_CLIENT, "check", target], capture_output=True, text=True, timeout=60
        )
        if check.returncode != 0:
            raise RuntimeError(f"KServe gRPC check failed:\n{check.stderr[-2000:]}")
        request = subprocess.run(
            [BENCH_PYTHON, "-c", KSERVE_CLIENT, "request"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except BaseException:
        stop(proc)
        raise
    return proc, {"pid": proc.pid, "kind": "grpc", "target": target, "path": KSERVE_PATH, "request": request}


def run_points(
    specs: dict[str, dict[str, object]], concurrencies: list[int], duration: float, rounds: int
) -> list[Point]:
    """Each (system, concurrency) point `rounds` times, the systems interleaved within a round so
    that load from elsewhere on the machine hits them alike; the median round is reported."""
    points = []
    for c in concurrencies:
        runs: dict[str, list[tuple[float, float, float, int, float]]] = {name: [] for name in specs}
        for _ in range(rounds):
            for name, spec in specs.items():
                runs[name].append(load(spec, c, duration))
        for name, results in runs.items():
            ordered = sorted(results)
            rps, p50, p99, _, cpu_us = ordered[len(ordered) // 2]
            points.append(Point(name, c, rps, p50, p99, sum(r[3] for r in results), cpu_us))
    return points


# -- report ----------------------------------------------------------------------------------------


def table(points: list[Point]) -> str:
    lines = [
        f"{'system':<24} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
        f" {'srv CPU us/req':>14}",
        "-" * 79,
    ]
    for p in points:
        lines.append(
            f"{p.system:<24} {p.concurrency:>4} {p.rps:>9.0f} {p.p50_ms:>8.3f} {p.p99_ms:>8.3f} {p.errors:>6}"
            f" {p.cpu_us:>14.0f}" + (f"  {p.note}" if p.note else "")
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per point and round (default 3)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; the median is shown (default 3)"
    )
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated (default 1,8,64)")
    parser.add_argument(
        "--grpcio",
        action="store_true",
        help="also run sigserve with --grpc_transport=grpcio (grpcio's server) as a row",
    )
    parser.add_argument(
        "--baseline-src",
        default="",
        help="also run sigserve's gRPC from this src/ tree (e.g. a checkout of main) as a row",
    )
    parser.add_argument("--baseline-label", default="sigserve@baseline gRPC", help="its name in the table")
    args = parser.parse_args()
    if not MODEL.is_dir():
        print(f"bench/grpc.py: needs TF Serving's half_plus_two at {MODEL} (../shared)", file=sys.stderr)
        return 1
    conc = [int(c) for c in args.concurrency.split(",")]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sigserve, specs = start_sigserve()
        procs.append(sigserve)
        if args.grpcio:
            grpcio_server, grpcio_specs = start_sigserve("grpcio")
            procs.append(grpcio_server)
            specs.update(grpcio_specs)
        if args.baseline_src:
            src = str(pathlib.Path(args.baseline_src).resolve())
            baseline, baseline_specs = start_sigserve(src=src, label=args.baseline_label)
            procs.append(baseline)
            specs.update(baseline_specs)
        kserve, kspec = start_kserve()
        if kserve is not None and isinstance(kspec, dict):
            procs.append(kserve)
            specs["KServe V2 gRPC"] = kspec
        points = run_points(specs, conc, args.duration, args.rounds)
    finally:
        for proc in procs:
            stop(proc)
    if isinstance(kspec, str):
        nan = float("nan")
        points += [Point("KServe V2 gRPC", c, nan, nan, nan, 0, note=kspec) for c in conc]
    command = (
        f".venv/bin/python bench/grpc.py --duration {args.duration:g} --rounds {args.rounds} "
        f"--concurrency {args.concurrency}"
        + (" --grpcio" if args.grpcio else "")
        + (f" --baseline-src {args.baseline_src}" if args.baseline_src else "")
    )
    print(f"command: {command}")
    print(
        "model: half_plus_two, 1-row predict x=[[1.0]]; load generator: "
        + (
            "h2load (one HTTP/2 connection) / wrk; "
            if H2LOAD and WRK
            else "separate Python process (uvloop; grpc.aio on one channel / raw HTTP/1.1 keep-alive); "
        )
        + f"loopback; {os.cpu_count()} CPUs; "
        f"median of {args.rounds} interleaved rounds of {args.duration:g} s"
    )
    print(table(sorted(points, key=lambda p: (p.system, p.concurrency))))
    print("srv CPU us/req: the server process's CPU time (all threads) per request, warm-up included")
    by = {(p.system, p.concurrency): p for p in points}
    for c in conc:
        g, r, k = by.get(("sigserve gRPC", c)), by.get(("sigserve REST", c)), by.get(("KServe V2 gRPC", c))
        parts = []
        if g and r and r.rps > 0:
            parts.append(f"gRPC/REST {g.rps / r.rps:.2f}x (goal >= 1)")
        if g and k and k.rps == k.rps and k.rps > 0:
            goal = " (goal >= 2)" if c == max(conc) else ""
            parts.append(f"sigserve gRPC/KServe gRPC {g.rps / k.rps:.2f}x{goal}")
        if parts:
            print(f"concurrency {c}: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
