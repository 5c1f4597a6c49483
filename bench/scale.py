"""Scaling out on one machine: what Ray costs sigserve.

Part 1, `--part batch`: Ray Data batch scoring (`sigserve score`'s code, `ray_data.score`) of the
3×2048 MLP of bench/batching.py (256 → 2048 → 2048 → 2048 → 16, float32, ~9.5 M multiply-adds per
row), parquet in, parquet out, against the limit on one machine: one process calling
`sigserve.load(...).predict` on the same batches, already in memory (no reading, no writing).

* limit: the loop above, TensorFlow's default threads (all CPUs);
* ray e2e: rows / wall time of `ray_data.score` (plan, read, start the actors, load the model in
  each, score, write);
* ray steady: rows / the time the actors spent from the start of their first batch to the end of
  their last (each actor stamps its batches): Ray's per-row cost while it runs (feeding batches
  through the object store, Arrow ⇄ tensor conversion, the time between batches) without the
  one-off start (actor processes, TensorFlow import, model load). A long job pays this; a short
  one pays e2e.

Actor settings tried, on `ray.init(num_cpus=CPUs)`: one actor using every CPU for TensorFlow's
threads, and one actor per CPU with one thread each (Ray Data's read and write tasks each need a
whole CPU of Ray's accounting, so the actors reserve CPUs − 1 in all). Rounds interleave the
limit and the Ray runs, so other load on the machine hits them alike; ratios are medians of
per-round ratios. Goal (issue 15): ray steady >= 80 % of the limit.

Part 2, `--part serve`: Ray Serve (`sigserve.integrations.ray_serve`) with 1 replica and with one
replica per CPU, against plain `sigserve serve` on the same machine, for REST predict through
Ray Serve's HTTP proxy, loaded by `wrk` (bench/loadgen.py) at each `--concurrency`. Two models:
TF Serving's half_plus_two (1 row: the server's cost per request is everything) and the MLP
(1 row: TensorFlow's cost dominates). Every setting has the same TensorFlow threads in all (1
replica: CPUs threads; N replicas: 1 each). CPU seconds per request are split between Ray Serve's
proxy and the replicas (from /proc), to show where the cores go.

    .venv/bin/python bench/scale.py --part batch [--rows 60000] [--rounds 2] [--batch-size 1024]
    .venv/bin/python bench/scale.py --part serve [--duration 5] [--rounds 2] [--concurrency 1,8]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
HERE = ROOT / "bench"
# bench/grpc.py would shadow the grpc package (Ray Serve imports it): this directory goes last.
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE] + [str(HERE)]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from batching import IN, export_mlp  # noqa: E402  (bench/batching.py: the same model)
from loadgen import free_port, process_cpu_seconds, run_wrk, stop, wait_http  # noqa: E402

# Ray puts the driver's script directory on its workers' path only if it is on the driver's: off it
# now that this script's neighbours are imported, so no Ray worker imports bench/grpc.py as grpc.
sys.path.remove(str(HERE))

HALF_PLUS_TWO = ROOT.parent / "shared" / "fixtures" / "tfserving" / "saved_model_half_plus_two_cpu"


def write_parquet(path: pathlib.Path, x: np.ndarray, ids: np.ndarray, files: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sigserve.integrations.columns import to_column

    path.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(len(x)), files)):
        table = pa.table({"id": ids[part], "x": to_column(x[part], len(part), "x")})
        pq.write_table(table, path / f"part-{i:03d}.parquet")


def limit_rows_per_s(export_dir: str, batches: list[np.ndarray]) -> float:
    import sigserve

    servable = sigserve.load(export_dir)
    try:
        servable.predict({"x": batches[0]})  # warm-up: the first run builds TensorFlow's executors
        t0 = time.monotonic()
        rows = 0
        for batch in batches:
            servable.predict({"x": batch})
            rows += len(batch)
        return rows / (time.monotonic() - t0)
    finally:
        servable.close()


def timed_scorer(directory: str) -> type:
    """A SignatureScorer that appends (start, end, rows) of every batch to a file per actor in
    `directory` (a class made here is pickled by value, so the actors need no bench module)."""
    from sigserve.integrations.scoring import SignatureScorer

    class Timed(SignatureScorer):
        def __call__(self, batch: Any) -> Any:
            start = time.time()
            out = super().__call__(batch)
            with open(os.path.join(directory, f"{os.getpid()}.txt"), "a") as f:
                f.write(f"{start} {time.time()} {batch.num_rows}\n")
            return out

    return Timed


def ray_run(
    export_dir: str, data: pathlib.Path, out: pathlib.Path, cfg: dict[str, Any], bs: int, stamps: pathlib.Path
) -> tuple[float, float]:
    """(wall seconds of the whole job, rows/s over the actors' span from first batch to last)."""
    import shutil

    from sigserve.integrations import ray_data

    shutil.rmtree(stamps, ignore_errors=True)
    stamps.mkdir()
    report = ray_data.score(
        export_dir=export_dir,
        signature_name="serving_default",
        input=str(data),
        output=str(out),
        batch_size=bs,
        overwrite=True,
        scorer=timed_scorer(str(stamps)),
        **cfg,
    )
    stamped = [
        tuple(float(v) for v in line.split()) for f in stamps.iterdir() for line in f.read_text().splitlines()
    ]
    span = max(s[1] for s in stamped) - min(s[0] for s in stamped)
    return report.seconds, sum(s[2] for s in stamped) / span


def check_results(out: pathlib.Path, x: np.ndarray, export_dir: str) -> None:
    """Ray's rows equal a direct predict (to float32 rounding: batch composition may differ)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import sigserve
    from sigserve.integrations.columns import to_tensor

    table = pa.concat_tables([pq.read_table(f) for f in sorted(out.glob("*.parquet"))])
    assert table.num_rows == len(x), (table.num_rows, len(x))
    ids = table.column("id").to_numpy()[:2000]
    got = to_tensor(table.column("y").slice(0, 2000), "y")
    with sigserve.load(export_dir) as servable:
        want = servable.predict({"x": x[ids]})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def batch_part(args: argparse.Namespace) -> None:
    import ray

    cpus = os.cpu_count() or 1
    # Reads and writes need a whole CPU of Ray's accounting, so the actors reserve CPUs - 1 in all;
    # TensorFlow's threads are what actually use the cores.
    share = max(0.1, (cpus - 1) / cpus)
    configs = {
        f"1 actor x {cpus} threads": {
            "actors": 1,
            "cpus_per_actor": float(max(1, cpus - 1)),
            "threads_per_actor": cpus,
        },
        f"{cpus} actors x 1 thread": {"actors": cpus, "cpus_per_actor": share, "threads_per_actor": 1},
    }
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, IN)).astype(np.float32)
    ids = np.arange(args.rows, dtype=np.int64)
    batches = [x[i : i + args.batch_size] for i in range(0, args.rows, args.batch_size)]

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        export_dir = str(export_mlp(tmp))
        write_parquet(tmp / "data", x, ids, args.files)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        limit: list[float] = []
        e2e: dict[str, list[float]] = {name: [] for name in configs}
        steady: dict[str, list[float]] = {name: [] for name in configs}
        wall: dict[str, list[float]] = {name: [] for name in configs}
        try:
            for r in range(args.rounds):
                limit.append(limit_rows_per_s(export_dir, batches))
                for name, cfg in configs.items():
                    seconds, rate = ray_run(
                        export_dir, tmp / "data", tmp / "out", cfg, args.batch_size, tmp / "stamps"
                    )
                    if r == 0:
                        check_results(tmp / "out", x, export_dir)
                    wall[name].append(seconds)
                    e2e[name].append(args.rows / seconds)
                    steady[name].append(rate)
                line = "  ".join(f"{n}: e2e {e2e[n][-1]:.0f} steady {steady[n][-1]:.0f}" for n in configs)
                print(f"round {r + 1}/{args.rounds} rows/s: limit {limit[-1]:.0f}  {line}", flush=True)
        finally:
            ray.shutdown()

    print()
    print(
        f"Ray Data batch scoring, MLP {IN}-2048-2048-2048-16 float32, {args.rows} rows in {args.files} "
        f"parquet files, batches of {args.batch_size}, {cpus} CPUs, {args.rounds} interleaved rounds"
    )
    print(f"{'mode':<26} {'rows/s':>8} {'of limit':>9} {'wall s':>7}")
    print(f"{'limit (1 process, no I/O)':<26} {statistics.median(limit):>8.0f} {'100%':>9}")
    best_name, best = "", 0.0
    for name in configs:
        for kind, values in (("e2e", e2e[name]), ("steady", steady[name])):
            ratio = statistics.median(v / lim for v, lim in zip(values, limit, strict=True))
            extra = f"{statistics.median(wall[name]):>7.1f}" if kind == "e2e" else ""
            print(
                f"{'ray ' + kind + ', ' + name:<26} {statistics.median(values):>8.0f} {ratio:>9.0%} {extra}"
            )
            if kind == "steady" and ratio > best:
                best_name, best = name, ratio
    print()
    verdict = "met" if best >= 0.8 else "NOT met"
    print(f"best ray steady / limit = {best:.0%} ({best_name}; goal >= 80%: {verdict})")
    print("per-round limit rows/s: " + " ".join(f"{v:.0f}" for v in limit))


def ray_serve_pids() -> dict[str, list[int]]:
    """Ray Serve's processes by role, from their titles (Ray sets `ray::<Actor>` as the title)."""
    roles: dict[str, list[int]] = {"proxy": [], "replicas": []}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::ProxyActor"):
            roles["proxy"].append(int(entry))
        elif title.startswith("ray::ServeReplica"):
            roles["replicas"].append(int(entry))
    return roles


def cpu_by_role(pids: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(process_cpu_seconds(p) for p in ps) for role, ps in pids.items()}


def measure(
    url: str, body: bytes, concurrency: int, duration: float, pids: dict[str, list[int]]
) -> dict[str, float]:
    before = cpu_by_role(pids)
    rps, p50, p99, errors, requests = run_wrk(url, body, concurrency, duration)
    after = cpu_by_role(pids)
    out = {"rps": rps, "p50": p50, "p99": p99, "errors": errors}
    for role in pids:
        out[role] = (after[role] - before[role]) / max(1, requests) * 1e6  # CPU µs per request
    return out


def serve_part(args: argparse.Namespace) -> None:
    import subprocess

    import ray
    from ray import serve

    from sigserve.integrations import ray_serve
    from sigserve.server.options import ServerOptions

    cpus = os.cpu_count() or 1
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    rng = np.random.default_rng(0)
    mlp_row = "[" + ",".join(f"{v:.3f}" for v in rng.standard_normal(IN)) + "]"
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        workloads = {"half_plus_two": (HALF_PLUS_TWO, b'{"instances": [1.0]}')}
        workloads["mlp"] = (export_mlp(tmp).parent, ('{"instances": [' + mlp_row + "]}").encode())
        if not HALF_PLUS_TWO.is_dir():
            print(f"skipping half_plus_two: {HALF_PLUS_TWO} is absent (../shared)")
            del workloads["half_plus_two"]
        settings = {
            "sigserve serve (no Ray)": 0,
            "Ray Serve, 1 replica": 1,
            f"Ray Serve, {cpus} replicas": cpus,
        }
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        port = free_port()
        quiet = {"enable_access_log": False, "log_level": "WARNING"}  # a log line per request costs
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=quiet)
        try:
            for r in range(args.rounds):
                for model, (base, body) in workloads.items():
                    for setting, replicas in settings.items():
                        if replicas == 0:
                            plain = free_port()
                            proc = subprocess.Popen(
                                [sys.executable, "-m", "sigserve.cli", "serve", "--port=0",
                                 f"--rest_api_port={plain}", "--rest_api_host=127.0.0.1",
                                 "--model_name=m", f"--model_base_path={base}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT),
                            )  # fmt: skip
                            try:
                                wait_http(f"http://127.0.0.1:{plain}/readyz", proc)
                                pids = {"server": [proc.pid]}
                                url = f"http://127.0.0.1:{plain}/v1/models/m:predict"
                                for c in concurrencies:
                                    m = measure(url, body, c, args.duration, pids)
                                    results.setdefault((model, setting, c), []).append(m)
                            finally:
                                stop(proc)
                            continue
                        options = ServerOptions(
                            model_name="m", model_base_path=str(base),
                            tensorflow_session_parallelism=max(1, cpus // replicas),
                        )  # fmt: skip
                        application = ray_serve.build_app(
                            options,
                            num_replicas=replicas,
                            ray_actor_options={"num_cpus": cpus / replicas},
                            logging_config=quiet,
                        )
                        serve.run(application, name="bench", route_prefix="/")
                        try:
                            url = f"http://127.0.0.1:{port}/v1/models/m:predict"
                            pids = ray_serve_pids()
                            for c in concurrencies:
                                m = measure(url, body, c, args.duration, pids)
                                results.setdefault((model, setting, c), []).append(m)
                        finally:
                            serve.delete("bench")
                    print(f"round {r + 1}/{args.rounds}: {model} done", flush=True)
        finally:
            serve.shutdown()
            ray.shutdown()

    print()
    print(
        f"REST predict, 1 row, wrk on loopback, {cpus} CPUs, {args.duration:g} s per point, "
        f"{args.rounds} rounds (medians); CPU µs per request by process"
    )
    print(
        "| model | setting | concurrency | req/s | p50 ms | p99 ms | errors | "
        "CPU µs/req: server or proxy+replicas |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for (model, setting, c), ms in results.items():
        med = {k: statistics.median(m[k] for m in ms) for k in ms[0]}
        cpu = f"{med['server']:.0f}" if "server" in med else f"{med['proxy']:.0f} + {med['replicas']:.0f}"
        print(
            f"| {model} | {setting} | {c} | {med['rps']:.0f} | {med['p50']:.2f} | {med['p99']:.2f} | "
            f"{sum(m['errors'] for m in ms):.0f} | {cpu} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("batch", "serve"), default="batch")
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--files", type=int, default=8, help="parquet files the rows are split into")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help="serve: seconds per point")
    parser.add_argument("--concurrency", default="1,8", help="serve: wrk connections, comma-separated")
    args = parser.parse_args()
    if args.part == "batch":
        batch_part(args)
    else:
        serve_part(args)
    print("command: .venv/bin/python bench/scale.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
