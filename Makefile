# Switchyard's entry points. `make run` and `make test` do all the set-up a
# fresh machine needs (see scripts/bootstrap.sh).

CARGO ?= cargo
# The Redis the shared-state tests use (a local one by default).
export SWITCHYARD_TEST_REDIS_URL ?= redis://127.0.0.1:6379
# The PostgreSQL the state tests run against besides SQLite (each test in a
# schema of its own).
export SWITCHYARD_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
RELEASE_BIN := target/release/switchyard
DEBUG_BIN := target/debug/switchyard

.PHONY: run build models test lint bootstrap bench-load

## Build, fetch the default model, and serve (127.0.0.1:8080 unless CONFIG or LISTEN say otherwise).
run: bootstrap
	$(CARGO) build --release -p switchyard
	$(RELEASE_BIN) models pull
	exec $(RELEASE_BIN) serve $(if $(CONFIG),--config $(CONFIG)) $(if $(LISTEN),--listen $(LISTEN))

build: bootstrap
	$(CARGO) build --release -p switchyard

## Fetch the default models into the cache (idempotent).
models:
	$(CARGO) run --quiet -p switchyard -- models pull

## The whole test suite: unit, end-to-end, and the official SDKs.
test:
	scripts/bootstrap.sh --test
	# Built as the tests build it (their dev-dependency features), so the
	# test run below does not build the workspace a second time.
	$(CARGO) test --workspace --no-run
	$(DEBUG_BIN) models pull
	$(CARGO) test --workspace

## Formatting and lints, as CI runs them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bootstrap:
	scripts/bootstrap.sh

## Gateway overhead against the stand-in upstream (requests/s, added latency, TTFT, RSS).
bench-load:
	bench/load.sh
