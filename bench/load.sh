#!/usr/bin/env bash
# Gateway overhead: the same load against the stand-in upstream directly and
# through Switchyard, side by side, with switchyard-load (Rust). Reports
# requests/s and latency percentiles (whole answers, and time to first
# streamed token), the added latency at each percentile, and the gateway's
# RSS with 1,000 streams open.
#
#   bench/load.sh                      # 10 s per figure, 1 ms upstream latency
#   SECONDS_PER=30 LATENCY_MS=0 bench/load.sh
#   OTLP=1 LATENCY_MS=0 bench/load.sh  # with every span exported (OTLP/HTTP
#                                      # to a stand-in collector)
#   OTLP=1 SAMPLE=0.1 bench/load.sh    # ...of one trace in ten
#   GUARDRAILS=1 bench/load.sh         # with a guardrail policy on every
#                                      # request (data, injection, output deny)
#   SWITCHYARD_BIN=/tmp/old/switchyard bench/load.sh   # another build of the
#                                      # gateway (before/after a change)
#   BIN_DIR=/tmp/bins bench/load.sh    # prebuilt binaries, no build
#
# Load generator, stand-in and gateway share this machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER=${SECONDS_PER:-10}
LATENCY_MS=${LATENCY_MS:-1}
STANDIN=127.0.0.1:19090
SLOW_STANDIN=127.0.0.1:19091
COLLECTOR=127.0.0.1:19092
# Prebuilt binaries (switchyard-standin, switchyard-load) to use instead of
# building this checkout's.
BIN_DIR=${BIN_DIR:-}
SWITCHYARD_BIN=${SWITCHYARD_BIN:-${BIN_DIR:-target/release}/switchyard}
OTLP=${OTLP:-}
SAMPLE=${SAMPLE:-1.0}
GATEWAY=127.0.0.1:18080
# 1,000 streams need 2,000 sockets in the gateway alone.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -z "$BIN_DIR" ]; then
  cargo build --release -q -p switchyard -p switchyard-standin -p switchyard-bench
  BIN_DIR=target/release
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

"$BIN_DIR/switchyard-standin" --listen "$STANDIN" --latency-ms "$LATENCY_MS" 2>"$work/standin.log" &
# Streams that stay open: one word every 2 s.
"$BIN_DIR/switchyard-standin" --listen "$SLOW_STANDIN" --token-delay-ms 2000 2>"$work/slow.log" &
telemetry=""
if [ -n "$OTLP" ]; then
  "$BIN_DIR/switchyard-standin" --listen "$COLLECTOR" 2>"$work/collector.log" &
  telemetry=$(printf '[telemetry]\notlp_endpoint = "http://%s"\notlp_protocol = "http/protobuf"\nsample_ratio = %s' "$COLLECTOR" "$SAMPLE")
fi
guardrails=""
if [ -n "${GUARDRAILS:-}" ]; then
  guardrails=$(cat <<'POLICY'
[guardrails]
default = ["bench"]
[guardrails.policies.bench]
checks = [
  { kind = "data", action = "pseudonymize" },
  { kind = "injection", action = "block" },
  { kind = "deny", on = "output", words = ["internal only"], action = "block" },
]
POLICY
)
fi
cat >"$work/gateway.toml" <<TOML
listen = "$GATEWAY"
[models.bench]
backend = "openai"
base_url = "http://$STANDIN/v1"
[models.slow]
backend = "openai"
base_url = "http://$SLOW_STANDIN/v1"
$telemetry
$guardrails
TOML
SWITCHYARD_DATA_DIR="$work" RUST_LOG=warn "$SWITCHYARD_BIN" serve --config "$work/gateway.toml" >"$work/gateway.out" 2>"$work/gateway.log" &
gateway_pid=$!
for _ in $(seq 100); do
  curl -sf "http://$GATEWAY/readyz" >/dev/null && curl -sf "http://$STANDIN/v1/models" >/dev/null && break
  sleep 0.1
done

load() { "$BIN_DIR/switchyard-load" --seconds "$SECONDS_PER" "$@"; }
added() { # two result lines → added latency per percentile
  paste <(grep -o 'p[0-9.]* *[0-9]*us' <<<"$1") <(grep -o 'p[0-9.]* *[0-9]*us' <<<"$2") |
    awk '{gsub("us","",$2); gsub("us","",$4); printf "%s +%dus  ", $1, $4-$2} END {print ""}'
}

echo "upstream latency ${LATENCY_MS} ms, ${SECONDS_PER} s per figure, span export $([ -n "$OTLP" ] && echo "on (sampled $SAMPLE)" || echo off), guardrails $([ -n "${GUARDRAILS:-}" ] && echo on || echo off)"
# The gateway's CPU time (user + system, clock ticks) from /proc.
ticks() { awk '{print $14 + $15}' "/proc/$gateway_pid/stat"; }
hz=$(getconf CLK_TCK)
cpu_per_request() { # ticks before, ticks after, result line → us of CPU per request
  awk -v t0="$1" -v t1="$2" -v hz="$hz" -v s="$SECONDS_PER" '
    match($0, /req\/s +[0-9.]+/) { split(substr($0, RSTART, RLENGTH), a, " "); rps = a[2] }
    END { if (rps > 0) printf "%.1f", (t1 - t0) / hz * 1e6 / (rps * s) }' <<<"$3"
}
for c in 1 32; do
  direct=$(load --url "http://$STANDIN/v1" -c "$c" --label "direct")
  before=$(ticks)
  through=$(load --url "http://$GATEWAY/v1" -c "$c" --label "through switchyard")
  after=$(ticks)
  echo "$direct"; echo "$through"; echo "  added: $(added "$direct" "$through")"
  echo "  switchyard CPU per request: $(cpu_per_request "$before" "$after" "$through") us"
done
direct=$(load --url "http://$STANDIN/v1" -c 1 --stream --label "direct stream")
through=$(load --url "http://$GATEWAY/v1" -c 1 --stream --label "switchyard stream")
echo "$direct"; echo "$through"; echo "  added to first token: $(added "$direct" "$through")"

# Switchyard's own account of its overhead (request time minus upstream
# waits), from its Prometheus histogram over everything above.
curl -s "http://$GATEWAY/metrics" | awk '
  /^switchyard_gateway_overhead_seconds_sum\{.*stream="false"/ {sum=$2}
  /^switchyard_gateway_overhead_seconds_count\{.*stream="false"/ {n=$2}
  END {if (n) printf "switchyard_gateway_overhead_seconds (whole answers): %d requests, mean %.1f us\n", n, sum/n*1e6}'

rss() { echo $(( $(ps -o rss= -p "$gateway_pid") / 1024 )); }
echo "switchyard RSS after the load: $(rss) MiB"
"$BIN_DIR/switchyard-load" --url "http://$GATEWAY/v1" --model slow --open-streams 1000 --hold 3 >"$work/held" &
holder=$!
until grep -q 'streams open' "$work/held" || ! kill -0 "$holder" 2>/dev/null; do sleep 0.2; done
cat "$work/held"
echo "switchyard RSS with those streams open: $(rss) MiB"
wait "$holder"
