#!/usr/bin/env bash
# make bench-alerts (and the end of make bench): alert fan-out. Builds in release mode, starts
# banklinkd with a rule set that blocks every payment (one risk_hit alert per CreatePayment,
# nothing reserved), and runs `banklink-load --scenario alerts`: SUBSCRIBERS live SubscribeAlerts
# streams while payments arrive at RATE per second, measuring the time from each alert's
# timestamp (taken in the write transaction, before the commit) to its arrival at every
# subscriber. Runs, against the same daemon:
#   1. one subscriber (the baseline: commit-to-delivery without fan-out);
#   2. 100 subscribers, then SUBSCRIBERS subscribers;
#   3. SUBSCRIBERS subscribers plus STALLED that never read (a stalled subscriber must not change
#      the others' latency);
# and records p50/p99, deliveries and each side's CPU per delivery in docs/BENCHMARKS.md with the
# command.
#
# Knobs (environment): DURATION (s, default 10), RATE (alerts/s, default 500), SUBSCRIBERS
# (default 1000), STALLED (default 10), CONNECTIONS (subscriber connections, default 8).
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${DURATION:-10}"
rate="${RATE:-500}"
subscribers="${SUBSCRIBERS:-1000}"
stalled="${STALLED:-10}"
connections="${CONNECTIONS:-8}"

swift build -c release --product banklinkd >/dev/null
swift build -c release --product banklink >/dev/null
swift build -c release --product banklink-load >/dev/null
bin=".build/release"
work="$(mktemp -d)"
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then kill -TERM "$daemon_pid" || true; wait "$daemon_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/banklink" dev-certs --out "$work/pki" >/dev/null
daemon_pin=(); client_pin=(); writer_cpus=""
if [ "${PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  daemon_pin=(taskset -c 0); client_pin=(taskset -c 1); writer_cpus='"writer_cpus": [1]'
fi
cat >"$work/rules.json" <<'JSON'
{"rules": [{"id": "fanout", "description": "every payment: one alert each", "expression": "payment.amount > 0",
            "action": "RULE_ACTION_BLOCK", "severity": "SEVERITY_WARNING"}]}
JSON
cat >"$work/banklinkd.json" <<JSON
{
  "listen": "127.0.0.1:0",
  "data_dir": "data",
  "tls": { "ca": "pki/ca.pem", "certificate": "pki/server.pem", "key": "pki/server.key" },
  "log_level": "notice",
  "storage": { $writer_cpus },
  "risk": { "rule_set_file": "rules.json" },
  "principals": [ { "identity": "viewer", "roles": ["viewer"] }, { "identity": "erp", "roles": ["payer"] } ]
}
JSON
"${daemon_pin[@]}" "$bin/banklinkd" --config "$work/banklinkd.json" --log-level info 2>"$work/daemon.log" &
daemon_pid=$!
port=""
for _ in $(seq 1 100); do
  port="$(sed -n 's/.*address=\[ipv4\]127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$work/daemon.log" | head -n 1)"
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/daemon.log" >&2; echo "banklinkd did not start" >&2; exit 1; }
export BANKLINK_ADDRESS="127.0.0.1:$port" BANKLINK_CA="$work/pki/ca.pem"
export BANKLINK_CERT="$work/pki/viewer.pem" BANKLINK_KEY="$work/pki/viewer.key"

run() {
  local name="$1"; shift
  "${client_pin[@]}" "$bin/banklink-load" --scenario alerts --driver grpc-swift --rate "$rate" --duration "$duration" \
    --concurrency 16 --connections "$connections" --payer-cert "$work/pki/erp.pem" --payer-key "$work/pki/erp.key" \
    --server-pid "$daemon_pid" --json "$@" | tee "$work/$name.json"
}

# Between runs: the daemon lets go of the last run's streams (a backlog may still be draining).
pause() { sleep "${PAUSE:-5}"; }
echo "alert fan-out: $rate alerts/s for $duration s; 1 subscriber, 100, $subscribers, then $subscribers + $stalled stalled"
run one --subscribers 1 --connections 1; pause
run hundred --subscribers 100; pause
run many --subscribers "$subscribers"; pause
run stalled --subscribers "$subscribers" --stalled "$stalled"
kill -TERM "$daemon_pid"; wait "$daemon_pid" || true; daemon_pid=""

python3 - "$work" "$duration" "$rate" "$subscribers" "$stalled" "$connections" <<'PY'
import json, subprocess, sys, datetime
work, duration, rate, subscribers, stalled, connections = sys.argv[1:]
runs = [("1 subscriber (baseline)", json.load(open(f"{work}/one.json"))),
        ("100 subscribers", json.load(open(f"{work}/hundred.json"))),
        (f"{subscribers} subscribers", json.load(open(f"{work}/many.json"))),
        (f"{subscribers} subscribers + {stalled} stalled", json.load(open(f"{work}/stalled.json")))]
base = runs[0][1]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
lines = [
    "",
    f"### Alert fan-out, {datetime.date.today().isoformat()} (commit {commit})",
    "",
    f"`make bench-alerts` (DURATION={duration} RATE={rate} SUBSCRIBERS={subscribers} STALLED={stalled} CONNECTIONS={connections}):",
    "daemon on CPU 0 (writer thread on CPU 1), `banklink-load --scenario alerts` on CPU 1; latency is from the alert's",
    "timestamp (in the write transaction, before the commit; millisecond resolution) to its arrival at each live subscriber.",
    "",
    "| run | alerts/s | deliveries/s (missing) | p50 ms | p99 ms | p99 / baseline | daemon CPU, µs per delivery | load generator CPU, µs per delivery |",
    "|---|---|---|---|---|---|---|---|",
]
d = float(duration)
for name, r in runs:
    ratio = r["p99_ms"] / base["p99_ms"] if base["p99_ms"] > 0 else float("nan")
    server = f"{r['server_cpu_s'] / d * 100:.0f} %, {r['server_us_per_delivery']}" if "server_cpu_s" in r else "—"
    client = f"{r['client_cpu_s'] / d * 100:.0f} %, {r['client_us_per_delivery']}" if "client_cpu_s" in r else "—"
    lines.append(f"| {name} | {r['alerts_per_s']} | {r['throughput_per_s']:.0f} ({r['deliveries_missing']}) | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {ratio:.1f}× | {server} | {client} |")
text = "\n".join(lines) + "\n"
print(text)
with open("docs/BENCHMARKS.md", "a") as f:
    f.write(text)
PY
