"""Server-side batching: 64 concurrent 1-row callers on a compute-heavy model, batched vs unbatched.

The benchmark exports its own model with TensorFlow: an MLP with three 2048-wide dense layers
(256 → 2048 → 2048 → 2048 → 16, ReLU, float32, about 9.5 M multiply-adds and 38 MB of weights per
row), loads it with `sigserve.runtime.load`, and measures in-process (no network, so the numbers are
about batching, not transport):

* unbatched: 64 threads call `servable.predict({"x": one_row})` in a closed loop;
* batched: the same on a second servable wrapped by `BatchScheduler`, with TF Serving's tuning
  advice (batching/README.md): max_batch_size = clients / 2 (so one batch fills while another
  runs), num_batch_threads = CPU count, and a batch timeout long enough for batches to fill;
* limit: `servable.predict` on ready-made batches of max_batch_size rows, no queueing at all, from
  1 thread and from num_batch_threads threads; per round the better of the two is "the limit".

Modes are interleaved over `--rounds` rounds and ratios are medians of per-round ratios, so that
load from other processes hits every mode alike. Goals (issue #8): batched ≥ 4× unbatched rows/s
and ≥ 70 % of the limit. Prints a table (rows/s, calls/s, p50/p99 latency), the ratios, the command.

    .venv/bin/python bench/batching.py [--rounds 3] [--duration 4] [--clients 64]
        [--max-batch-size 32] [--batch-threads N] [--batch-timeout-us 20000]

`--e2e` measures over the wire instead (`bench/batching_wire.py`): `sigserve serve` with and without
`--enable_batching`, one-row predicts from `wrk` (REST) and `h2load` (gRPC) at each `--concurrency`,
on `--model half_plus_two` (default there: max_batch_size 64, batch_timeout_micros 0) or `mlp`:

    .venv/bin/python bench/batching.py --e2e [--model half_plus_two|mlp] [--concurrency 1,8,64]
        [--rounds 1] [--duration 3]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IN, HIDDEN, OUT = 256, 2048, 16


def export_mlp(path: pathlib.Path) -> pathlib.Path:
    """A TF1 SavedModel (what most production exports still are): x [None, 256] → y [None, 16]."""
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir = path / "mlp" / "1"
    graph = tf.Graph()
    rng = np.random.default_rng(0)
    with graph.as_default():
        x = v1.placeholder(tf.float32, shape=[None, IN], name="x")
        h = x
        for i, (n_in, n_out) in enumerate([(IN, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, OUT)]):
            init = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
            w = v1.Variable(init, name=f"w{i}")
            b = v1.Variable(np.zeros(n_out, np.float32), name=f"b{i}")
            h = tf.matmul(h, w) + b
            if n_out == HIDDEN:
                h = tf.nn.relu(h)
        y = tf.identity(h, name="y")
        sig = v1.saved_model.signature_def_utils.predict_signature_def({"x": x}, {"y": y})
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": sig})
            builder.save()
    return export_dir


def closed_loop(
    call: Callable[[int], None], threads: int, duration: float, warmup: float
) -> tuple[int, list[float], float]:
    """`threads` callers, each calling `call(thread_index)` back to back. Returns the calls started
    after the warm-up, their latencies (seconds) and the CPU seconds this process used meanwhile."""
    stop_at = time.monotonic() + warmup + duration
    measure_from = time.monotonic() + warmup
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        mine = latencies[i]
        try:
            while True:
                t0 = time.monotonic()
                if t0 >= stop_at:
                    return
                call(i)
                t1 = time.monotonic()
                if t0 >= measure_from:
                    mine.append(t1 - t0)
        except BaseException as e:
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    time.sleep(max(0.0, measure_from - time.monotonic()))
    cpu = time.process_time()
    time.sleep(max(0.0, stop_at - time.monotonic()))
    cpu = time.process_time() - cpu
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    flat = [x for per in latencies for x in per]
    return len(flat), flat, cpu


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per phase and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are reported)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent 1-row callers")
    parser.add_argument(
        "--max-batch-size", type=int, default=0, help="0: clients / 2 (TF Serving's README: ~2x clients)"
    )
    parser.add_argument("--batch-timeout-us", type=int, default=-1, help="-1: 20000 (e2e half_plus_two: 0)")
    parser.add_argument("--batch-threads", type=int, default=0, help="num_batch_threads (0: CPU count)")
    parser.add_argument("--e2e", action="store_true", help="over the wire (wrk, h2load)")
    parser.add_argument("--model", choices=["half_plus_two", "mlp"], default="half_plus_two", help="--e2e")
    parser.add_argument("--concurrency", default="1,8,64", help="--e2e: comma-separated")
    args = parser.parse_args()
    if args.e2e:
        return e2e(args)
    if args.batch_timeout_us < 0:
        args.batch_timeout_us = 20000

    from prometheus_client import CollectorRegistry

    from sigserve import runtime
    from sigserve.batching import BatchScheduler, parse_batching_parameters
    from sigserve.batching.metrics import PROCESSED_BATCH_SIZE, WRAPPED_RUN_COUNT
    from sigserve.batching.params import default_num_batch_threads

    threads = args.batch_threads or default_num_batch_threads()
    max_batch = args.max_batch_size or max(1, args.clients // 2)
    text = (
        f"max_batch_size {{ value: {max_batch} }} "
        f"batch_timeout_micros {{ value: {args.batch_timeout_us} }} "
        f"max_enqueued_batches {{ value: {max(10, 4 * args.clients)} }} "
        f"num_batch_threads {{ value: {threads} }}"
    )
    rng = np.random.default_rng(1)
    rows = [rng.standard_normal((1, IN)).astype(np.float32) for _ in range(args.clients)]
    big = rng.standard_normal((max_batch, IN)).astype(np.float32)
    limit_threads = sorted({1, threads})

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        export_dir = export_mlp(pathlib.Path(tmp))
        registry = CollectorRegistry()
        scheduler = BatchScheduler(parse_batching_parameters(text), registry=registry)
        plain = runtime.load(str(export_dir), name="mlp", version=1)
        batched = runtime.load(str(export_dir), name="mlp", version=1, runner_wrapper=scheduler.wrapper())
        print(f"exported and loaded the MLP twice in {time.monotonic() - t0:.1f} s", flush=True)
        # Batched answers equal unbatched ones before anything is timed.
        want = plain.predict({"x": np.concatenate(rows[:3])})["y"]
        got = [batched.predict({"x": r})["y"] for r in rows[:3]]
        np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-5, atol=1e-5)

        phases: dict[str, tuple[Callable[[int], None], int, int]] = {
            "unbatched": (lambda i: plain.predict({"x": rows[i]}), args.clients, 1),
            "batched": (lambda i: batched.predict({"x": rows[i]}), args.clients, 1),
        }
        for n in limit_threads:
            phases[f"limit x{n}"] = (lambda i: plain.predict({"x": big}), n, max_batch)
        rps: dict[str, list[float]] = {m: [] for m in phases}
        lat: dict[str, list[float]] = {m: [] for m in phases}
        per_cpu: dict[str, list[float]] = {m: [] for m in phases}
        runs = processed = 0.0
        for r in range(args.rounds):
            for mode, (call, n, rows_per_call) in phases.items():
                before = (
                    registry.get_sample_value(WRAPPED_RUN_COUNT + "_total") or 0.0,
                    registry.get_sample_value(PROCESSED_BATCH_SIZE + "_sum") or 0.0,
                )
                calls, latencies, cpu = closed_loop(call, n, args.duration, 2.0 if r == 0 else 0.5)
                if mode == "batched":
                    runs += (registry.get_sample_value(WRAPPED_RUN_COUNT + "_total") or 0.0) - before[0]
                    processed += (registry.get_sample_value(PROCESSED_BATCH_SIZE + "_sum") or 0.0) - before[1]
                rps[mode].append(calls * rows_per_call / args.duration)
                per_cpu[mode].append(calls * rows_per_call / cpu if cpu else 0.0)
                lat[mode].extend(latencies)
            line = "  ".join(f"{m} {v[-1]:.0f}" for m, v in rps.items())
            print(f"round {r + 1}/{args.rounds} rows/s: {line}", flush=True)
        scheduler.stop()
        plain.close()
        batched.close()

    limits = [max(rps[f"limit x{n}"][r] for n in limit_threads) for r in range(args.rounds)]
    speedups = [b / u for b, u in zip(rps["batched"], rps["unbatched"], strict=True)]
    of_limit = [b / lim for b, lim in zip(rps["batched"], limits, strict=True)]
    mean_batch = processed / runs if runs else 0.0

    print()
    print(
        f"MLP {IN}-{HIDDEN}-{HIDDEN}-{HIDDEN}-{OUT} float32, in-process, {os.cpu_count()} CPUs, "
        f"{args.rounds} interleaved rounds x {args.duration:g} s per mode"
    )
    print(f"batching parameters: {text}")
    print(f"{'mode':<11} {'rows/s':>9} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'rows/CPU-s':>10}  note")
    for mode, (_, n, rows_per_call) in phases.items():
        med = statistics.median(rps[mode])
        arr = np.array(lat[mode]) * 1000.0
        if mode == "batched":
            note = f"{n} callers x 1 row, mean executed batch {mean_batch:.1f} rows"
        elif mode == "unbatched":
            note = f"{n} callers x 1 row"
        else:
            note = f"{n} thread(s) x {rows_per_call}-row predict, no queueing"
        print(
            f"{mode:<11} {med:>9.0f} {med / rows_per_call:>9.0f} {np.percentile(arr, 50):>8.2f} "
            f"{np.percentile(arr, 99):>8.2f} {statistics.median(per_cpu[mode]):>10.0f}  {note}"
        )
    speedup, fraction = statistics.median(speedups), statistics.median(of_limit)
    print()
    print(
        f"batched / unbatched = {speedup:.2f}x (median of rounds; "
        f"goal >= 4x: {'met' if speedup >= 4 else 'NOT met'})"
    )
    print(
        f"batched / limit     = {fraction:.0%} (limit = best of {', '.join(f'x{n}' for n in limit_threads)} "
        f"per round; goal >= 70%: {'met' if fraction >= 0.7 else 'NOT met'})"
    )
    best_cpu = max(statistics.median(per_cpu[f"limit x{n}"]) for n in limit_threads)
    print(
        f"rows per CPU-second, batched / limit = {statistics.median(per_cpu['batched']) / best_cpu:.0%} "
        "(cost per row, less sensitive to other load on the machine)"
    )
    print("per-round rows/s: " + "; ".join(f"{m} " + " ".join(f"{v:.0f}" for v in rps[m]) for m in rps))
    print("command: .venv/bin/python bench/batching.py " + " ".join(sys.argv[1:]))
    return 0


def e2e(args: argparse.Namespace) -> int:
    """sigserve with batching off and on, over REST and gRPC: req/s, server CPU per request, ratios."""
    import batching_wire as wire

    from sigserve.batching.params import default_num_batch_threads

    concurrencies = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = pathlib.Path(tmp_dir)
        small = args.model == "half_plus_two"
        model = wire.half_plus_two() if small else wire.mlp(tmp)
        max_batch = args.max_batch_size or (64 if small else 32)
        timeout_us = args.batch_timeout_us if args.batch_timeout_us >= 0 else (0 if small else 20000)
        text = wire.batching_text(max_batch, timeout_us, args.batch_threads or default_num_batch_threads())
        systems = [
            wire.Sigserve("sigserve batching off", model, None, tmp),
            wire.Sigserve("sigserve batching on", model, text, tmp),
        ]
        try:
            for system in systems:
                system.start()
            points = wire.run(systems, ["REST", "gRPC"], concurrencies, args.duration, args.rounds)
        finally:
            for system in systems:
                system.stop()
        in_process = None if small else in_process_batched(model, text, max(concurrencies), args)
    labels = [s.label for s in systems]
    print()
    rounds = f"{args.rounds} round(s) x {args.duration:g} s"
    print(f"{model.name}, 1-row predicts, {os.cpu_count()} CPUs, {rounds}")
    print(f"batching parameters: {text.strip()}")
    for line in wire.table(points, labels, ["REST", "gRPC"]):
        print(line)
    for api in ("REST", "gRPC"):
        on = [wire.median_rps(points, labels[1], api, c) for c in concurrencies]
        off = [wire.median_rps(points, labels[0], api, c) for c in concurrencies]
        ratios = [f"c={c}: {a / b:.2f}x" for c, a, b in zip(concurrencies, on, off, strict=True)]
        print(f"{api} batching on / off: " + ", ".join(ratios))
    if in_process is not None:
        c = max(concurrencies)
        print(f"in process, batched, {c} callers, same parameters: {in_process:,.0f} rows/s")
        for api in ("REST", "gRPC"):
            wire_rows = wire.median_rps(points, labels[1], api, c)
            print(f"{api} batching on at c={c} / in process batched = {wire_rows / in_process:.0%}")
    print("command: .venv/bin/python bench/batching.py " + " ".join(sys.argv[1:]))
    return 0


def in_process_batched(model: Any, text: str, clients: int, args: argparse.Namespace) -> float:
    """Rows/s of `clients` threads calling a batched servable in process (the servers are stopped
    by now): what the wire is measured against, in the same run (median of rounds)."""
    from sigserve import runtime
    from sigserve.batching import BatchScheduler, parse_batching_parameters

    version = next(p for p in model.base_path.iterdir() if p.name.isdigit())
    scheduler = BatchScheduler(parse_batching_parameters(text))
    servable = runtime.load(
        str(version), name=model.name, version=int(version.name), runner_wrapper=scheduler.wrapper()
    )
    try:
        row = model.row.reshape(1, -1)
        rates = []
        for r in range(args.rounds):
            calls, _, _ = closed_loop(
                lambda i: servable.predict({"x": row}), clients, args.duration, 2.0 if r == 0 else 0.5
            )
            rates.append(calls / args.duration)
        return float(np.median(rates))
    finally:
        scheduler.stop()
        servable.close()


if __name__ == "__main__":
    sys.exit(main())
