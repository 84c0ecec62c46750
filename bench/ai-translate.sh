#!/usr/bin/env bash
# Streaming with translation, measured beside pass-through in one run.
#
# One nginx mock (1 worker, CPU 1) serves a fixed OpenAI SSE stream at /v1/chat/completions and
# the same answer as a fixed Anthropic Messages SSE stream at /v1/messages (18 text deltas each,
# usage included). In front of it, one at a time on CPU 0:
#   nginx-floor   plain proxy_pass of the Anthropic stream (what any proxy costs, no AI work)
#   pass          Gatehouse, OpenAI surface → OpenAI-format provider (usage followed, chunk kept)
#   translated    Gatehouse, OpenAI surface → Anthropic provider (every event translated)
#   gemini        Gatehouse, OpenAI surface → Gemini streamGenerateContent (SSE, translated)
#   bedrock       Gatehouse, OpenAI surface → Bedrock converse-stream (AWS event-stream frames,
#                 every request SigV4-signed; the mock does not check signatures)
# wrk (CPU 1) posts the same OpenAI-format streaming request to each. Ratios between rows are
# the figure to report.
#
#   cargo build --release && bench/ai-translate.sh
# Env: DUR (default 10), CONN (default 16), GATEHOUSE (default target/release/gatehouse under
#      $CARGO_TARGET_DIR or ./target), BASE_PORT (default 29100).
set -u
for b in nginx wrk taskset curl; do command -v $b >/dev/null || { echo "missing $b: apt-get install -y nginx wrk curl util-linux"; exit 2; }; done
DUR=${DUR:-10}; CONN=${CONN:-16}; BASE_PORT=${BASE_PORT:-29100}
MOCK=$((BASE_PORT+1)); FLOOR=$((BASE_PORT+2)); GW=$((BASE_PORT+3))
GATEHOUSE=${GATEHOUSE:-${CARGO_TARGET_DIR:-target}/release/gatehouse}
[ -x "$GATEHOUSE" ] || { echo "no $GATEHOUSE: cargo build --release"; exit 2; }
D=$(mktemp -d /tmp/ai-translate.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; sleep 0.3; rm -rf "$D"' EXIT

chmod 755 "$D"; mkdir -p "$D/www/v1/chat" "$D/logs"
WORDS=(Sure '!' ' The' ' capital' ' of' ' France' ' is' ' Paris' ',' ' a' ' city' ' known' ' for' ' the' ' Eiffel' ' Tower' ' and' ' the Louvre.')
{
  printf 'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1733011200,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
  for w in "${WORDS[@]}"; do
    printf 'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1733011200,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n' "$w"
  done
  printf 'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1733011200,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
  printf 'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1733011200,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":28,"completion_tokens":19,"total_tokens":47}}\n\n'
  printf 'data: [DONE]\n\n'
} > "$D/www/v1/chat/completions"
{
  printf 'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_x","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":28,"output_tokens":1}}}\n\n'
  printf 'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
  for w in "${WORDS[@]}"; do
    printf 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"%s"}}\n\n' "$w"
  done
  printf 'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
  printf 'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":19}}\n\n'
  printf 'event: message_stop\ndata: {"type":"message_stop"}\n\n'
} > "$D/www/v1/messages"
mkdir -p "$D/www/v1beta/models" "$D/www/model/m"
{
  n=${#WORDS[@]}; i=0
  for w in "${WORDS[@]}"; do
    i=$((i+1))
    if [ $i -lt $n ]; then
      printf 'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"%s"}]},"index":0}],"usageMetadata":{"promptTokenCount":28,"totalTokenCount":28},"modelVersion":"gemini-2.5-flash","responseId":"r1"}\r\n\r\n' "$w"
    else
      printf 'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"%s"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":28,"candidatesTokenCount":19,"totalTokenCount":47},"modelVersion":"gemini-2.5-flash","responseId":"r1"}\r\n\r\n' "$w"
    fi
  done
} > "$D/www/v1beta/models/gemini-2.5-flash:streamGenerateContent"
# Bedrock's converse-stream: AWS event-stream frames (big-endian lengths, CRC-32 of the prelude
# and of the message), written by Python's zlib so the gateway's parser is checked against it.
python3 - "$D/www/model/m/converse-stream" "${WORDS[@]}" <<'PY'
import json, struct, sys, zlib
def frame(kind, payload):
    h = b""
    for k, v in ((":event-type", kind), (":content-type", "application/json"), (":message-type", "event")):
        h += bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
    body = json.dumps(payload, separators=(",", ":")).encode()
    total = 16 + len(h) + len(body)
    prelude = struct.pack(">II", total, len(h))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + h + body
    return msg + struct.pack(">I", zlib.crc32(msg))
out = frame("messageStart", {"role": "assistant"})
for w in sys.argv[2:]:
    out += frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}})
out += frame("contentBlockStop", {"contentBlockIndex": 0})
out += frame("messageStop", {"stopReason": "end_turn"})
out += frame("metadata", {"usage": {"inputTokens": 28, "outputTokens": 19, "totalTokens": 47}, "metrics": {"latencyMs": 1}})
open(sys.argv[1], "wb").write(out)
PY

cat > "$D/mock.conf" <<EOF
worker_processes 1; daemon off; pid $D/mock.pid; error_log $D/logs/mock.err;
events { worker_connections 4096; }
http { access_log off; types { } default_type text/event-stream; keepalive_requests 100000;
  server { listen 127.0.0.1:$MOCK; root $D/www;
    location / { error_page 405 =200 \$uri; }
    location /model/ { default_type application/vnd.amazon.eventstream; error_page 405 =200 \$uri; } } }
EOF
cat > "$D/floor.conf" <<EOF
worker_processes 1; daemon off; pid $D/floor.pid; error_log $D/logs/floor.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  upstream m { server 127.0.0.1:$MOCK; keepalive 64; }
  server { listen 127.0.0.1:$FLOOR;
    location = /v1/chat/completions { proxy_pass http://m/v1/messages; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; } } }
EOF
cat > "$D/gw.yaml" <<EOF
_format_version: "1"
ai_providers:
  - {name: oa, kind: openai-compatible, base_url: "http://127.0.0.1:$MOCK/v1", keys: [{key: k}]}
  - {name: an, kind: anthropic, base_url: "http://127.0.0.1:$MOCK/v1", keys: [{key: k}]}
  - {name: gem, kind: gemini, base_url: "http://127.0.0.1:$MOCK/v1beta", keys: [{key: k}]}
  - {name: aws, kind: bedrock, region: us-east-1, base_url: "http://127.0.0.1:$MOCK", keys: [{key: "AKIDBENCH:benchsecret"}]}
ai_models:
  - {name: pass, targets: [{provider: oa, model: gpt-4o-mini}]}
  - {name: translated, targets: [{provider: an, model: claude-sonnet-4}]}
  - {name: gemini, targets: [{provider: gem, model: gemini-2.5-flash}]}
  - {name: bedrock, targets: [{provider: aws, model: m}]}
services:
  - name: ai
    url: http://127.0.0.1:9
    routes: [{name: ai, paths: [/v1], plugins: [{name: ai-proxy}]}]
EOF
body() { printf '{"model":"%s","stream":true,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France? Answer in one sentence."}]}' "$1"; }
for m in pass translated gemini bedrock; do
  printf 'wrk.method="POST"\nwrk.headers["Content-Type"]="application/json"\nwrk.body=[[%s]]\n' "$(body $m)" > "$D/$m.lua"
done
cp "$D/pass.lua" "$D/floor.lua"

taskset -c 1 nginx -c "$D/mock.conf" & PIDS+=($!)
taskset -c 0 nginx -c "$D/floor.conf" & PIDS+=($!)
taskset -c 0 "$GATEHOUSE" serve --config "$D/gw.yaml" --workers 1 --listen 127.0.0.1:$GW --tls-listen off \
  --admin-listen 127.0.0.1:$((BASE_PORT+4)) --status-listen 127.0.0.1:$((BASE_PORT+5)) --data-dir "$D" > "$D/logs/gw.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$GW/" && break; sleep 0.1; done
sleep 0.5

check() { # port model: the stream must end properly
  curl -s -N -X POST -H 'content-type: application/json' -d "$(body $2)" "http://127.0.0.1:$1/v1/chat/completions" | tail -c 200
}
printf '| row | requests/s | p50 | p99 | check |\n|---|---|---|---|---|\n'
for row in "nginx-floor $FLOOR floor" "pass $GW pass" "translated $GW translated" "gemini $GW gemini" "bedrock $GW bedrock"; do
  set -- $row
  out=$(check $2 $3)
  case "$1:$out" in
    nginx-floor:*message_stop*|pass:*DONE*|translated:*DONE*|gemini:*DONE*|bedrock:*DONE*) ok=ok ;;
    *) ok=ERROR ;;
  esac
  if [ $ok = ERROR ]; then printf '| %s | ERROR | | | %s |\n' "$1" "$(echo "$out" | tr '\n|' ' /' | cut -c1-80)"; continue; fi
  taskset -c 1 wrk -t1 -c"$CONN" -d2s -s "$D/$3.lua" "http://127.0.0.1:$2/v1/chat/completions" >/dev/null 2>&1
  r=$(taskset -c 1 wrk -t1 -c"$CONN" -d"${DUR}s" --latency -s "$D/$3.lua" "http://127.0.0.1:$2/v1/chat/completions")
  rps=$(echo "$r" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$r" | awk '$1=="50%" {print $2}'); p99=$(echo "$r" | awk '$1=="99%" {print $2}')
  errs=$(echo "$r" | grep -E "Non-2xx|Socket errors" | tr '\n' ' ')
  printf '| %s | %s | %s | %s | ok %s|\n' "$1" "$rps" "$p50" "$p99" "$errs"
done
