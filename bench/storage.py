"""Loading a version from S3 (a loopback S3-API server) against loading the same version from local disk.

A SavedModel with ~200 MB of variables is exported once, put on local disk and, as version 1, in a bucket
of a moto S3 server started as its own process on 127.0.0.1 (`moto[server]`; any S3-compatible server
behaves the same to sigserve). Each round serves it through `ServerCore` twice, once per base path, the
order alternating, and reads the manager's own load timings (the `load_latency_by_stage` metric):
"download" (from the store to `--model_cache_dir`, checked) and "load" (TensorFlow's load and warmup).
Rows are medians over `--rounds`. "x local" is the S3 version load (download + load) over the local one.

    .venv/bin/python bench/storage.py [--rounds 3] [--mb 200]
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
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from loadgen import free_port, wait_http  # noqa: E402


def export_model(path: pathlib.Path, megabytes: int) -> int:
    import numpy as np
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(np.ones([megabytes * 1024 * 1024 // 4], np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
    def serve(x: Any) -> dict[str, Any]:
        return {"y": x * 0.5 + 2.0 + 0.0 * module.w[0]}

    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Timings:
    """The manager's LoadObserver: seconds per stage of the last load."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    def observe_load(
        self, *, name: str, version: int, path: str, stage: str, seconds: float, nbytes: int = 0
    ) -> None:
        self.stages[stage] = seconds


def load_once(base: str, cache: str) -> dict[str, float]:
    from sigserve.manager import ServerCore
    from sigserve.manager import config as manager_config
    from sigserve.runtime import load

    timings = Timings()
    core = ServerCore(
        manager_config.single_model("big", base),
        loader=lambda r: load(r.path, name=r.name, version=r.version),
        file_system_poll_wait_seconds=0.05,
        max_num_load_retries=0,
        model_cache_dir=cache,
        load_observer=timings,
    )
    started = time.perf_counter()
    try:
        core.start()
        timings.stages["ready"] = time.perf_counter() - started
    finally:
        core.stop()
    return timings.stages


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mb", type=int, default=200, help="size of the model's variables")
    args = parser.parse_args()

    import boto3

    work = pathlib.Path(tempfile.mkdtemp(prefix="sigserve-bench-storage-"))
    size = export_model(work / "local" / "1", args.mb)
    port = free_port()
    env = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    os.environ.update(env)
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/data.json", server, timeout=60)
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        client.create_bucket(Bucket="models")
        for path in (work / "local" / "1").rglob("*"):
            if path.is_file():
                client.upload_file(str(path), "models", f"big/1/{path.relative_to(work / 'local' / '1')}")
        sources = {"local disk": str(work / "local"), "s3:// (loopback)": "s3://models/big"}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
        load_once(sources["local disk"], str(work / "cache"))  # TensorFlow's first-load costs, once
        for round_ in range(args.rounds):
            order = list(sources) if round_ % 2 == 0 else list(reversed(sources))
            for name in order:
                runs[name].append(load_once(sources[name], str(work / "cache")))
    finally:
        server.terminate()
        server.wait()

    def med(name: str, stage: str) -> float:
        return statistics.median(r.get(stage, 0.0) for r in runs[name])

    local_total = med("local disk", "load")
    print(f"\nModel: {size / 1e6:.0f} MB, median of {args.rounds} rounds (shared machine)\n")
    print("| source | download s | load s | version load s | download MB/s | x local | start() to ready s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in sources:
        download, load = med(name, "download"), med(name, "load")
        total = download + load
        rate = f"{size / 1e6 / download:.0f}" if download else "-"
        print(
            f"| {name} | {download:.2f} | {load:.2f} | {total:.2f} | {rate} | {total / local_total:.2f} "
            f"| {med(name, 'ready'):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
