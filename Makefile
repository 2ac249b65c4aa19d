# BankLink — developer entry points. The README gives two commands: `make run` and `make test`.
#
#   make run     install system packages, build, create the dev PKI if missing, start banklinkd
#   make test    install system packages, check generated code, build, run every test
#   make certs   create the development PKI under certs/dev (kept if it exists)
#   make protos  regenerate Sources/BankLinkProto from proto/
#   make bench   release build; noop vs balance, then rounds of balance and pay (group commit
#                on/off, held), then alert fan-out; records docs/BENCHMARKS.md
#   make bench-grpc  server CPU per call under the standard C++ gRPC client (../shared/tools/grpcload):
#                    C++ no-op, bare grpc-swift-2, bare swift-nio-http2, banklinkd with and without
#                    the unary fast path, RSS
#   make bench-alerts  alert fan-out alone: 1 subscriber, 1,000, 1,000 + 10 stalled at 500 alerts/s
#   make bench-formats statement readers on a 1,000,000-entry camt.053 and MT940: entries/s, peak RSS
#   make bench-reconcile reconciliation of ENTRIES (1,000,000) entries against as many payments
#   make bench-startup  time to READY=1 with PAYMENTS (1,000,000) settled payments beside an empty data dir
#   make attack-test the attack suite alone (raw HTTP/2 header fuzzing, Watch slots, oversized
#                    strings, crafted certificates, connection and buffer floods) against the
#                    real server and daemon over mutual TLS (make test runs it too)
#   make crash-test  kill -9 banklinkd repeatedly under payment load and check nothing was lost
#                    or paid twice (make test runs a short form)
#   make fuzz    the rule language's mutation fuzzer for a million inputs with a random seed

SWIFT     ?= swift
BIN       := .build/debug
APT_PKGS  := liblmdb-dev libxml2-dev pkg-config protobuf-compiler zbar-tools python3-prometheus-client libgrpc++-dev libprotobuf-dev g++
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build certs run run-files test unit-tests interop protos protos-check bench bench-grpc bench-alerts bench-formats bench-reconcile bench-startup microbench crash-test attack-test fuzz clean

all: build

# System packages: LMDB (the store), protoc (generated-code check), zbarimg (reads back the
# QR code `banklink otp enroll` prints, in a test) and gRPC C++ (the interop check's C++ client).
# Installed only if missing.
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build

certs: build
	@if [ -f certs/dev/ca.pem ]; then echo "certs/dev exists (delete it or run '$(BIN)/banklink dev-certs --force' to replace it)"; \
	else $(BIN)/banklink dev-certs --out certs/dev; fi

run: certs
	$(BIN)/banklinkd

# The same daemon reaching its bank through host-to-host files (pain.001 out, pain.002 and
# camt.053/054 in, under ./var-files/h2h), with the embedded simulator playing the bank.
run-files: certs
	$(BIN)/banklinkd --config docs/examples/banklinkd-files.json

protos: deps
	scripts/generate-protos.sh

protos-check: deps
	scripts/generate-protos.sh --check

# Most tests start a real server over mutual TLS or a real banklinkd; with every test of the
# suite running at once, a 2-core machine starves them past their deadlines. At most TEST_WIDTH
# tests run at a time (Swift Testing's SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH). The
# connection attacks (socket floods, second-scale deadlines) run on their own after the rest.
TEST_WIDTH ?= 6

# Each run is watched (scripts/run-tests.sh): a hung test fails it after TEST_TIMEOUT seconds,
# naming the tests still running and printing the test process's stacks.
TEST_TIMEOUT ?= 900

# Every daemon the suite starts logs at debug level into TEST_LOG_DIR; after the suite,
# scripts/check-log-secrets.sh greps all of it for key material, OTP secrets and account numbers.
TEST_LOG_DIR ?= .build/test-logs

unit-tests: build
	$(SWIFT) build --build-tests
	rm -rf $(TEST_LOG_DIR) && mkdir -p $(TEST_LOG_DIR)
	BANKLINK_TEST_LOG_DIR=$(abspath $(TEST_LOG_DIR)) SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH=$(TEST_WIDTH) SWIFT=$(SWIFT) scripts/run-tests.sh --timeout $(TEST_TIMEOUT) -- --skip-build --skip ConnectionAttackTests
	SWIFT=$(SWIFT) scripts/run-tests.sh --timeout $(TEST_TIMEOUT) -- --skip-build --filter ConnectionAttackTests
	scripts/check-log-secrets.sh $(TEST_LOG_DIR)

interop: build
	scripts/interop-check.sh

# The whole suite: stale generated code, every Swift test (real LMDB, real mutual TLS, the real
# banklinkd process), then a stock Python gRPC client calling Health/Check over mutual TLS.
test: protos-check unit-tests interop

attack-test: build
	SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH=$(TEST_WIDTH) $(SWIFT) test --filter BankLinkAttackTests --skip ConnectionAttackTests
	$(SWIFT) test --skip-build --filter ConnectionAttackTests

# The rule language's mutation fuzzer, longer than in make test and with a random seed
# (ITERATIONS, SEED to replay); the input being tried is kept in
# Tests/BankLinkRulesTests/Fuzz/crash-last.cel, so a crash leaves it behind.
fuzz: build
	BANKLINK_FUZZ_ITERATIONS=$${ITERATIONS:-1000000} BANKLINK_FUZZ_SEED=$${SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
	BANKLINK_FUZZ_SAVE=1 $(SWIFT) test --filter FuzzTests

crash-test: build
	BANKLINK_CRASH_ROUNDS=$${ROUNDS:-6} BANKLINK_CRASH_LOAD_MS=$${LOAD_MS:-3000} $(SWIFT) test --filter CrashTests

bench: deps
	scripts/bench.sh
	scripts/bench-alerts.sh

bench-alerts: deps
	scripts/bench-alerts.sh

bench-grpc: deps
	scripts/bench-grpc.sh

bench-formats: deps
	scripts/bench-formats.sh

bench-startup: deps
	scripts/bench-startup.sh

bench-reconcile: deps
	$(SWIFT) build -c release --product ReconcileBenchmark
	.build/release/ReconcileBenchmark

# Storage micro-benchmarks (ordo-one/benchmark, release build): the LMDB read behind GetBalance
# and group-committed CreatePayment writes, each beside a same-run baseline.
microbench: deps
	$(SWIFT) package benchmark --target StorageBenchmarks --target RulesBenchmarks

clean:
	rm -rf .build var
