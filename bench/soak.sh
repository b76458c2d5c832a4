#!/usr/bin/env bash
# Soak: 30 minutes of mixed traffic through Switchyard against stand-in
# upstreams (whole and streamed answers, cache hits, clients hanging up
# mid-stream, an upstream failing a third of its requests, slow streams,
# embeddings) with a configuration reload every 5 minutes, sampling the
# gateway's RSS, descriptors, threads and ledger lag each minute. Ends with
# the slope of memory and descriptors after warm-up and a check that the
# ledger holds one row per request sent. Not part of the test suite.
#
#   bench/soak.sh                          # 30 min, release build
#   DURATION=600 SAMPLE=30 bench/soak.sh   # a shorter look
#   BIN_DIR=target/debug bench/soak.sh     # binaries already built
#   DATABASE_URL=postgres://postgres@127.0.0.1/soak bench/soak.sh   # ledger on PostgreSQL
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-1800}
SAMPLE=${SAMPLE:-60}
RELOAD_EVERY=${RELOAD_EVERY:-300}
STANDIN=127.0.0.1:19190
GATEWAY=127.0.0.1:18190
MASTER=soak-master-key-0123456789abcdef
BIN_DIR=${BIN_DIR:-}

if [ -z "$BIN_DIR" ]; then
  cargo build --release -q -p switchyard -p switchyard-standin
  BIN_DIR=target/release
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

"$BIN_DIR/switchyard-standin" --listen "$STANDIN" 2>"$work/standin.log" &
database_line=""
[ -n "${DATABASE_URL:-}" ] && database_line="database_url = \"$DATABASE_URL\""
cat >"$work/gateway.toml" <<TOML
listen = "$GATEWAY"
$database_line
[governance]
auth = true
master_key = "$MASTER"
[cache]
enabled = true
[models.echo]
backend = "openai"
base_url = "http://$STANDIN/v1"
pricing = { input = 1.0, output = 2.0 }
[models.slow]
backend = "openai"
base_url = "http://$STANDIN/v1"
headers = { "x-standin-token-delay-ms" = "200" }
[models.flaky]
backend = "openai"
base_url = "http://$STANDIN/v1"
headers = { "x-standin-failure-rate" = "0.3", "x-standin-failure-mix" = "500,reset" }
[models.embed]
backend = "openai"
base_url = "http://$STANDIN/v1"
TOML
SWITCHYARD_DATA_DIR="$work" RUST_LOG=warn "$BIN_DIR/switchyard" serve --config "$work/gateway.toml" \
  >"$work/gateway.out" 2>"$work/gateway.log" &
gateway_pid=$!
for _ in $(seq 100); do
  curl -sf "http://$GATEWAY/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

python3 bench/soak.py "$GATEWAY" --pid "$gateway_pid" --master "$MASTER" \
  --duration "$DURATION" --sample "$SAMPLE" --reload-every "$RELOAD_EVERY"
echo "gateway warnings and errors: $(grep -cE 'WARN|ERROR' "$work/gateway.log" || true)"
