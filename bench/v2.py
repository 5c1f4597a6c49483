"""Open Inference Protocol (V2) serving: sigserve V2 (gRPC, REST binary, REST JSON) vs KServe 0.21's V2
server vs sigserve's TF Serving API, same model, side by side in one run.

TF Serving's half_plus_two (y = 0.5x + 2, x float32 [-1, 1]) with two request sizes: 1 row and
64×1000 float32 values (x of shape [64000, 1]; the answer is as large). KServe's `Model.predict`
calls the same `sigserve.runtime` Servable (as in bench/rest.py and bench/grpc.py), so the difference
is the serving front end. Every system is checked for the right answer before it is loaded.

Load: h2load for gRPC (one HTTP/2 connection, N streams in flight) and wrk for REST (N keep-alive
connections); both are required here (`apt-get install nghttp2-client wrk`). All servers run at once
and the systems are interleaved: `--rounds` rounds per point, each a 1 s warm-up then `--duration`
seconds of closed-loop load; the median round is shown. KServe comes from .venv-bench (`make bench`).

    .venv/bin/python bench/v2.py [--duration 3] [--rounds 3] [--concurrency 1,8,64] [--big-concurrency 1,8]

Goals (issue 14): sigserve V2 gRPC >= 4x KServe V2 gRPC at concurrency 64 (1 row); V2 REST binary
within 10 % of sigserve's TF Serving REST for 1 row; V2 REST binary >= 3x V2 REST JSON for 64x1000.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
_spec = importlib.util.spec_from_file_location("bench_grpc", HERE / "grpc.py")
assert _spec is not None and _spec.loader is not None
bench_grpc = importlib.util.module_from_spec(_spec)
sys.modules["bench_grpc"] = bench_grpc  # (its dataclass looks its module up)
_spec.loader.exec_module(bench_grpc)  # sets sys.path up for `import loadgen` and sigserve's src

import loadgen  # noqa: E402
import numpy as np  # noqa: E402

MODEL = bench_grpc.MODEL
V2_GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"
BIG = 64 * 1000


def x_of(rows: int) -> np.ndarray:
    return (np.arange(rows, dtype=np.float32) % 97).reshape(rows, 1)


def v2_grpc_request(rows: int, raw: bool = True) -> bytes:
    """A ModelInferRequest for x; raw contents, as tritonclient sends, or typed ones."""
    from sigserve.protos import open_inference_pb2 as pb

    request = pb.ModelInferRequest(model_name="half_plus_two")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[rows, 1])
    if raw:
        request.raw_input_contents.append(x_of(rows).tobytes())
    else:
        tensor.contents.fp32_contents.extend(x_of(rows).reshape(-1).tolist())
    return bytes(request.SerializeToString())


def v2_rest_body(rows: int, binary: bool) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a V2 REST infer request: binary tensor data both ways, or JSON."""
    x = x_of(rows)
    if not binary:
        doc = {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 1], "data": x.reshape(-1).tolist()}]
        }
        return json.dumps(doc).encode(), {}
    doc = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [rows, 1],
                "parameters": {"binary_data_size": 4 * rows},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    header = json.dumps(doc).encode()
    return header + x.tobytes(), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


def tfs_rest_body(rows: int) -> bytes:
    return json.dumps({"inputs": {"x": x_of(rows).tolist()}}).encode()


def tfs_grpc_request(rows: int) -> bytes:
    from sigserve.codec import tensor
    from sigserve.protos import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tensor.from_ndarray(x_of(rows), tensor_content=True))
    return bytes(request.SerializeToString())


def check_v2(rest: str, grpc_target: str, rows: int) -> None:
    """The V2 answers are right before any load is measured."""
    import grpc
    import httpx

    from sigserve.protos import open_inference_pb2 as pb

    want = (0.5 * x_of(rows) + 2).reshape(-1)
    for binary in (True, False):
        body, headers = v2_rest_body(rows, binary)
        r = httpx.post(f"{rest}/v2/models/half_plus_two/infer", content=body, headers=headers, timeout=60)
        r.raise_for_status()
        if binary:
            length = int(r.headers["inference-header-content-length"])
            got = np.frombuffer(r.content[length:], "<f4")
        else:
            got = np.array(r.json()["outputs"][0]["data"], np.float32)
        if not np.array_equal(got, want):
            raise RuntimeError(f"V2 REST ({'binary' if binary else 'JSON'}) answered wrongly")
    with grpc.insecure_channel(grpc_target) as channel:
        raw = channel.unary_unary(V2_GRPC_PATH)(v2_grpc_request(rows), timeout=60)
    got = np.frombuffer(pb.ModelInferResponse.FromString(raw).raw_output_contents[0], "<f4")
    if not np.array_equal(got, want):
        raise RuntimeError("V2 gRPC answered wrongly")


def sigserve_specs(rows: int) -> tuple[Any, dict[str, dict[str, object]]]:
    proc, specs = bench_grpc.start_sigserve()
    grpc_spec, rest_spec = specs["sigserve gRPC"], specs["sigserve REST"]
    rest = f"http://127.0.0.1:{rest_spec['port']}"
    check_v2(rest, str(grpc_spec["target"]), 1)
    check_v2(rest, str(grpc_spec["target"]), BIG)
    return proc, {"grpc": grpc_spec, "rest": rest_spec}


def point_specs(base: dict[str, dict[str, object]], rows: int) -> dict[str, dict[str, object]]:
    """The sigserve load specs for `rows`-row requests."""
    grpc_spec, rest_spec = base["grpc"], base["rest"]
    binary, headers = v2_rest_body(rows, True)
    json_body, _ = v2_rest_body(rows, False)
    return {
        "sigserve V2 gRPC": {**grpc_spec, "path": V2_GRPC_PATH, "request": v2_grpc_request(rows).hex()},
        "sigserve V2 REST binary": {
            **rest_spec,
            "path": "/v2/models/half_plus_two/infer",
            "request": binary.hex(),
            "headers": headers,
        },
        "sigserve V2 REST JSON": {
            **rest_spec,
            "path": "/v2/models/half_plus_two/infer",
            "request": json_body.hex(),
        },
        "sigserve TFS REST": {**rest_spec, "request": tfs_rest_body(rows).hex()},
        "sigserve TFS gRPC": {**grpc_spec, "request": tfs_grpc_request(rows).hex()},
    }


def start_kserve() -> tuple[subprocess.Popen[bytes] | None, dict[str, object] | str]:
    """KServe's ModelServer (V2 REST and gRPC) around the same Servable: (process, ports) or (None, why)."""
    reason = bench_grpc.kserve_unavailable_reason()
    if reason:
        return None, reason
    proc, http_port, grpc_port = bench_grpc.launch_kserve()
    return proc, {"pid": proc.pid, "http_port": http_port, "grpc_port": grpc_port}


def kserve_specs(ports: dict[str, object], rows: int) -> dict[str, dict[str, object]]:
    json_body, _ = v2_rest_body(rows, False)
    return {
        "KServe V2 gRPC": {
            "pid": ports["pid"],
            "kind": "grpc",
            "target": f"127.0.0.1:{ports['grpc_port']}",
            "path": V2_GRPC_PATH,
            "request": v2_grpc_request(rows, raw=False).hex(),
        },
        "KServe V2 REST JSON": {
            "pid": ports["pid"],
            "kind": "http",
            "host": "127.0.0.1",
            "port": ports["http_port"],
            "path": "/v2/models/half_plus_two/infer",
            "request": json_body.hex(),
        },
    }


def ratio(by: dict[tuple[str, int], Any], a: str, b: str, c: int) -> float:
    pa, pb = by.get((a, c)), by.get((b, c))
    if pa is None or pb is None or not pb.rps or pb.rps != pb.rps:
        return float("nan")
    return float(pa.rps / pb.rps)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per point and round (default 3)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; the median is shown (default 3)"
    )
    parser.add_argument("--concurrency", default="1,8,64", help="1-row concurrencies (default 1,8,64)")
    parser.add_argument("--big-concurrency", default="1,8", help="64x1000 concurrencies (default 1,8)")
    args = parser.parse_args()
    if not MODEL.is_dir():
        print(f"bench/v2.py: needs TF Serving's half_plus_two at {MODEL} (../shared)", file=sys.stderr)
        return 1
    if not (bench_grpc.H2LOAD and bench_grpc.WRK):
        print("bench/v2.py: needs h2load and wrk (apt-get install nghttp2-client wrk)", file=sys.stderr)
        return 1
    small = [int(c) for c in args.concurrency.split(",")]
    big = [int(c) for c in args.big_concurrency.split(",")]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sigserve, base = sigserve_specs(1)
        procs.append(sigserve)
        kserve, kports = start_kserve()
        if kserve is not None:
            procs.append(kserve)
        results = {}
        for rows, concurrencies in ((1, small), (BIG, big)):
            specs = point_specs(base, rows)
            if isinstance(kports, dict):
                specs.update(kserve_specs(kports, rows))
            results[rows] = bench_grpc.run_points(specs, concurrencies, args.duration, args.rounds)
    finally:
        for proc in procs:
            loadgen.stop(proc)
    command = (
        f".venv/bin/python bench/v2.py --duration {args.duration:g} --rounds {args.rounds} "
        f"--concurrency {args.concurrency} --big-concurrency {args.big_concurrency}"
    )
    print(f"command: {command}")
    print(
        f"model: half_plus_two; h2load (one HTTP/2 connection) / wrk; loopback; {os.cpu_count()} CPUs; "
        f"median of {args.rounds} interleaved rounds of {args.duration:g} s"
    )
    if isinstance(kports, str):
        print(f"KServe: not run ({kports})")
    for rows, points in results.items():
        print(f"\n{'1 row' if rows == 1 else '64x1000 float32 (x of shape [64000, 1])'}:")
        print(bench_grpc.table(sorted(points, key=lambda p: (p.system, p.concurrency))))
    by1 = {(p.system, p.concurrency): p for p in results[1]}
    by_big = {(p.system, p.concurrency): p for p in results[BIG]}
    top = max(small)
    print()
    print(
        f"1 row, concurrency {top}: sigserve V2 gRPC / KServe V2 gRPC "
        f"{ratio(by1, 'sigserve V2 gRPC', 'KServe V2 gRPC', top):.2f}x (goal >= 4)"
    )
    for c in small:
        print(
            f"1 row, concurrency {c}: V2 REST binary / TFS REST "
            f"{ratio(by1, 'sigserve V2 REST binary', 'sigserve TFS REST', c):.2f}x (goal >= 0.90)"
        )
    for c in big:
        print(
            f"64x1000, concurrency {c}: V2 REST binary / V2 REST JSON "
            f"{ratio(by_big, 'sigserve V2 REST binary', 'sigserve V2 REST JSON', c):.2f}x (goal >= 3)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
