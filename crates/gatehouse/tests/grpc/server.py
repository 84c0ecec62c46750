"""A real gRPC server (grpcio) for Gatehouse's tests: service test.Echo with unary and all
three streaming kinds, raw bytes messages (no protobuf code generation needed).

usage: server.py [CERT KEY]   -> prints its port, then serves until killed
"""
import sys
import time
from concurrent import futures

import grpc


def unary(req, ctx):
    md = dict(ctx.invocation_metadata())
    if req == b"fail":
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if req.startswith(b"sleep:"):
        time.sleep(float(req[6:]))
    ctx.set_trailing_metadata((("x-trailer", "t1"),))
    return b"echo:" + req + b"|consumer=" + md.get("x-consumer-username", "").encode()


def server_stream(req, ctx):
    for i in range(int(req)):
        yield ("item %d" % i).encode()


def client_stream(it, ctx):
    return b",".join(list(it))


def bidi(it, ctx):
    for m in it:
        yield b"re:" + m


handler = grpc.method_handlers_generic_handler(
    "test.Echo",
    {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    },
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
server.add_generic_rpc_handlers((handler,))
if len(sys.argv) == 3:
    cert = open(sys.argv[1], "rb").read()
    key = open(sys.argv[2], "rb").read()
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
else:
    port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
