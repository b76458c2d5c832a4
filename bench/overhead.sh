#!/usr/bin/env bash
# Gateway overhead: the same load against the stand-in upstream directly and
# through Switchyard's `openai` adapter, side by side in one run.
#
#   bench/overhead.sh            # 10 s per figure
#   DURATION=30s bench/overhead.sh
#
# Needs wrk (Debian package `wrk`). Load generator, stand-in and gateway
# share this machine's cores, as in ../shared/MEASUREMENTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
STANDIN_ADDR=127.0.0.1:19090
GATEWAY_ADDR=127.0.0.1:18080
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }

cargo build --release -q -p switchyard -p switchyard-standin
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

target/release/switchyard-standin --listen "$STANDIN_ADDR" 2>"$work/standin.log" &
cat >"$work/gateway.toml" <<TOML
listen = "$GATEWAY_ADDR"
[models.bench]
backend = "openai"
base_url = "http://$STANDIN_ADDR/v1"
TOML
RUST_LOG=warn target/release/switchyard serve --config "$work/gateway.toml" >"$work/gateway.out" 2>"$work/gateway.log" &
gateway_pid=$!
for _ in $(seq 100); do
  curl -sf "http://$GATEWAY_ADDR/readyz" >/dev/null && curl -sf "http://$STANDIN_ADDR/v1/models" >/dev/null && break
  sleep 0.1
done

run() { # label url threads connections
  local out
  out=$(wrk -t"$3" -c"$4" -d"$DURATION" --latency -s bench/chat.lua "$2/v1/chat/completions")
  local p50 p99 rps
  p50=$(awk '$1=="50%"{print $2}' <<<"$out")
  p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then echo "$1: errors in the run:"; echo "$out"; exit 1; fi
  printf '%-28s c=%-3s p50 %-9s p99 %-9s req/s %s\n' "$1" "$4" "$p50" "$p99" "$rps"
}

echo "wrk, $DURATION per figure, non-streaming chat completions"
run "stand-in directly" "http://$STANDIN_ADDR" 1 1
run "through switchyard" "http://$GATEWAY_ADDR" 1 1
run "stand-in directly" "http://$STANDIN_ADDR" 2 32
run "through switchyard" "http://$GATEWAY_ADDR" 2 32
echo "switchyard RSS after load: $(( $(ps -o rss= -p "$gateway_pid") / 1024 )) MiB"
