#!/usr/bin/env bash
# Search and analytics latency on a call log of 10 million calls (issue 13).
#
# Starts the gateway once to make calls.db, fills it with CALLS calls (default 10,000,000)
# spread over 7 days — 20 services, 200 routes, 1,000 consumers, 2 % 5xx — with Python's
# sqlite3 (indexes dropped while filling, then rebuilt with the gateway's own statements),
# adds the rollup rows such traffic makes (one per minute × 50 active (service, route,
# consumer), per hour × 400, per day × 2,000, and each bucket's totals row, each with a real
# latency sketch taken from the gateway), restarts the gateway on it and times each query with curl (best of 3).
#
#   cargo build --release && bench/calls-10m.sh
# Env: CALLS, BIN (default $CARGO_TARGET_DIR/release/gatehouse).
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${CALLS:-10000000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
BIN=${BIN:-$CARGO_TARGET_DIR/release/gatehouse}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release"; exit 2; }
D=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; sleep 0.3; rm -rf "$D"' EXIT
TOKEN=calls-bench-token-0123456789
start() {
  "$BIN" serve --config bench/proxy.yaml --call-log on --workers 1 --listen 127.0.0.1:9202 --tls-listen off \
    --admin-listen 127.0.0.1:9212 --status-listen 127.0.0.1:9222 --admin-token "$TOKEN" \
    --data-dir "$D" --log-level warn >"$D/gw.log" 2>&1 &
  GW=$!
  for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:9222/health && break; sleep 0.1; done
}
start
# A few real calls so the gateway writes real rollup rows (their sketch is reused).
for i in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:9202/x/$i" || true; done
sleep 2.5
kill $GW; wait $GW 2>/dev/null || true
echo "filling calls.db with $CALLS calls…"
t0=$(date +%s)
python3 - "$D/calls.db" "$CALLS" <<'PY'
import random, sqlite3, sys, time, uuid
db = sqlite3.connect(sys.argv[1]); n = int(sys.argv[2])
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=OFF")
idx = [r[0] for r in db.execute("SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name='calls' AND sql IS NOT NULL")]
for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='calls' AND sql IS NOT NULL").fetchall():
    db.execute(f"DROP INDEX {name}")
now = int(time.time() * 1000); week = 7 * 86400 * 1000
services = [uuid.uuid4().bytes for _ in range(20)]
routes = [uuid.uuid4().bytes for _ in range(200)]
consumers = [uuid.uuid4().bytes for _ in range(1000)]
rnd = random.Random(7)
batch = []
for i in range(n):
    ts = now - week + (week * i) // n
    r = rnd.randrange(200)
    status = 503 if rnd.random() < 0.02 else 200
    batch.append((ts, f"{i:032x}", routes[r], f"route-{r}", services[r % 20], f"service-{r % 20}",
                  consumers[rnd.randrange(1000)], "user", "10.0.0.1", "GET", "api.example",
                  f"/v1/items/{rnd.randrange(100000)}", status, rnd.randrange(500, 50000), 400,
                  None, 120, "10.0.0.9:80", 0, None, 1))
    if len(batch) == 200000:
        db.executemany("INSERT INTO calls (ts, request_id, route_id, route, service_id, service, consumer_id, consumer, client_ip, method, host, path, status, total_us, upstream_us, bytes_in, bytes_out, upstream, retries, error, complete) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
        batch.clear()
if batch:
    db.executemany("INSERT INTO calls (ts, request_id, route_id, route, service_id, service, consumer_id, consumer, client_ip, method, host, path, status, total_us, upstream_us, bytes_in, bytes_out, upstream, retries, error, complete) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
db.commit()
for sql in idx:
    db.execute(sql)
# Rollups: copies of a real row's sketch over a week of buckets.
row = db.execute("SELECT latency FROM call_rollups WHERE res='m' LIMIT 1").fetchone()
sketch = row[0]
rows = []
for res, ms, combos in (("m", 60000, 50), ("h", 3600000, 400), ("d", 86400000, 2000)):
    start = now - week
    for b in range(start - start % ms, now, ms):
        for c in range(combos):
            r = c % 200
            rows.append((res, b, "bench/1", services[r % 20], routes[r], consumers[c % 1000], f"service-{r % 20}", f"route-{r}", "user",
                         100, 1, 2, 0, 12000, 0, 0, 0, sketch))
        # The bucket's totals row (all-ones ids), as the gateway writes it.
        all_ = b"\xff" * 16
        rows.append((res, b, "bench/1", all_, all_, all_, None, None, None, 100 * combos, combos, 2 * combos, 0, 12000 * combos, 0, 0, 0, sketch))
db.executemany("INSERT OR REPLACE INTO call_rollups (res, bucket, writer, service_id, route_id, consumer_id, service, route, consumer, requests, s4xx, s5xx, bytes_in, bytes_out, tokens_in, tokens_out, cost_micros, latency) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
db.commit()
open(sys.argv[1] + ".ids", "w").write(f"{uuid.UUID(bytes=services[3])} {uuid.UUID(bytes=routes[17])} {uuid.UUID(bytes=consumers[5])}\n")
print("calls:", db.execute("SELECT COUNT(*) FROM calls").fetchone()[0], "rollup rows:", db.execute("SELECT COUNT(*) FROM call_rollups").fetchone()[0])
PY
echo "filled in $(( $(date +%s) - t0 )) s; $(du -sh "$D/calls.db" | cut -f1)"
start
RID=$(printf '%032x' $((CALLS / 2)))
read -r SVC ROUTE CONSUMER < "$D/calls.db.ids"
WEEK=$(( ($(date +%s) - 7 * 86400) * 1000 ))
best() { # path -> best of 3 seconds
  local b=999 t
  for _ in 1 2 3; do
    t=$(curl -s -o "$D/out.json" -w '%{time_total}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:9212$1")
    b=$(awk -v a="$b" -v c="$t" 'BEGIN{ print (c < a) ? c : a }')
  done
  printf '| `%s` | %.1f ms | %s |\n' "$1" "$(awk -v s="$b" 'BEGIN{print s*1000}')" "$(head -c 60 "$D/out.json" | tr '|\n' '/ ')"
}
echo
echo "| query on $CALLS calls | best of 3 | answer starts |"
echo "|---|---|---|"
best "/calls?size=50"
best "/calls?size=50&service=$SVC&status=5xx"
best "/calls?size=50&consumer=$CONSUMER&from=0"
best "/calls?size=50&route=$ROUTE&from=0"
best "/calls?size=50&q=/v1/items/4242&from=0"
best "/calls?size=50&min_latency_ms=49.9&from=0"
best "/calls/$RID"
best "/analytics/series?resolution=hour&from=$WEEK"
best "/analytics/series?resolution=minute"
best "/analytics/top/routes?resolution=day&from=$WEEK"
best "/analytics/top/error-routes?resolution=hour"
best "/analytics/series?resolution=day&from=$WEEK&route=$ROUTE"
