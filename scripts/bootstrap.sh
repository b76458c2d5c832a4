#!/usr/bin/env bash
# Installs what building and serving Switchyard need and is missing: cmake
# and libclang (llama.cpp's build), bubblewrap (the code sandbox),
# pyflakes (the code assistant's linter), and,
# with --test, a Python virtual environment with the official client SDKs
# the end-to-end tests drive.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test_env=false
[ "${1:-}" = "--test" ] && want_test_env=true

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# bindgen needs libclang itself (libclang.so or libclang-NN.so), which
# Debian ships as libclang-dev; libclang-cpp, which some images carry
# alone, is a different library and does not count.
if ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null \
  && ! compgen -G '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' >/dev/null \
  && ! ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so'; then
  missing+=(libclang-dev)
fi
command -v c++ >/dev/null 2>&1 || missing+=(g++)
# run_code isolates generated code with bubblewrap; prlimit and setpriv
# (util-linux) set its limits and drop it to an unprivileged user.
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
{ command -v prlimit && command -v setpriv; } >/dev/null 2>&1 || missing+=(util-linux)
# The code assistant's lint check runs pyflakes in the sandbox, on the
# system's python3 (the one in /usr, which the sandbox sees).
PATH=/usr/local/bin:/usr/bin:/bin python3 -c 'import pyflakes' >/dev/null 2>&1 \
  || missing+=(python3-pyflakes)
if $want_test_env && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
# The TLS tests make their certificates with the openssl command.
if $want_test_env && ! command -v openssl >/dev/null 2>&1; then
  missing+=(openssl)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing missing packages: ${missing[*]}" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: no apt-get here; install ${missing[*]} with your package manager" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: Rust is not installed; install it with rustup (https://rustup.rs), then rerun" >&2
  exit 1
fi

if $want_test_env; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -r crates/switchyard/tests/python/requirements.txt
fi
