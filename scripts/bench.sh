#!/usr/bin/env bash
# make bench: builds in release mode, starts banklinkd on a temporary data directory and port,
# runs the noop (WhoAmI) and balance (GetBalance) scenarios back to back against the same daemon,
# then noop and balance again paced at half of balance's peak (the latency target, with the
# transport's own latency at that load as the same-run baseline), then pay (CreatePayment,
# durable, auto-approved so it flows on to the simulated bank) with group commit on, against a
# second daemon with group commit off, and against a third that holds every payment for
# approval (the create path alone); prints the ratios and records the figures with the command
# in docs/BENCHMARKS.md. Load comes from `banklink bench`'s lean h2 driver.
#
# Knobs (environment): DURATION (s, default 10), CONCURRENCY (default 32), CONNECTIONS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${DURATION:-10}"
concurrency="${CONCURRENCY:-32}"
connections="${CONNECTIONS:-2}"

swift build -c release --product banklinkd >/dev/null
swift build -c release --product banklink >/dev/null
bin=".build/release"
work="$(mktemp -d)"
daemon_pid=""
nogc_pid=""
held_pid=""
cleanup() {
  for pid in $daemon_pid $nogc_pid $held_pid; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/banklink" dev-certs --out "$work/pki" >/dev/null
cat >"$work/banklinkd.json" <<'JSON'
{
  "listen": "127.0.0.1:0",
  "data_dir": "data",
  "tls": { "ca": "pki/ca.pem", "certificate": "pki/server.pem", "key": "pki/server.key" },
  "log_level": "notice",
  "payments": { "approval_threshold_minor": 1000000000000 },
  "principals": [ { "identity": "viewer", "roles": ["viewer"] }, { "identity": "erp", "roles": ["payer"] } ]
}
JSON
sed -e 's/"data_dir": "data"/"data_dir": "data-nogc"/' -e 's/"log_level": "notice",/"log_level": "notice", "storage": { "group_commit": false },/' \
  "$work/banklinkd.json" >"$work/banklinkd-nogc.json"
sed -e 's/"data_dir": "data"/"data_dir": "data-held"/' -e 's/"approval_threshold_minor": 1000000000000/"approval_threshold_minor": 1/' \
  "$work/banklinkd.json" >"$work/banklinkd-held.json"
# Keep the load generator off the daemon's core where the machine has two or more, so the
# latency measured is the daemon's and not the generator's CPU queueing (PIN=0 disables).
daemon_pin=(); client_pin=()
if [ "${PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  daemon_pin=(taskset -c 0); client_pin=(taskset -c 1)
fi
"${daemon_pin[@]}" "$bin/banklinkd" --config "$work/banklinkd.json" --log-level info 2>"$work/daemon.log" &
daemon_pid=$!
# Waits (bounded) for a daemon's "listening" log line and prints its port.
listening_port() {
  local log="$1" port=""
  for _ in $(seq 1 100); do
    port="$(sed -n 's/.*address=\[ipv4\]127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)"
    [ -n "$port" ] && { echo "$port"; return 0; }
    sleep 0.1
  done
  cat "$log" >&2
  echo "banklinkd did not start" >&2
  return 1
}
port="$(listening_port "$work/daemon.log")"

export BANKLINK_ADDRESS="127.0.0.1:$port" BANKLINK_CA="$work/pki/ca.pem"
export BANKLINK_CERT="$work/pki/viewer.pem" BANKLINK_KEY="$work/pki/viewer.key"
common=(--duration "$duration" --concurrency "$concurrency" --connections "$connections" --json)

# Time the hypervisor gave this VM's CPUs to others during a run ("steal", in ms): stalls no
# code in the VM can avoid, recorded beside the latency figures they distort.
steal_ms() { awk '/^cpu / {print $9 * 1000 / '"$(getconf CLK_TCK)"'}' /proc/stat; }
# Runs one scenario; its JSON goes to $work/NAME.json with the steal during it added.
run() {
  local name="$1"; shift
  local before after
  before="$(steal_ms)"
  "${client_pin[@]}" "$bin/banklink" bench "$@" "${common[@]}" >"$work/$name.raw"
  after="$(steal_ms)"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["steal_ms"]=round(float(sys.argv[3])-float(sys.argv[2])); print(json.dumps(r))' \
    "$work/$name.raw" "$before" "$after" | tee "$work/$name.json"
}

echo "noop (WhoAmI), then balance (GetBalance), $duration s each, concurrency $concurrency, $connections connections"
run noop --scenario noop
run balance --scenario balance
half="$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["throughput_per_s"] / 2))' "$work/balance.json")"
run noop-half --scenario noop --rate "$half"
run balance-half --scenario balance --rate "$half"
rss_kib="$(awk '/VmRSS/ {print $2}' "/proc/$daemon_pid/status")"

# Durable writes: group commit on (this daemon), then off (a second daemon, same load).
export BANKLINK_CERT="$work/pki/erp.pem" BANKLINK_KEY="$work/pki/erp.key"
run pay --scenario pay
kill -TERM "$daemon_pid"; wait "$daemon_pid" || true; daemon_pid=""
"${daemon_pin[@]}" "$bin/banklinkd" --config "$work/banklinkd-nogc.json" --log-level info 2>"$work/nogc.log" &
nogc_pid=$!
export BANKLINK_ADDRESS="127.0.0.1:$(listening_port "$work/nogc.log")"
run pay-nogc --scenario pay
kill -TERM "$nogc_pid"; wait "$nogc_pid" || true; nogc_pid=""
# The create path alone: every payment waits for approval, so nothing flows on to the bank.
"${daemon_pin[@]}" "$bin/banklinkd" --config "$work/banklinkd-held.json" --log-level info 2>"$work/held.log" &
held_pid=$!
export BANKLINK_ADDRESS="127.0.0.1:$(listening_port "$work/held.log")"
run pay-held --scenario pay

python3 - "$work" "$rss_kib" "$duration" "$concurrency" "$connections" <<'PY'
import json, os, subprocess, sys, datetime
work, rss_kib, duration, concurrency, connections = sys.argv[1:]
runs = {name: json.load(open(f"{work}/{name}.json"))
        for name in ["noop", "balance", "noop-half", "balance-half", "pay", "pay-nogc", "pay-held"]}
noop, balance, half, noop_half = runs["noop"], runs["balance"], runs["balance-half"], runs["noop-half"]
pay, pay_nogc, pay_held = runs["pay"], runs["pay-nogc"], runs["pay-held"]
ratio = balance["throughput_per_s"] / noop["throughput_per_s"]
gc_ratio = pay["throughput_per_s"] / max(pay_nogc["throughput_per_s"], 0.001)
pay_ratio = pay["throughput_per_s"] / balance["throughput_per_s"]
held_ratio = pay_held["throughput_per_s"] / balance["throughput_per_s"]
p99_ratio = half["p99_ms"] / max(noop_half["p99_ms"], 0.001)
rss_mb = int(rss_kib) / 1024
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print()
print(f"balance/noop throughput ratio: {ratio:.2f}  (target >= 0.9)")
print(f"balance p99 at half of peak ({half['throughput_per_s']:.0f}/s): {half['p99_ms']:.3f} ms  (target < 2 ms); "
      f"noop at the same load: {noop_half['p99_ms']:.3f} ms; host steal during it: {half['steal_ms']} ms")
print(f"daemon RSS after the runs: {rss_mb:.1f} MB  (target < 50 MB)")
print(f"pay group commit on/off: {gc_ratio:.2f}  (target >= 3)")
print(f"pay/balance: {pay_ratio:.2f}  (target >= 0.7); create path alone (held for approval): {held_ratio:.2f}")

def row(name, r):
    return (f"| {name} | {r['throughput_per_s']:.0f} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | "
            f"{r['p99_ms']:.3f} | {r['p999_ms']:.3f} | {r['errors']} | {r['steal_ms']} |")

section = f"""
## {datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M')} UTC — commit {commit}

Command: `DURATION={duration} CONCURRENCY={concurrency} CONNECTIONS={connections} make bench`
(release build; `banklink bench` h2 driver; daemon and load generator pinned to separate cores
of this {os.cpu_count()}-core VM, over loopback with mutual TLS; "steal" is CPU time the
hypervisor took from this VM during the run).

| scenario | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | steal ms |
|---|---|---|---|---|---|---|---|
{row("noop (WhoAmI)", noop)}
{row("balance (GetBalance)", balance)}
{row(f"noop at half of balance's peak ({noop_half['throughput_per_s']:.0f}/s)", noop_half)}
{row(f"balance at half of peak ({half['throughput_per_s']:.0f}/s)", half)}
{row("pay (CreatePayment, auto-approved, on to the bank), group commit on", pay)}
{row("pay, group commit off", pay_nogc)}
{row("pay, create path alone (held for approval), group commit on", pay_held)}

- balance/noop throughput: **{ratio:.2f}×** (target ≥ 0.9×)
- GetBalance p99 at half of peak: **{half['p99_ms']:.3f} ms** (target < 2 ms); the transport alone
  (noop) at the same load: {noop_half['p99_ms']:.3f} ms (ratio {p99_ratio:.2f})
- daemon RSS after the query runs: **{rss_mb:.1f} MB** (target < 50 MB)
- pay with group commit on/off: **{gc_ratio:.2f}×** (target ≥ 3×)
- pay/balance: **{pay_ratio:.2f}×** (target ≥ 0.7×); the create path alone: {held_ratio:.2f}×
"""
path = "docs/BENCHMARKS.md"
header = """# Benchmarks

Figures from `make bench` (scripts/bench.sh). Each run measures its own baseline in the same
run — the `noop` scenario (WhoAmI: TLS, HTTP/2, authorization, no storage) — and reports the
other scenarios as ratios against it, because this machine is shared and noisy. Newest first.
"""
existing = open(path).read() if os.path.exists(path) else header
if existing.startswith("# Benchmarks"):
    head, _, rest = existing.partition("Newest first.\n")
    text = head + "Newest first.\n" + section + rest
else:
    text = header + section
open(path, "w").write(text)
print(f"recorded in {path}")
PY
