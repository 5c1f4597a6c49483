"""`inference.GRPCInferenceService` (the Open Inference Protocol over gRPC) as method bodies for the gRPC
method table, served by both gRPC transports: request bytes and the call's `CallContext` in,
response bytes out, like the TF Serving RPCs in `grpc_handlers.py`.

ModelInfer is counted in the request metrics (API `ModelInfer`, protocol `v2`); the health and
metadata RPCs are not, as TF Serving counts only its inference RPCs. A small ModelInfer may run on
the event loop (`model_infer_inline`) under the same rules as a small Predict.
"""

from __future__ import annotations

from sigserve.codec.v2 import grpc as codec
from sigserve.protos import open_inference_pb2 as pb
from sigserve.server.v2 import OpenInference
from sigserve.service import CallContext


class InferenceServices:
    """The six RPCs of GRPCInferenceService over one `OpenInference`."""

    def __init__(self, v2: OpenInference) -> None:
        self.v2 = v2
        self.service = v2.service

    def server_live(self, data: bytes, ctx: CallContext) -> bytes:
        codec.parse_message(pb.ServerLiveRequest(), data, "ServerLiveRequest")
        return codec.encode_live(True)

    def server_ready(self, data: bytes, ctx: CallContext) -> bytes:
        codec.parse_message(pb.ServerReadyRequest(), data, "ServerReadyRequest")
        return codec.encode_ready(self.v2.server_ready())

    def model_ready(self, data: bytes, ctx: CallContext) -> bytes:
        name, version = codec.parse_model_request(data, "ModelReady")
        return codec.encode_model_ready(self.v2.model_ready(name, version))

    def server_metadata(self, data: bytes, ctx: CallContext) -> bytes:
        codec.parse_message(pb.ServerMetadataRequest(), data, "ServerMetadataRequest")
        return codec.encode_server_metadata(*self.v2.server_metadata())

    def model_metadata(self, data: bytes, ctx: CallContext) -> bytes:
        name, version = codec.parse_model_request(data, "ModelMetadata")
        ctx.model_name = name
        return codec.encode_model_metadata(self.v2.model_metadata(ctx, name, version))

    def model_infer(self, data: bytes, ctx: CallContext) -> bytes:
        out = self.service.call(ctx, self._infer, (data, ctx, False))
        assert out is not None  # only a call on the loop declines
        return out

    def model_infer_inline(self, data: bytes, ctx: CallContext) -> bytes | None:
        """ModelInfer on the event loop, or None (nothing done) unless it is small, its deadline not
        tight, and its route qualifies for the short path (`service/inline.py`)."""
        if not self.service.may_run_inline(len(data), ctx):
            return None
        return self.service.call(ctx, self._infer, (data, ctx, True))

    async def model_infer_awaited(self, data: bytes, ctx: CallContext) -> bytes | None:
        """ModelInfer on the event loop when the server batches: the call awaits its batch. None
        (nothing counted) when it is too large to parse here or its servable does not batch."""
        if not self.service.may_await(len(data)):
            return None
        return await self.service.call_awaited(ctx, self._infer_awaited, (data, ctx))

    async def _infer_awaited(self, args: tuple[bytes, CallContext]) -> bytes | None:
        data, ctx = args
        ctx.model_name = codec.model_name_of(data)
        request = codec.parse_infer(data)
        answer = await self.v2.infer_awaited(ctx, request, request.model_name, request.model_version)
        if answer is None:
            return None
        return codec.encode_infer(answer, request.raw)

    def _infer(self, args: tuple[bytes, CallContext, bool]) -> bytes | None:
        data, ctx, inline = args
        ctx.model_name = codec.model_name_of(data)
        request = codec.parse_infer(data)
        answer = self.v2.infer(ctx, request, request.model_name, request.model_version, inline=inline)
        if answer is None:
            return None
        return codec.encode_infer(answer, request.raw)
