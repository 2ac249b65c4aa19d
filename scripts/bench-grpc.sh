#!/usr/bin/env bash
# make bench-grpc: server CPU per call measured from outside with a standard gRPC client — the
# C++ load generator of ../shared/tools/grpcload (Debian's gRPC 1.51), mutual TLS, 2 connections —
# in one run, against:
#   - the C++ no-op server (grpcload's noop_server): the baseline every ratio is taken against;
#   - a bare grpc-swift-2 server (Benchmarks/BareGRPCServer: default transport configuration, no
#     interceptors, raw bytes in and out): the framework's own cost;
#   - a bare swift-nio-http2 server (Benchmarks/BareNIOHTTP2Server: the same answer from a NIO
#     handler, no gRPC Swift, nothing parsed): the floor of any HTTP/2 handler of our own on this
#     stack (NIO, swift-nio-http2, swift-nio-ssl);
#   - banklinkd in each of VARIANTS (as shipped; with the unary fast path off; with the event loops
#     as the executor; with metrics served — see below): Health/Check, WhoAmI, GetBalance and
#     CreatePayment (the same request each call, so after the first call it measures the
#     idempotent replay: grpcload cannot vary a request; `make bench` measures creation with
#     banklink-load's h2 driver, which makes a key per call);
#   - GetBalance at 8, 32, 64 and 128 calls in flight for every variant, and CreatePayment at 128;
# and banklinkd's RSS idle, at the peak of each run, 2 s after it, and 12 s after the last run.
#
# Servers run on CPU 0, the load generator on CPU 1 (where the machine has two), so "server CPU
# per call" (utime+stime of /proc/PID/stat over the measured window, divided by the calls) is the
# figure to compare; calls/s are bounded by one core and by the generator (about 15 µs a call).
#
# Knobs (environment): DURATION (s per run, default 6), WARMUP (s, default 2), CONNECTIONS
# (default 2), CONCURRENCY (default 64), VARIANTS (default "default nofast"), GRPCLOAD_DIR (default /tmp/grpcload; built with
# ../shared/tools/grpcload/build.sh when missing, installing Debian's gRPC packages if needed).
# Prints a Markdown table of the figures and their ratios, and writes every run's JSON to
# $RESULTS (default .build/bench-grpc.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${DURATION:-6}"
export WARMUP="${WARMUP:-2}" CONNECTIONS="${CONNECTIONS:-2}"
concurrency="${CONCURRENCY:-64}"
results="${RESULTS:-.build/bench-grpc.jsonl}"
tools="$(cd ../shared/tools/grpcload && pwd)"
export GRPCLOAD_DIR="${GRPCLOAD_DIR:-/tmp/grpcload}"

if [ ! -x "$GRPCLOAD_DIR/grpcload" ] || [ ! -x "$GRPCLOAD_DIR/noop_server" ]; then
  if ! pkg-config --exists grpc++ 2>/dev/null; then
    SUDO="$([ "$(id -u)" = 0 ] || echo sudo)"
    $SUDO apt-get install -y libgrpc++-dev libprotobuf-dev protobuf-compiler-grpc pkg-config g++ >/dev/null
  fi
  "$tools/build.sh" "$GRPCLOAD_DIR" >/dev/null
fi
swift build -c release --product banklinkd >/dev/null
swift build -c release --product banklink >/dev/null
swift build -c release --product BareGRPCServer >/dev/null
swift build -c release --product BareNIOHTTP2Server >/dev/null
bin=".build/release"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$(dirname "$results")"
: >"$results"

server_pin=(); export LOAD_CPUS=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then server_pin=(taskset -c 0); LOAD_CPUS=1; fi

"$bin/banklink" dev-certs --out "$work/pki" >/dev/null
pki="$work/pki"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

# Requests, as protobuf bytes: empty (Health/Check, WhoAmI); GetBalance{account_id}; and the
# CreatePayment of banklink-load's pay scenario (1.00 CNY from icbc-cny-001), with a fixed key.
: >"$work/empty.bin"
python3 - "$work" <<'PY'
import sys
work = sys.argv[1]
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)
def field(number, value):
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value
open(f"{work}/balance.bin", "wb").write(field(1, "icbc-cny-001"))
creditor = field(1, "Shanghai Huaxin Trading Co., Ltd.") + field(2, "3100 2011 0904 0012 345") + field(4, "CMBCCNBS") + field(5, "CN")
instruction = field(1, "icbc-cny-001") + field(2, creditor) + field(3, field(1, 100) + field(2, "CNY")) + field(4, "benchmark") + field(6, 2)
open(f"{work}/pay.bin", "wb").write(field(1, "bench-grpc-replay") + field(2, instruction))
PY

daemon_config() {
  local metrics=""
  # The metrics variant serves /metrics (swift-prometheus as the swift-metrics backend), as a
  # production daemon does; the others run with swift-metrics' no-op backend.
  [ "$1" = metrics ] && metrics="\"metrics\": { \"listen\": \"127.0.0.1:$(free_port)\" },"
  cat >"$work/$1.json" <<JSON
{
  $metrics
  "listen": "127.0.0.1:$2",
  "data_dir": "data-$1",
  "tls": { "ca": "pki/ca.pem", "certificate": "pki/server.pem", "key": "pki/server.key" },
  "log_level": "notice",
  "payments": { "approval_threshold_major": 10000000000 },
  "principals": [ { "identity": "viewer", "roles": ["viewer"] }, { "identity": "erp", "roles": ["payer"] } ]
}
JSON
}

cpp_port="$(free_port)"
"${server_pin[@]}" "$GRPCLOAD_DIR/noop_server" --listen "127.0.0.1:$cpp_port" --ca "$pki/ca.pem" --cert "$pki/server.pem" --key "$pki/server.key" \
  >"$work/cpp.log" 2>&1 &
cpp_pid=$!; pids+=("$cpp_pid")
bare_port="$(free_port)"
"${server_pin[@]}" "$bin/BareGRPCServer" --listen "127.0.0.1:$bare_port" --ca "$pki/ca.pem" --cert "$pki/server.pem" --key "$pki/server.key" \
  >"$work/bare.log" 2>&1 &
bare_pid=$!; pids+=("$bare_pid")
nio_port="$(free_port)"
"${server_pin[@]}" "$bin/BareNIOHTTP2Server" --listen "127.0.0.1:$nio_port" --ca "$pki/ca.pem" --cert "$pki/server.pem" --key "$pki/server.key" \
  >"$work/nio.log" 2>&1 &
nio_pid=$!; pids+=("$nio_pid")
# banklinkd variants (VARIANTS, default "default nofast"): default = as shipped (Swift's pool as the
# executor, the unary fast path on); nofast = every call through gRPC Swift
# (BANKLINK_UNARY_FAST_PATH=off); grpcnio = the fast path on grpc-swift-nio-transport instead of
# banklinkd's own transport (BANKLINK_TRANSPORT=grpc-nio); loops = the event loops as the executor
# (BANKLINK_GLOBAL_EXECUTOR=loops);
# metrics = as shipped with metrics.listen set (the Prometheus backend counting every call).
variants="${VARIANTS:-default nofast}"
declare -A vpid vport
for variant in $variants; do
  case "$variant" in
    default) env_vars=(BANKLINK_GLOBAL_EXECUTOR=default) ;;
    nofast) env_vars=(BANKLINK_GLOBAL_EXECUTOR=default BANKLINK_UNARY_FAST_PATH=off) ;;
    grpcnio) env_vars=(BANKLINK_GLOBAL_EXECUTOR=default BANKLINK_TRANSPORT=grpc-nio) ;;
    loops) env_vars=(BANKLINK_GLOBAL_EXECUTOR=loops) ;;
    metrics) env_vars=(BANKLINK_GLOBAL_EXECUTOR=default) ;;
    *) echo "unknown variant $variant" >&2; exit 2 ;;
  esac
  vport[$variant]="$(free_port)"
  daemon_config "$variant" "${vport[$variant]}"
  env "${env_vars[@]}" "${server_pin[@]}" "$bin/banklinkd" --config "$work/$variant.json" 2>"$work/$variant.log" &
  vpid[$variant]=$!; pids+=("${vpid[$variant]}")
done
for port in "$cpp_port" "$bare_port" "$nio_port" "${vport[@]}"; do wait_port "$port"; done
sleep 1

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
idle_rss="bare grpc-swift-2 $(( $(rss_kib "$bare_pid") / 1024 )) MiB, bare swift-nio-http2 $(( $(rss_kib "$nio_pid") / 1024 )) MiB"
for variant in $variants; do idle_rss="$idle_rss, banklinkd ($variant) $(( $(rss_kib "${vpid[$variant]}") / 1024 )) MiB"; done

# measure NAME PID PORT METHOD DATA CERT CONCURRENCY: one run; its JSON (measure.sh's, plus the
# server's peak RSS during the run and its RSS 2 s after) appended to $results.
measure() {
  local name="$1" pid="$2" port="$3" method="$4" data="$5" who="$6" inflight="$7"
  local peak_file="$work/peak.$name"
  echo 0 >"$peak_file"
  ( while kill -0 "$pid" 2>/dev/null; do
      now="$(rss_kib "$pid")"; [ "$now" -gt "$(cat "$peak_file")" ] && echo "$now" >"$peak_file"
      sleep 0.2
    done ) &
  local sampler=$!
  local json
  json="$(CONCURRENCY="$inflight" JSON=1 "$tools/measure.sh" "$pid" "$port" "$method" "$data" \
    "$pki/ca.pem" "$pki/$who.pem" "$pki/$who.key" "$duration" 2>"$work/$name.err")" || { cat "$work/$name.err" >&2; return 1; }
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  sleep 2
  local after; after="$(rss_kib "$pid")"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(name=sys.argv[2], inflight=int(sys.argv[3]), rss_peak_kib=int(sys.argv[4]), rss_after_kib=int(sys.argv[5])); print(json.dumps(r))' \
    "$json" "$name" "$inflight" "$(cat "$peak_file")" "$after" | tee -a "$results" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("%-28s %8.1f us/call %8.0f calls/s  p50 %.0f p99 %.0f us  errors %s" % (r["name"], r["server_cpu_us_per_call"], r["throughput"], r["p50_us"], r["p99_us"], r.get("errors")))'
}

health=/grpc.health.v1.Health/Check
echo "server CPU per call, $concurrency in flight over $CONNECTIONS connections, $duration s a run (server on CPU 0, client on CPU 1)"
measure cpp-noop "$cpp_pid" "$cpp_port" "$health" "$work/empty.bin" viewer "$concurrency"
measure bare-grpc-swift "$bare_pid" "$bare_port" "$health" "$work/empty.bin" viewer "$concurrency"
measure bare-nio-http2 "$nio_pid" "$nio_port" "$health" "$work/empty.bin" viewer "$concurrency"
for variant in $variants; do
  pid="${vpid[$variant]}"; port="${vport[$variant]}"
  measure "$variant-health" "$pid" "$port" "$health" "$work/empty.bin" viewer "$concurrency"
  measure "$variant-whoami" "$pid" "$port" /banklink.v1.AdminService/WhoAmI "$work/empty.bin" viewer "$concurrency"
  measure "$variant-balance" "$pid" "$port" /banklink.v1.AccountService/GetBalance "$work/balance.bin" viewer "$concurrency"
  measure "$variant-pay-replay" "$pid" "$port" /banklink.v1.PaymentService/CreatePayment "$work/pay.bin" erp "$concurrency"
done
echo "GetBalance by calls in flight, every variant and the bare server interleaved"
for inflight in 8 32 128; do
  for variant in $variants; do
    measure "$variant-balance-$inflight" "${vpid[$variant]}" "${vport[$variant]}" /banklink.v1.AccountService/GetBalance "$work/balance.bin" viewer "$inflight"
  done
  measure "bare-grpc-swift-$inflight" "$bare_pid" "$bare_port" "$health" "$work/empty.bin" viewer "$inflight"
  measure "bare-nio-http2-$inflight" "$nio_pid" "$nio_port" "$health" "$work/empty.bin" viewer "$inflight"
  measure "cpp-noop-$inflight" "$cpp_pid" "$cpp_port" "$health" "$work/empty.bin" viewer "$inflight"
done
echo "CreatePayment (replay) at 128 in flight: the RSS while gRPC Swift serves the most calls at once"
for variant in $variants; do
  measure "$variant-pay-replay-128" "${vpid[$variant]}" "${vport[$variant]}" /banklink.v1.PaymentService/CreatePayment "$work/pay.bin" erp 128
done

# After the load ends: banklinkd gives a burst's heap back once a few seconds pass without calls
# (HeapTrimService, every Limits.heapTrimCheckSeconds = 5 s).
sleep 12
settled_rss=""
for variant in $variants; do settled_rss="$settled_rss${settled_rss:+, }banklinkd ($variant) $(( $(rss_kib "${vpid[$variant]}") / 1024 )) MiB"; done

python3 - "$results" "$idle_rss" "$concurrency" "$CONNECTIONS" "$duration" "$settled_rss" <<'PY'
import json, sys
path, idle_rss, concurrency, connections, duration, settled_rss = sys.argv[1:]
runs = {r["name"]: r for r in map(json.loads, open(path))}
base = runs["cpp-noop"]["server_cpu_us_per_call"]
bare = runs["bare-grpc-swift"]["server_cpu_us_per_call"]
mib = lambda kib: f"{int(kib) / 1024:.0f}"
print()
print(f"Server CPU per call as ratios to the C++ no-op server and to the bare grpc-swift-2 server at the same calls in flight "
      f"({concurrency}: {base:.1f} and {bare:.1f} µs); {connections} connections, {duration} s a run.")
print()
print("| server, method | in flight | server CPU µs/call | × C++ no-op | × bare grpc-swift-2 | calls/s | p50 / p99 µs | RSS peak → 2 s after (MiB) | errors |")
print("|---|---|---|---|---|---|---|---|---|")
def baseline(prefix, inflight):
    run = runs.get(prefix if int(inflight) == int(concurrency) else f"{prefix}-{inflight}")
    return run["server_cpu_us_per_call"] if run else None
for name, r in runs.items():
    cpu = r["server_cpu_us_per_call"]
    base = baseline("cpp-noop", r["inflight"])
    bare = baseline("bare-grpc-swift", r["inflight"])
    errors = sum(r.get("errors", {}).values()) if isinstance(r.get("errors"), dict) else r.get("errors", 0)
    print(f"| {name} | {r['inflight']} | {cpu:.1f} | {cpu / base:.2f} | {cpu / bare:.2f} | {r['throughput']:.0f} | "
          f"{r['p50_us']:.0f} / {r['p99_us']:.0f} | {mib(r['rss_peak_kib'])} → {mib(r['rss_after_kib'])} | {errors} |")
print()
print(f"Idle RSS before the runs: {idle_rss}.")
print(f"RSS 12 s after the last run: {settled_rss}.")
PY
