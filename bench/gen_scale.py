"""A large config for bench/cluster.sh: N routes (default 100,000) over N/100 services,
N/10 consumers with key-auth keys, key-auth on every tenth service and rate-limiting on
every hundredth route. Routes mix prefixes (60 %), `{param}` paths (30 %) and hosts (10 %).
Prints the declarative document as JSON."""
import json
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
services, consumers, plugins = [], [], []
for s in range(n // 100):
    services.append({"name": f"s{s}", "url": f"http://127.0.0.1:9001/base{s}", "routes": []})
    if s % 10 == 0:
        plugins.append({"name": "key-auth", "service": f"s{s}"})
for i in range(n):
    kind = i % 10
    route = {"name": f"r{i}"}
    if kind < 6:
        route["paths"] = [f"/svc{i}/items"]
    elif kind < 9:
        route["paths"] = [f"/api/{i}/users/{{id}}/orders"]
    else:
        route["hosts"] = [f"host{i}.example.com"]
    if i % 100 == 0:
        route["plugins"] = [{"name": "rate-limiting", "config": {"minute": 1000}}]
    services[i % len(services)]["routes"].append(route)
for c in range(n // 10):
    consumers.append({"username": f"c{c}", "keyauth_credentials": [{"key": f"key-{c:08d}-bench"}]})
json.dump({"_format_version": "1", "services": services, "consumers": consumers,
           "plugins": plugins}, sys.stdout)
