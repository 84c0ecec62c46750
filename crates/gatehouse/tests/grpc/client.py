"""A real gRPC client (grpcio) for Gatehouse's tests. Runs the calls named on the command
line against TARGET and prints one JSON object per call: the status code name, details,
response messages and trailing metadata.

usage: client.py TARGET [--tls CA SNI] [--md key=value]... CALL...
calls: unary:MSG  server:N  client:A,B,C  bidi:A,B  path:/svc/Method  deadline:SECONDS:MSG
"""
import json
import sys

import grpc

args = sys.argv[1:]
target = args.pop(0)
md = []
tls = None
calls = []
while args:
    a = args.pop(0)
    if a == "--tls":
        tls = (args.pop(0), args.pop(0))
    elif a == "--md":
        k, v = args.pop(0).split("=", 1)
        md.append((k, v))
    else:
        calls.append(a)

if tls:
    creds = grpc.ssl_channel_credentials(root_certificates=open(tls[0], "rb").read())
    channel = grpc.secure_channel(target, creds, options=(("grpc.ssl_target_name_override", tls[1]),))
else:
    channel = grpc.insecure_channel(target)


def run(call):
    kind, _, arg = call.partition(":")
    out = {"call": call, "code": "OK", "details": "", "messages": [], "trailers": {}}
    try:
        if kind == "unary":
            m = channel.unary_unary("/test.Echo/Unary")
            resp, c = m.with_call(arg.encode(), metadata=md, timeout=10)
            out["messages"] = [resp.decode()]
            out["trailers"] = dict(c.trailing_metadata() or ())
        elif kind == "deadline":
            secs, _, msg = arg.partition(":")
            m = channel.unary_unary("/test.Echo/Unary")
            resp = m(msg.encode(), metadata=md, timeout=float(secs))
            out["messages"] = [resp.decode()]
        elif kind == "path":
            m = channel.unary_unary(arg)
            resp = m(b"x", metadata=md, timeout=10)
            out["messages"] = [resp.decode()]
        elif kind == "server":
            m = channel.unary_stream("/test.Echo/ServerStream")
            out["messages"] = [r.decode() for r in m(arg.encode(), metadata=md, timeout=10)]
        elif kind == "client":
            m = channel.stream_unary("/test.Echo/ClientStream")
            resp = m(iter([p.encode() for p in arg.split(",")]), metadata=md, timeout=10)
            out["messages"] = [resp.decode()]
        elif kind == "bidi":
            m = channel.stream_stream("/test.Echo/Bidi")
            out["messages"] = [r.decode() for r in m(iter([p.encode() for p in arg.split(",")]), metadata=md, timeout=10)]
        else:
            raise SystemExit("unknown call " + call)
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["details"] = e.details() or ""
    print(json.dumps(out), flush=True)


for c in calls:
    run(c)
