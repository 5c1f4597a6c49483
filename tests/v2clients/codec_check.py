"""Checks that run in .venv-v2 (tritonclient, kserve, MLServer's protos) with sigserve's source on
PYTHONPATH, started as subprocesses by tests/test_v2_protos.py. Exit 0 and a last line "ok ..." is
a pass; anything else fails the calling test with this process's output.

    python codec_check.py coexist sigserve|client tritonclient|kserve|mlserver
    python codec_check.py triton-codec
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import sys
from typing import Any

import numpy as np


def import_client(name: str) -> Any:
    """The client's V2 protos, registered in the default descriptor pool."""
    if name == "tritonclient":
        from tritonclient.grpc import service_pb2

        return service_pb2
    if name == "kserve":
        from kserve.protocol.grpc import grpc_predict_v2_pb2

        return grpc_predict_v2_pb2
    # MLServer's own package needs dependencies that conflict with kserve's; its generated module
    # needs only protobuf, so it is loaded from the installed wheel by path, as `import` would.
    spec = importlib.util.find_spec("mlserver")
    assert spec is not None and spec.submodule_search_locations
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "grpc" / "dataplane_pb2.py"
    module_spec = importlib.util.spec_from_file_location("mlserver_dataplane_pb2", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def coexist(first: str, client: str) -> None:
    if first == "client":
        theirs = import_client(client)
    from sigserve.codec.v2 import grpc as v2grpc
    from sigserve.protos import INFERENCE_SERVICE
    from sigserve.protos import open_inference_pb2 as ours

    if first != "client":
        theirs = import_client(client)
    assert ours.ModelInferRequest.DESCRIPTOR.full_name == "sigserve.inference.ModelInferRequest"
    assert theirs.ModelInferRequest.DESCRIPTOR.full_name == "inference.ModelInferRequest"
    assert INFERENCE_SERVICE == "inference.GRPCInferenceService"
    # Same wire format: their request, parsed by sigserve; sigserve's answer, parsed by theirs.
    request = theirs.ModelInferRequest(model_name="m", model_version="2", id="7")
    request.inputs.add(name="x", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1.5, -2.0])
    request.parameters["signature_name"].string_param = "multi"
    parsed = v2grpc.parse_infer(request.SerializeToString())
    assert parsed.signature_name == "multi" and parsed.inputs[0].array.tolist() == [1.5, -2.0]
    meta = ours.ModelMetadataResponse(name="m", platform="tensorflow_savedmodel", versions=["1"])
    meta.inputs.add(name="x", datatype="FP32", shape=[-1, 1])
    back = theirs.ModelMetadataResponse.FromString(meta.SerializeToString())
    assert list(back.inputs[0].shape) == [-1, 1]
    print("ok", first, client)


CASES: dict[str, Any] = {
    "BOOL": lambda r, s: r.random(s) > 0.5,
    "UINT8": lambda r, s: r.integers(0, 255, s, dtype=np.uint8),
    "UINT16": lambda r, s: r.integers(0, 65535, s, dtype=np.uint16),
    "UINT32": lambda r, s: r.integers(0, 2**32 - 1, s, dtype=np.uint32),
    "UINT64": lambda r, s: r.integers(0, 2**64 - 1, s, dtype=np.uint64),
    "INT8": lambda r, s: r.integers(-128, 127, s, dtype=np.int8),
    "INT16": lambda r, s: r.integers(-(2**15), 2**15 - 1, s, dtype=np.int16),
    "INT32": lambda r, s: r.integers(-(2**31), 2**31 - 1, s, dtype=np.int32),
    "INT64": lambda r, s: r.integers(-(2**63), 2**63 - 1, s, dtype=np.int64),
    "FP16": lambda r, s: r.standard_normal(s).astype(np.float16),
    "FP32": lambda r, s: r.standard_normal(s).astype(np.float32),
    "FP64": lambda r, s: r.standard_normal(s),
    "BF16": lambda r, s: r.standard_normal(s).astype(__import__("ml_dtypes").bfloat16),
    "BYTES": lambda r, s: np.array(
        [("é" * int(k)).encode() for k in r.integers(0, 4, int(np.prod(s)))], dtype=object
    ).reshape(s),
}


def same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype == object or b.dtype == object:
        return a.shape == b.shape and a.reshape(-1).tolist() == b.reshape(-1).tolist()
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def triton_codec() -> None:
    """sigserve's codec against tritonclient's encoders and decoders, every datatype, every framing."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.grpc import _utils as grpc_utils
    from tritonclient.grpc import service_pb2

    from sigserve.codec.v2 import grpc as v2grpc
    from sigserve.codec.v2 import request as v2request
    from sigserve.codec.v2 import rest as v2rest

    rng = np.random.default_rng(0)
    count = 0
    for datatype, make in CASES.items():
        for shape in ([2, 3], [0, 4], [5]):
            array = make(rng, shape)
            for binary in (True, False):
                if not binary and datatype == "BF16":
                    continue  # tritonclient sends BF16 only as binary data
                # REST request: tritonclient's body -> sigserve
                tensor = httpclient.InferInput("x", shape, datatype)
                tensor.set_data_from_numpy(array, binary_data=binary)
                wanted = httpclient.InferRequestedOutput("y", binary_data=not binary)
                body, json_size = httpclient.InferenceServerClient.generate_request_body(
                    [tensor], outputs=[wanted], request_id="r9", parameters={"signature_name": "s"}
                )
                header = None if json_size is None else str(json_size)
                parsed = v2rest.parse_infer(body, header)
                assert (parsed.id, parsed.signature_name) == ("r9", "s"), parsed
                assert parsed.outputs[0].binary is (not binary)
                assert same(parsed.inputs[0].array, array), (datatype, shape, binary)
                # REST response: sigserve's body -> tritonclient
                answer = v2request.response(parsed, {"y": array}, "m", "1")
                answer.outputs[0].binary = binary or datatype == "BF16"
                parts, header_length = v2rest.encode_infer(answer)
                result = httpclient.InferenceServerClient.parse_response_body(
                    b"".join(bytes(p) for p in parts), header_length=header_length
                )
                got = result.as_numpy("y")
                if datatype == "BYTES" and not answer.outputs[0].binary:
                    texts = got.reshape(-1).tolist()
                    got = np.array([v.encode() for v in texts], dtype=object).reshape(shape)
                assert same(got, array), (datatype, shape, binary, got, array)
                count += 2
            # gRPC (tritonclient always sends raw contents)
            tensor = grpcclient.InferInput("x", shape, datatype)
            tensor.set_data_from_numpy(array)
            message = grpc_utils._get_inference_request(
                model_name="m",
                inputs=[tensor],
                model_version="3",
                request_id="g",
                outputs=None,
                sequence_id=0,
                sequence_start=False,
                sequence_end=False,
                priority=0,
                timeout=250000,
                parameters={"signature_name": "s"},
            )
            parsed = v2grpc.parse_infer(message.SerializeToString())
            assert parsed.raw and parsed.timeout == 0.25 and parsed.model_version == "3"
            assert same(parsed.inputs[0].array, array), (datatype, shape)
            answer = v2request.response(parsed, {"y": array}, "m", "3")
            reply = service_pb2.ModelInferResponse.FromString(v2grpc.encode_infer(answer, raw=True))
            assert same(grpcclient.InferResult(reply).as_numpy("y"), array), (datatype, shape)
            count += 2
    print("ok", count, "cases")


if __name__ == "__main__":
    if sys.argv[1] == "coexist":
        coexist(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "triton-codec":
        triton_codec()
    else:
        raise SystemExit(f"unknown check {sys.argv[1]!r}")
