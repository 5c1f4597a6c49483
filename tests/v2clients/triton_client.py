"""tritonclient (HTTP and gRPC) against a running sigserve, driven by tests/test_v2_clients.py.

Runs in .venv-v2 (tritonclient pins protobuf<7 and its own grpcio). Reads a plan (JSON) and the input
arrays (.npz), runs every case through each requested transport, and writes what the client saw: the
output arrays (.npz, keys `<case>/<transport>/<output>`) and everything else (a JSON report). The
calling test compares both with TF Serving's Predict API on the same model and inputs.

    python triton_client.py PLAN.json INPUTS.npz OUT.npz REPORT.json

Transports: `http` (binary tensor data both ways, tritonclient's default), `http-json` (JSON both
ways), `grpc` (raw contents, tritonclient's only way).
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from arrays import datatype_of, load, store


def run_case(clients: dict[str, Any], case: dict[str, Any], arrays: Any, transport: str) -> dict[str, Any]:
    module = grpcclient if transport == "grpc" else httpclient
    binary = transport == "http"
    inputs = []
    for name in case["inputs"]:
        array = load(arrays, f"{case['name']}/{name}")
        tensor = module.InferInput(name, list(array.shape), datatype_of(array))
        if transport == "grpc":
            tensor.set_data_from_numpy(array)
        else:
            tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    outputs = None
    if case.get("outputs"):
        outputs = []
        for name in case["outputs"]:
            count = case.get("classification", {}).get(name, 0)
            if transport == "grpc":
                outputs.append(grpcclient.InferRequestedOutput(name, class_count=count))
            else:
                outputs.append(httpclient.InferRequestedOutput(name, binary_data=binary, class_count=count))
    parameters = {"signature_name": case["signature"]} if case.get("signature") else None
    kwargs: dict[str, Any] = {}
    if case.get("timeout_us"):
        kwargs["timeout"] = case["timeout_us"]
    result = clients[transport].infer(
        case["model"],
        inputs,
        model_version=case.get("version", ""),
        outputs=outputs,
        request_id=case.get("id", ""),
        parameters=parameters,
        **kwargs,
    )
    response = result.get_response()
    if transport != "grpc":
        names = [o["name"] for o in response["outputs"]]
        meta = {k: response.get(k) for k in ("model_name", "model_version", "id")}
    else:
        names = [o.name for o in response.outputs]
        meta = {"model_name": response.model_name, "model_version": response.model_version, "id": response.id}
    return {"outputs": {name: result.as_numpy(name) for name in names}, "meta": meta}


def main(plan_path: str, inputs_path: str, out_path: str, report_path: str) -> None:
    plan = json.loads(open(plan_path).read())
    arrays = np.load(inputs_path, allow_pickle=True)
    http = httpclient.InferenceServerClient(plan["rest"], network_timeout=120.0, connection_timeout=120.0)
    grpc = grpcclient.InferenceServerClient(plan["grpc"])
    clients = {"http": http, "http-json": http, "grpc": grpc}
    outputs: dict[str, np.ndarray] = {}
    report: dict[str, Any] = {"cases": {}, "errors": {}, "health": {}, "metadata": {}}
    for case in plan["cases"]:
        for transport in case["transports"]:
            key = f"{case['name']}/{transport}"
            try:
                got = run_case(clients, case, arrays, transport)
            except InferenceServerException as e:
                report["errors"][key] = {"status": str(e.status()), "message": e.message()}
                continue
            report["cases"][key] = got["meta"]
            for name, array in got["outputs"].items():
                store(outputs, f"{key}/{name}", array)
    for transport, client in (("http", http), ("grpc", grpc)):
        health = report["health"][transport] = {
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "models": {
                f"{model}@{version}": client.is_model_ready(model, version)
                for model, version in plan["ready_checks"]
            },
        }
        server = client.get_server_metadata()
        health["server"] = (
            server
            if transport == "http"
            else {
                "name": server.name,
                "version": server.version,
                "extensions": list(server.extensions),
            }
        )
        for model, version in plan["metadata_checks"]:
            try:
                meta = client.get_model_metadata(model, version)
            except InferenceServerException as e:
                report["metadata"][f"{transport}/{model}@{version}"] = {"error": e.message()}
                continue
            if transport == "grpc":
                meta = {
                    "name": meta.name,
                    "versions": list(meta.versions),
                    "platform": meta.platform,
                    "inputs": [
                        {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.inputs
                    ],
                    "outputs": [
                        {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.outputs
                    ],
                    # Triton's ModelMetadataResponse has no `properties` (KServe's field 6).
                }
            report["metadata"][f"{transport}/{model}@{version}"] = meta
    np.savez(out_path, **outputs)
    with open(report_path, "w") as f:
        json.dump(report, f)
    print("ok", len(report["cases"]), "answers", len(report["errors"]), "errors")


if __name__ == "__main__":
    main(*sys.argv[1:5])
