"""REST serving overhead: sigserve vs KServe's Python ModelServer vs the in-process runtime call.

A 1-row predict on TF Serving's half_plus_two (`{"instances": [1.0]}` → `{"predictions": [2.5]}`),
on loopback, at concurrency 1, 8 and 64. Both servers run the *same* TensorFlow session code
(`sigserve.runtime`): KServe's `Model.predict` (V1 protocol) calls `Servable.predict`, so the
difference is the serving front end alone. The in-process row calls `Servable.predict` from N threads
in this process: the limit.

Load comes from `wrk` (a separate C process, so the client costs little CPU); without wrk, an asyncio
httpx client in a subprocess is used and the output says so. KServe lives in its own venv because it
pins many dependencies: `python -m venv .venv-bench && .venv-bench/bin/pip install kserve`.

Every server is started first; then each round runs every (concurrency, system) point, the systems in
a rotating order, so that load from other processes on a shared machine falls on all of them alike.
Each point is the median of `--rounds` rounds of `--duration` seconds; `server CPU` is the server
process's user+system CPU time per request over the measured seconds (the least noisy column on a
shared machine). `--baseline-src DIR` adds another sigserve, run from the source tree DIR (e.g. an
older commit: `git archive <rev> src | tar -x -C /tmp/base`), for before/after tables; `--variant`
adds a sigserve with other `serve` flags.

    .venv/bin/python bench/rest.py [--duration 5] [--rounds 3] [--concurrency 1,8,64]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import loadgen
from loadgen import free_port, process_cpu_seconds, wait_http

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
BENCH_PYTHON = str(ROOT / ".venv-bench" / "bin" / "python")
MODEL = ROOT.parent / "shared" / "fixtures" / "tfserving" / "saved_model_half_plus_two_cpu"
BODY = b'{"instances": [1.0]}'
EXPECTED = {"predictions": [2.5]}
NAN = float("nan")


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float  # server CPU (user + system) per request


@dataclass
class Point:
    system: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    note: str = ""

    def median(self, attr: str) -> float:
        values = [getattr(s, attr) for s in self.samples]
        return statistics.median(values) if values else NAN

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.samples)


def check_predict(url: str) -> None:
    req = urllib.request.Request(url, data=BODY, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        got = json.loads(r.read())
    if got != EXPECTED:
        raise RuntimeError(f"{url} answered {got}, expected {EXPECTED}")


def load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


# -- load generation -------------------------------------------------------------------------------

HTTPX_LOADGEN = """
import asyncio, json, sys, time
import httpx

async def main(url, concurrency, duration):
    lat, errors = [], 0
    end = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def worker():
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                r = await client.post(url, content=b'{"instances": [1.0]}')
                lat.append(time.perf_counter() - t0)
                errors += r.status_code != 200
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat.sort()
    print(json.dumps([len(lat) / elapsed, lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3,
                      errors, len(lat)]))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


def run_httpx(url: str, concurrency: int, duration: float) -> tuple[float, float, float, int, int]:
    out = subprocess.run(
        [PYTHON, "-c", HTTPX_LOADGEN, url, str(concurrency), str(duration)],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    rps, p50, p99, errors, requests = json.loads(out)
    return rps, p50, p99, int(errors), int(requests)


def run_wrk(url: str, concurrency: int, duration: float) -> tuple[float, float, float, int, int]:
    return loadgen.run_wrk(url, BODY, concurrency, duration)


LOADGEN = run_wrk if shutil.which("wrk") else run_httpx


# -- the systems -----------------------------------------------------------------------------------


class System:
    """One thing to measure: `measure(concurrency, duration)` → Sample."""

    name = ""
    note = ""

    def measure(self, concurrency: int, duration: float) -> Sample:
        raise NotImplementedError

    def warm_up(self, concurrencies: list[int]) -> None:
        for c in concurrencies:
            self.measure(c, 1)

    def close(self) -> None:
        pass


class HttpServer(System):
    """A server process on a free loopback port, measured with the load generator."""

    def __init__(
        self, name: str, cmd: list[str], env: dict[str, str], ready_path: str, port: int = 0
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [a.replace("{port}", str(self.port)) for a in cmd],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=str(ROOT),
        )
        self.ready_url = f"http://127.0.0.1:{self.port}{ready_path}"
        self.url = f"http://127.0.0.1:{self.port}/v1/models/half_plus_two:predict"

    def wait(self) -> None:
        wait_http(self.ready_url, self.proc)
        check_predict(self.url)

    def measure(self, concurrency: int, duration: float) -> Sample:
        before = process_cpu_seconds(self.proc.pid)
        rps, p50, p99, errors, requests = LOADGEN(self.url, concurrency, duration)
        cpu = process_cpu_seconds(self.proc.pid) - before
        return Sample(rps, p50, p99, errors, cpu / max(1, requests) * 1e6)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def sigserve_server(name: str, src: str | None, extra_args: list[str]) -> HttpServer:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        PYTHON,
        "-m",
        "sigserve.cli",
        "serve",
        "--port=0",
        "--rest_api_port={port}",
        "--rest_api_host=127.0.0.1",
        "--model_name=half_plus_two",
        f"--model_base_path={MODEL}",
        *extra_args,
    ]
    return HttpServer(name, cmd, env, "/readyz")


KSERVE_SERVER = """
import json
import sys
sys.path.append({src!r})
sys.path.append({site!r})
import numpy as np
import kserve
from sigserve import runtime

class HalfPlusTwo(kserve.Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.servable = runtime.load(path, ("serve",), name=name, version=123)
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, (bytes, str)):  # KServe passes the raw body without a JSON content type
            payload = json.loads(payload)
        x = np.asarray(payload["instances"], dtype=np.float32)
        y = self.servable.predict({{"x": x}})["y"]
        return {{"predictions": y.tolist()}}

if __name__ == "__main__":
    model = HalfPlusTwo("half_plus_two", {path!r})
    kserve.ModelServer(http_port={port}, enable_grpc=False, enable_latency_logging=False).start([model])
"""


def kserve_unavailable_reason() -> str | None:
    if not os.path.exists(BENCH_PYTHON):
        return "no .venv-bench (python -m venv .venv-bench && .venv-bench/bin/pip install kserve)"
    probe = subprocess.run([BENCH_PYTHON, "-c", "import kserve"], capture_output=True, text=True)
    if probe.returncode != 0:
        return "kserve does not import in .venv-bench: " + probe.stderr.strip().splitlines()[-1]
    return None


class KServeServer(HttpServer):
    def __init__(self) -> None:
        site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
        port = free_port()
        script = KSERVE_SERVER.format(
            src=str(ROOT / "src"), site=str(site), path=str(MODEL / "00000123"), port=port
        )
        with tempfile.NamedTemporaryFile("w", suffix="_kserve_server.py", delete=False) as f:
            f.write(script)
        self.script = f.name
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        cmd = [BENCH_PYTHON, f.name, "--configure_logging=false"]
        super().__init__("kserve", cmd, env, "/v1/models/half_plus_two", port)

    def close(self) -> None:
        super().close()
        with contextlib.suppress(OSError):
            os.unlink(self.script)


class InProcess(System):
    """`Servable.predict` on a 1-row array from N threads of this process: no HTTP, no JSON."""

    name = "in-process runtime"

    def __init__(self) -> None:
        import numpy as np

        from sigserve import runtime

        self.servable = runtime.load(str(MODEL / "00000123"), ("serve",), name="half_plus_two", version=123)
        self.x = {"x": np.asarray([1.0], dtype=np.float32)}
        for _ in range(200):
            self.servable.predict(self.x)

    def measure(self, concurrency: int, duration: float) -> Sample:
        lat: list[list[float]] = [[] for _ in range(concurrency)]
        end = time.perf_counter() + duration
        servable, x = self.servable, self.x

        def worker(mine: list[float]) -> None:
            while (t0 := time.perf_counter()) < end:
                servable.predict(x)
                mine.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=worker, args=(lat[i],)) for i in range(concurrency)]
        cpu0 = time.process_time()
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        flat = sorted(v for lst in lat for v in lst)
        q = statistics.quantiles(flat, n=100)
        return Sample(len(flat) / elapsed, q[49] * 1e3, q[98] * 1e3, 0, cpu / len(flat) * 1e6)

    def close(self) -> None:
        self.servable.close()


class Unavailable(System):
    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.note = reason

    def measure(self, concurrency: int, duration: float) -> Sample:
        return Sample(NAN, NAN, NAN, 0, NAN)

    def warm_up(self, concurrencies: list[int]) -> None:
        pass


@contextlib.contextmanager
def systems(args: argparse.Namespace) -> Iterator[list[System]]:
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    extra = shlex.split(args.server_args)
    started: list[System] = []
    try:
        for name in wanted:
            if name == "in-process":
                started.append(InProcess())
            elif name == "sigserve":
                started.append(sigserve_server("sigserve", None, extra))
            elif name == "kserve":
                reason = kserve_unavailable_reason()
                started.append(Unavailable("kserve", reason) if reason else KServeServer())
            else:
                raise SystemExit(f"bench/rest.py: unknown system {name!r} (in-process, sigserve, kserve)")
        if args.baseline_src:
            src = str(pathlib.Path(args.baseline_src).resolve())
            started.append(sigserve_server(args.baseline_label, src, extra))
        for variant in args.variant:
            label, _, flags = variant.partition("=")
            started.append(sigserve_server(f"sigserve {label}", None, extra + shlex.split(flags)))
        for system in started:
            if isinstance(system, HttpServer):
                system.wait()
        yield started
    finally:
        for system in started:
            system.close()


def run_rounds(
    started: list[System],
    concurrencies: list[int],
    duration: float,
    rounds: int,
    progress: Callable[[str], None],
) -> list[Point]:
    points = {(s.name, c): Point(s.name, c, note=s.note) for s in started for c in concurrencies}
    for system in started:
        system.warm_up(concurrencies)
    for r in range(rounds):
        for c in concurrencies:
            k = (r + c) % len(started)
            for system in started[k:] + started[:k]:
                sample = system.measure(c, duration)
                points[(system.name, c)].samples.append(sample)
                progress(
                    f"round {r + 1}/{rounds} c={c:<3} {system.name:<20} {sample.rps:8.0f} req/s "
                    f"p50 {sample.p50_ms:.3f} ms p99 {sample.p99_ms:.2f} ms cpu {sample.cpu_us:.0f} µs/req"
                )
    return [points[(s.name, c)] for c in concurrencies for s in started]


# -- output ----------------------------------------------------------------------------------------


def _fmt(value: float, digits: int) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def markdown(points: list[Point]) -> str:
    lines = [
        "| system | concurrency | req/s | p50 ms | p99 ms | server CPU µs/req | req/s per round | errors |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for p in points:
        per_round = ", ".join(_fmt(s.rps, 0) for s in p.samples)
        name = p.system + (f" ({p.note})" if p.note else "")
        lines.append(
            f"| {name} | {p.concurrency} | {_fmt(p.median('rps'), 0)} | {_fmt(p.median('p50_ms'), 3)} "
            f"| {_fmt(p.median('p99_ms'), 2)} | {_fmt(p.median('cpu_us'), 0)} | {per_round} | {p.errors} |"
        )
    return "\n".join(lines)


def summary(points: list[Point], concurrencies: list[int]) -> list[str]:
    by = {(p.system, p.concurrency): p for p in points}
    out = []
    top = max(concurrencies)
    s, k = by.get(("sigserve", top)), by.get(("kserve", top))
    if s and k and k.median("rps") > 0:
        ratio = s.median("rps") / k.median("rps")
        out.append(f"- sigserve / KServe throughput at concurrency {top}: **{ratio:.2f}×** (goal ≥ 2×)")
    s1 = by.get(("sigserve", 1))
    if s1 and s1.samples:
        out.append(f"- sigserve p50 at concurrency 1: **{s1.median('p50_ms'):.3f} ms** (goal ≤ 1 ms)")
    for c in concurrencies:
        s = by.get(("sigserve", c))
        b = next((p for p in points if p.concurrency == c and p.system.startswith("sigserve@")), None)
        if s and b and b.median("rps") > 0:
            ratio = s.median("rps") / b.median("rps")
            out.append(
                f"- sigserve vs {b.system} at concurrency {c}: {ratio:.2f}× req/s, "
                f"server CPU {s.median('cpu_us'):.0f} vs {b.median('cpu_us'):.0f} µs/req"
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point per round (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians shown (default 3)")
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated (default 1,8,64)")
    parser.add_argument(
        "--systems", default="in-process,sigserve,kserve", help="default in-process,sigserve,kserve"
    )
    parser.add_argument("--baseline-src", default="", help="also run sigserve from this src/ tree")
    parser.add_argument("--baseline-label", default="sigserve@baseline", help="its name in the table")
    parser.add_argument("--server-args", default="", help="extra `sigserve serve` flags, one string")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=FLAGS",
        help="also run sigserve with these extra flags, e.g. "
        "'ops-in-caller=--tensorflow_inter_op_parallelism=-1' (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-round progress on stderr")
    args = parser.parse_args()
    if not MODEL.is_dir():
        print(f"bench/rest.py: needs TF Serving's half_plus_two at {MODEL} (../shared)", file=sys.stderr)
        return 1
    conc = [int(c) for c in args.concurrency.split(",")]
    loadgen = "wrk" if LOADGEN is run_wrk else "httpx (asyncio, separate process; install wrk for less noise)"

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    load_before = load_average()
    with systems(args) as started:
        points = run_rounds(started, conc, args.duration, args.rounds, progress)
    command = " ".join([".venv/bin/python", "bench/rest.py", *map(shlex.quote, sys.argv[1:])])
    print(f"Command: `{command}`\n")
    print(
        f"1-row predict `{BODY.decode()}` on half_plus_two over loopback; load generator: {loadgen}; "
        f"{os.cpu_count()} CPUs shared with the load generator (load average "
        f"{load_before} before, {load_average()} after). Each cell is the median of {args.rounds} "
        f"interleaved rounds of {args.duration:g} s.\n"
    )
    print(markdown(points))
    print()
    for line in summary(points, conc):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
