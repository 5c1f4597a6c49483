"""Read and write rate of sigserve's TFRecord module (warmup files, request logs), in MB/s.

    .venv/bin/python bench/tfrecord.py [--mb 50] [--record-kb 16] [--baseline-src DIR]

Writes a `--mb` MB file of `--record-kb` KB records with `tfrecord.encode`, then reads it back with
`tfrecord.read_records` (both CRCs checked), as the server does for a warmup file at every load.
`--baseline-src DIR` runs the same in a subprocess with sigserve imported from the source tree DIR
(e.g. a checkout of the commit before), and prints both rows.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time


def measure(mb: int, record_kb: int) -> tuple[float, float, str]:
    """(write MB/s, read MB/s, CRC implementation) of the sigserve that `import sigserve` finds."""
    from sigserve.manager import tfrecord

    record = os.urandom(record_kb * 1024)
    count = max(1, mb * 1024 // record_kb)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "records")
        started = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(count):
                f.write(tfrecord.encode(record))
        wrote = time.perf_counter() - started
        size = os.path.getsize(path)
        started = time.perf_counter()
        with open(path, "rb") as f:
            n = sum(1 for _ in tfrecord.read_records(f))
        read = time.perf_counter() - started
        assert n == count
    implementation = getattr(tfrecord, "CRC_IMPLEMENTATION", "pure Python")
    return size / wrote / 1e6, size / read / 1e6, implementation


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=50, help="file size in MB (default 50)")
    parser.add_argument("--record-kb", type=int, default=16, help="record size in KB (default 16)")
    parser.add_argument("--baseline-src", default="", help="also measure the sigserve in this src/ tree")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.one:
        write, read, impl = measure(args.mb, args.record_kb)
        print(f"{write:.3f} {read:.3f} {impl}")
        return 0
    print(f"TFRecord, {args.mb} MB of {args.record_kb} KB records (machine may be shared)")
    print(f"  {'sigserve':24s} {'write MB/s':>12s} {'read MB/s':>12s}  CRC-32C")
    rows = [("this tree", "")]
    if args.baseline_src:
        rows.insert(0, ("baseline", str(pathlib.Path(args.baseline_src).resolve())))
    for label, src in rows:
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = src
        out = subprocess.run(
            [sys.executable, __file__, "--one", "--mb", str(args.mb), "--record-kb", str(args.record_kb)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split(maxsplit=2)
        print(f"  {label:24s} {float(out[0]):12.1f} {float(out[1]):12.1f}  {out[2].strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
