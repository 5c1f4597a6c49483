"""sigserve's HTTP/2 server core for gRPC, with no I/O (`connection.ServerConnection`): one concept
per module — frames, headers (HPACK and validation), the gRPC wire format, stream state, events,
limits. The asyncio adapter that drives it is `sigserve.server.grpc_h2`."""
