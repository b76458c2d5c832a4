#!/usr/bin/env bash
# Switchyard beside its upstream, measured with independent tools: nginx
# (Debian's) answers /v1/chat/completions from memory, whole (JSON) and
# streamed (SSE, five content chunks), and wrk drives both nginx directly
# and Switchyard in front of it. For each target: requests/s at c=32,
# p50/p90/p99 at c=1 and c=32, the CPU each process used per request
# (user + system time from /proc), and RSS. Switchyard runs a plain
# configuration: keyless, ledger and audit on SQLite, request log on,
# defaults otherwise. After the load it stops gracefully and the ledger's
# rows are counted against the requests wrk completed.
#
#   bench/side_by_side.sh                       # 10 s per figure
#   SECONDS_PER=30 bench/side_by_side.sh
#   WORKER_THREADS=2 bench/side_by_side.sh      # the gateway's runtime threads
#   SWITCHYARD_BIN=/tmp/old/switchyard bench/side_by_side.sh   # another build
#
# Everything shares this machine's cores; the figures are a run's, not a
# guarantee. wrk and nginx are installed (apt) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER=${SECONDS_PER:-10}
UPSTREAM=127.0.0.1:19180
GATEWAY=127.0.0.1:19181
SWITCHYARD_BIN=${SWITCHYARD_BIN:-target/release/switchyard}
WORKER_THREADS=${WORKER_THREADS:-}

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$SWITCHYARD_BIN" ]; then
  cargo build --release -q -p switchyard
fi

work=$(mktemp -d)
stop_all() {
  kill $(jobs -p) 2>/dev/null || true
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap stop_all EXIT
hz=$(getconf CLK_TCK)

# The upstream's answers, as an OpenAI-compatible server sends them.
whole='{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15}}'
chunk() { printf 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}\\n\\n' "$1" "$2"; }
sse="$(chunk '{"role":"assistant","content":""}' null)"
for word in "Hello " "from " "the " "bench " "upstream."; do
  sse+="$(chunk "{\"content\":\"$word\"}" null)"
done
sse+="$(chunk '{}' '"stop"')"
sse+='data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15}}\n\n'
sse+='data: [DONE]\n\n'

cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/body;
  keepalive_requests 1000000;
  server {
    listen $UPSTREAM reuseport;
    location = /json/v1/chat/completions {
      default_type application/json;
      return 200 '$whole';
    }
    location = /sse/v1/chat/completions {
      default_type text/event-stream;
      return 200 '$sse';
    }
  }
}
NGINX
"$NGINX" -c "$work/nginx.conf" -p "$work"

cat >"$work/gateway.toml" <<TOML
listen = "$GATEWAY"
${WORKER_THREADS:+worker_threads = $WORKER_THREADS}
[models.bench]
backend = "openai"
base_url = "http://$UPSTREAM/json/v1"
[models.bench-stream]
backend = "openai"
base_url = "http://$UPSTREAM/sse/v1"
TOML
SWITCHYARD_DATA_DIR="$work" RUST_LOG=info "$SWITCHYARD_BIN" serve --config "$work/gateway.toml" >"$work/gateway.out" 2>"$work/gateway.log" &
gateway_pid=$!
for _ in $(seq 200); do
  curl -sf "http://$GATEWAY/readyz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://$GATEWAY/readyz" >/dev/null || { echo "the gateway did not start:"; cat "$work/gateway.log"; exit 1; }

for model in bench bench-stream; do
  stream=false; [ "$model" = bench-stream ] && stream=true
  cat >"$work/$model.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"$model","stream":$stream,"messages":[{"role":"user","content":"Say hello."}]}'
LUA
done

# CPU ticks (user + system) of a set of processes.
ticks() { for pid in "$@"; do awk '{print $14 + $15}' "/proc/$pid/stat"; done | awk '{s += $1} END {print s}'; }
rss_mib() { for pid in "$@"; do awk '/VmRSS/ {print $2}' "/proc/$pid/status"; done | awk '{s += $1} END {printf "%.0f", s / 1024}'; }
# The master and its workers (whose titles do not name the config).
nginx_pids() {
  local master
  master=$(cat "$work/nginx.pid")
  echo "$master $(pgrep -P "$master" | tr '\n' ' ')"
}

completed_total=0
# One figure: wrk at concurrency $2 against URL $1 with script $3, the
# CPU of pids $4... Prints a line; adds what it completed when through
# the gateway.
figure() {
  local label=$1 url=$2 c=$3 script=$4; shift 4
  local before after out
  before=$(ticks "$@")
  out=$(wrk -t1 -c"$c" -d"${SECONDS_PER}s" --latency -s "$script" "$url")
  after=$(ticks "$@")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "$label: some answers were not 2xx:"; echo "$out"; exit 1
  fi
  awk -v label="$label" -v c="$c" -v t0="$before" -v t1="$after" -v hz="$hz" '
    /^ +50%/ {p50 = $2} /^ +90%/ {p90 = $2} /^ +99%/ {p99 = $2}
    /requests in/ {n = $1}
    /^Requests\/sec/ {rps = $2}
    END {
      cpu = n > 0 ? (t1 - t0) / hz * 1e6 / n : 0
      printf "%-34s c=%-3d %9.0f req/s  p50 %-8s p90 %-8s p99 %-8s CPU %6.1f us/request\n", label, c, rps, p50, p90, p99, cpu
    }' <<<"$out"
  if [ "$label" != "${label#switchyard}" ]; then
    completed_total=$((completed_total + $(awk '/requests in/ {print $1}' <<<"$out")))
  fi
}

echo "wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'), $(nproc) cores shared by all, ${SECONDS_PER} s per figure, worker_threads ${WORKER_THREADS:-default}"
for c in 1 32; do
  # shellcheck disable=SC2046
  figure "nginx direct (whole)" "http://$UPSTREAM/json/v1/chat/completions" "$c" "$work/bench.lua" $(nginx_pids)
  figure "switchyard (whole)" "http://$GATEWAY/v1/chat/completions" "$c" "$work/bench.lua" "$gateway_pid"
done
for c in 1 32; do
  # shellcheck disable=SC2046
  figure "nginx direct (streamed, 5 chunks)" "http://$UPSTREAM/sse/v1/chat/completions" "$c" "$work/bench-stream.lua" $(nginx_pids)
  figure "switchyard (streamed, 5 chunks)" "http://$GATEWAY/v1/chat/completions" "$c" "$work/bench-stream.lua" "$gateway_pid"
done
# shellcheck disable=SC2046
echo "RSS after the load: switchyard $(rss_mib "$gateway_pid") MiB, nginx $(rss_mib $(nginx_pids)) MiB"

# Every request the load generator saw answered is in the ledger once the
# gateway has stopped (it flushes on the way out).
kill -TERM "$gateway_pid"
wait "$gateway_pid" 2>/dev/null || true
rows=$(python3 - "$work/switchyard.db" <<'PY'
import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute("select count(*) from usage_ledger").fetchone()[0])
PY
)
echo "ledger: $rows rows for $completed_total requests wrk completed through switchyard (wrk does not count those in flight when it stops)"
