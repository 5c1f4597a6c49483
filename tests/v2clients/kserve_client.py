"""KServe's V2 clients (InferenceRESTClient, InferenceGRPCClient) against a running sigserve, driven by
tests/test_v2_clients.py like triton_client.py (same plan, arrays and outputs files).

    python kserve_client.py PLAN.json INPUTS.npz OUT.npz REPORT.json

Transports: `rest` (binary tensor data), `rest-json` (JSON `data`), `grpc` (raw contents), `grpc-typed`
(typed `contents`). KServe's REST client puts no version in the URL, so versioned cases use gRPC.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from arrays import datatype_of, load, store


def request_of(case: dict[str, Any], arrays: Any, binary: bool) -> InferRequest:
    inputs = []
    for name in case["inputs"]:
        array = load(arrays, f"{case['name']}/{name}")
        tensor = InferInput(name, list(array.shape), datatype_of(array))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    outputs = None
    if case.get("outputs"):
        outputs = []
        for name in case["outputs"]:
            parameters = {"binary_data": binary}
            if case.get("classification", {}).get(name):
                parameters["classification"] = case["classification"][name]
            outputs.append(RequestedOutput(name, parameters=parameters))
    return InferRequest(
        case["model"],
        inputs,
        request_id=case.get("id") or None,
        parameters={"signature_name": case["signature"]} if case.get("signature") else None,
        request_outputs=outputs,
        model_version=case.get("version") or None,
    )


def status_of(error: Exception) -> str:
    """The HTTP status (httpx.HTTPStatusError) or the gRPC code name (grpc.RpcError) of a failed call."""
    response = getattr(error, "response", None)
    if response is not None:
        return str(response.status_code)
    code = getattr(error, "code", None)
    return str(code()) if callable(code) else type(error).__name__


async def run(plan: dict[str, Any], arrays: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120, retries=0))
    grpc = InferenceGRPCClient(plan["grpc"], timeout=120, retries=0)
    base = f"http://{plan['rest']}"
    outputs: dict[str, np.ndarray] = {}
    report: dict[str, Any] = {"cases": {}, "errors": {}, "health": {}}
    for case in plan["cases"]:
        for transport in case["transports"]:
            key = f"{case['name']}/{transport}"
            request = request_of(case, arrays, binary=transport in ("rest", "grpc"))
            try:
                if transport.startswith("rest"):
                    response = await rest.infer(base, request, model_name=case["model"])
                else:
                    response = await grpc.infer(request)
            except Exception as e:  # httpx.HTTPStatusError, grpc.RpcError
                status = getattr(getattr(e, "response", None), "status_code", None) or str(
                    getattr(e, "code", lambda: "")()
                )
                report["errors"][key] = {"status": str(status), "message": str(e)}
                continue
            report["cases"][key] = {"model_name": response.model_name, "id": response.id}
            for output in response.outputs:
                store(outputs, f"{key}/{output.name}", output.as_numpy())
    report["health"]["rest"] = {
        "live": await rest.is_server_live(base),
        "ready": await rest.is_server_ready(base),
        "model_ready": await rest.is_model_ready(base, "half_plus_two"),
    }
    report["health"]["grpc"] = {
        "live": await grpc.is_server_live(),
        "ready": await grpc.is_server_ready(),
        "model_ready": await grpc.is_model_ready("half_plus_two"),
    }
    await rest.close()
    await grpc.close()
    return outputs, report


def main(plan_path: str, inputs_path: str, out_path: str, report_path: str) -> None:
    plan = json.loads(open(plan_path).read())
    arrays = np.load(inputs_path, allow_pickle=True)
    outputs, report = asyncio.run(run(plan, arrays))
    np.savez(out_path, **outputs)
    with open(report_path, "w") as f:
        json.dump(report, f)
    print("ok", len(report["cases"]), "answers", len(report["errors"]), "errors")


if __name__ == "__main__":
    main(*sys.argv[1:5])
