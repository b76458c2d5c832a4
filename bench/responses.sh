#!/usr/bin/env bash
# What keeping a response costs: the same whole answers from the stand-in
# upstream through Switchyard as chat completions, as responses with
# `store: false`, and as stored responses (a row and its items written to
# SQLite before the answer goes out), side by side: requests/s, latency
# percentiles and the gateway's CPU per request, at c=1 and c=32.
#
#   bench/responses.sh                 # 10 s per figure
#   BIN_DIR=/tmp/bins bench/responses.sh   # prebuilt binaries, no build
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER=${SECONDS_PER:-10}
STANDIN=127.0.0.1:19094
GATEWAY=127.0.0.1:18082
BIN_DIR=${BIN_DIR:-}
if [ -z "$BIN_DIR" ]; then
  cargo build --release -q -p switchyard -p switchyard-standin -p switchyard-bench
  BIN_DIR=target/release
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

"$BIN_DIR/switchyard-standin" --listen "$STANDIN" --latency-ms 0 2>"$work/standin.log" &
cat >"$work/gateway.toml" <<TOML
listen = "$GATEWAY"
[models.bench]
backend = "openai"
base_url = "http://$STANDIN/v1"
TOML
SWITCHYARD_DATA_DIR="$work" RUST_LOG=warn "$BIN_DIR/switchyard" serve --config "$work/gateway.toml" \
  >"$work/gateway.out" 2>"$work/gateway.log" &
gateway_pid=$!
for _ in $(seq 100); do
  curl -sf "http://$GATEWAY/readyz" >/dev/null && curl -sf "http://$STANDIN/v1/models" >/dev/null && break
  sleep 0.1
done

ticks() { awk '{print $14 + $15}' "/proc/$gateway_pid/stat"; }
hz=$(getconf CLK_TCK)
run() { # label, concurrency, switchyard-load flags...
  local label=$1 c=$2
  shift 2
  local before after line
  before=$(ticks)
  line=$("$BIN_DIR/switchyard-load" --url "http://$GATEWAY/v1" -c "$c" --seconds "$SECONDS_PER" --label "$label" "$@")
  after=$(ticks)
  echo "$line  cpu/request $(awk -v t0="$before" -v t1="$after" -v hz="$hz" -v s="$SECONDS_PER" '
    match($0, /req\/s +[0-9.]+/) { split(substr($0, RSTART, RLENGTH), a, " "); rps = a[2] }
    END { if (rps > 0) printf "%.0fus", (t1 - t0) / hz * 1e6 / (rps * s) }' <<<"$line")"
}

echo "${SECONDS_PER} s per figure; whole answers from the stand-in; SQLite"
for c in 1 32; do
  run "chat completions" "$c"
  run "responses, store: false" "$c" --responses --no-store
  run "responses, stored" "$c" --responses
done
echo "stored responses: $(curl -s "http://$GATEWAY/metrics" >/dev/null; ls -la "$work"/switchyard.db* | awk '{s+=$5} END {printf "%.1f MiB of SQLite", s/1048576}')"
