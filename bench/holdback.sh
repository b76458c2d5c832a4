#!/usr/bin/env bash
# What an output guardrail's hold-back costs the first visible token: a
# stand-in upstream that streams one word every TOKEN_MS (a model at about
# 1000/TOKEN_MS tokens/s), and the time to the first content chunk through
# Switchyard with no policy, with a data check on the output (it holds only
# what may still become a datum), and with a pattern check on the output
# (it holds `hold_back_chars`, 32 by default). One streamed request at a time.
#
#   bench/holdback.sh                  # 10 s per figure, a word every 10 ms
#   TOKEN_MS=25 SECONDS_PER=20 bench/holdback.sh
#   LOCAL=1 bench/holdback.sh          # the default local model instead of the
#                                      # stand-in (its tokens begin with a space,
#                                      # so a word is held until the next one)
#   BIN_DIR=/tmp/bins bench/holdback.sh   # prebuilt binaries, no build
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER=${SECONDS_PER:-10}
TOKEN_MS=${TOKEN_MS:-10}
STANDIN=127.0.0.1:19093
GATEWAY=127.0.0.1:18081
BIN_DIR=${BIN_DIR:-}
if [ -z "$BIN_DIR" ]; then
  cargo build --release -q -p switchyard -p switchyard-standin -p switchyard-bench
  BIN_DIR=target/release
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

"$BIN_DIR/switchyard-standin" --listen "$STANDIN" --token-delay-ms "$TOKEN_MS" 2>"$work/standin.log" &

if [ -n "${LOCAL:-}" ]; then
  model=$(printf '[models.bench]\nbackend = "local"\ncatalog = "smollm2-135m-instruct"\npreload = true\nparallel = 1')
else
  model=$(printf '[models.bench]\nbackend = "openai"\nbase_url = "http://%s/v1"' "$STANDIN")
fi

run() { # label, guardrails table
  cat >"$work/gateway.toml" <<TOML
listen = "$GATEWAY"
$model
$2
TOML
  SWITCHYARD_DATA_DIR="$work" RUST_LOG=warn "$BIN_DIR/switchyard" serve --config "$work/gateway.toml" \
    >"$work/gateway.out" 2>"$work/gateway.log" &
  local pid=$!
  for _ in $(seq 100); do
    curl -sf "http://$GATEWAY/readyz" >/dev/null && curl -sf "http://$STANDIN/v1/models" >/dev/null && break
    sleep 0.1
  done
  "$BIN_DIR/switchyard-load" --url "http://$GATEWAY/v1" -c 1 --stream --seconds "$SECONDS_PER" --label "$1"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

if [ -n "${LOCAL:-}" ]; then
  echo "the default local model, ${SECONDS_PER} s per figure"
else
  echo "a word every ${TOKEN_MS} ms, ${SECONDS_PER} s per figure"
  "$BIN_DIR/switchyard-load" --url "http://$STANDIN/v1" -c 1 --stream --seconds "$SECONDS_PER" --label "direct"
fi
run "no policy" ""
run "data check on the output" '[guardrails]
default = ["out"]
[guardrails.policies.out]
checks = [{ kind = "data", on = "output", action = "mask" }]'
run "pattern check on the output" '[guardrails]
default = ["out"]
[guardrails.policies.out]
checks = [{ kind = "deny", on = "output", patterns = ["launch\\s+codes"], action = "block" }]'
