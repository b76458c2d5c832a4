#!/usr/bin/env bash
# Fuzzes Switchyard's decoders with cargo-fuzz (libFuzzer, AddressSanitizer):
# the OpenAI, Anthropic and Responses request bodies, upstream SSE streams,
# AWS event streams, configuration files with interpolation and document
# extraction (HTML, Markdown, text, PDF). Each target starts from the
# committed seeds (fuzz/seeds/TARGET) plus what earlier runs here kept
# (fuzz/corpus/TARGET, not committed). A crash stops the script with the
# failing input under fuzz/artifacts/TARGET/; replay it with
#   cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...
#
#   scripts/fuzz.sh                  # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh sse_stream config
#
# libFuzzer needs a nightly toolchain; cargo-fuzz is installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(openai_chat_request anthropic_messages_request responses_request
           sse_stream aws_event_stream config document_extraction)
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain (libFuzzer's instrumentation needs it)" >&2
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi

# One build for every target: they share their dependencies.
cargo +nightly fuzz build
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  log=$(mktemp)
  if ! cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target FAILED; the input is under fuzz/artifacts/$target/" >&2
    rm -f "$log"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz: $target: $runs executions in ${seconds} s, no crash"
  rm -f "$log"
done
