"""gRPC unary latency at concurrency 1: N calls of test.Echo/Unary, prints p50/p90/p99 in µs.
usage: grpc_latency.py TARGET N"""
import sys
import time

import grpc

target, n = sys.argv[1], int(sys.argv[2])
channel = grpc.insecure_channel(target)
call = channel.unary_unary("/test.Echo/Unary")
for _ in range(200):
    call(b"warm", timeout=5)
times = []
for _ in range(n):
    t = time.perf_counter_ns()
    call(b"x", timeout=5)
    times.append((time.perf_counter_ns() - t) / 1000)
times.sort()
q = lambda p: times[min(len(times) - 1, int(len(times) * p))]
print("p50=%.0f p90=%.0f p99=%.0f" % (q(0.5), q(0.9), q(0.99)))
