#!/usr/bin/env bash
# make bench: builds in release mode, starts banklinkd on a temporary data directory and port,
# runs the noop (WhoAmI) and balance (GetBalance) scenarios back to back against the same daemon,
# then noop and balance again paced at half of balance's peak (the latency target, with the
# transport's own latency at that load as the same-run baseline). Then ROUNDS rounds of five
# runs each: balance, pay (CreatePayment, durable, auto-approved so it flows on to the simulated
# bank) with group commit on, pay against a second daemon with group commit off, against a
# third that holds every payment for approval (the create path alone), and against a fourth
# whose writer thread shares the event loop's core. The four daemons run side by side and the
# rounds interleave them, so a slow spell of this shared machine lands on every scenario of a
# round rather than on one of them; the ratios are taken within each round and reported as the
# median with the range. Prints them and records the figures with the
# command in docs/BENCHMARKS.md. Load comes from `banklink-load`'s lean h2 driver. Each round
# ends with approve (ApprovePayment: a P-256 signature checked, an approval journaled, the payment
# released) beside pay, both through the full grpc-swift client; see the comment at that step.
#
# Knobs (environment): DURATION (s, default 10), CONCURRENCY (default 32), CONNECTIONS (default 2),
# ROUNDS (default 3), SETTLE (s of pause after each run that leaves bank work behind, default 3).
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${DURATION:-10}"
concurrency="${CONCURRENCY:-32}"
connections="${CONNECTIONS:-2}"
rounds="${ROUNDS:-3}"
case "$rounds" in '' | *[!0-9]* | 0) echo "ROUNDS must be a positive integer, got '$rounds'" >&2; exit 2 ;; esac
# Pause after each pay run: the simulated bank settles a payment 2 s after receiving it, and that
# work must not fall into the next run, which measures another daemon on the same core.
settle_s="${SETTLE:-3}"

swift build -c release --product banklinkd >/dev/null
swift build -c release --product banklink >/dev/null
swift build -c release --product banklink-load >/dev/null
bin=".build/release"
work="$(mktemp -d)"
daemon_pid=""
nogc_pid=""
held_pid=""
shared_pid=""
approve_pid=""
rules_pid=""
cleanup() {
  for pid in $daemon_pid $nogc_pid $held_pid $shared_pid $approve_pid $rules_pid; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/banklink" dev-certs --out "$work/pki" >/dev/null
# Keep the load generator off the daemon's core where the machine has two or more, so the
# latency measured is the daemon's and not the generator's CPU queueing (PIN=0 disables). The
# daemon's writer thread (synced commits) goes to the other core too, as `storage.writer_cpus`
# is meant for: its wake-ups would otherwise preempt the event loop about twice per payment. A
# fourth daemon keeps it on the event loop's core, to show what that costs.
daemon_pin=(); client_pin=(); writer_cpus=""
if [ "${PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  daemon_pin=(taskset -c 0); client_pin=(taskset -c 1); writer_cpus='"writer_cpus": [1]'
fi
# config NAME DATA_DIR STORAGE_SETTINGS APPROVAL_THRESHOLD: writes $work/NAME.json.
config() {
  cat >"$work/$1.json" <<JSON
{
  "listen": "127.0.0.1:0",
  "data_dir": "$2",
  "tls": { "ca": "pki/ca.pem", "certificate": "pki/server.pem", "key": "pki/server.key" },
  "log_level": "notice",
  "storage": { $3 },
  "payments": { "approval_threshold_major": $4 },
  "principals": [ { "identity": "viewer", "roles": ["viewer"] }, { "identity": "erp", "roles": ["payer"] } ]
}
JSON
}
auto_approve=10000000000
config banklinkd data "$writer_cpus" "$auto_approve"
config banklinkd-nogc data-nogc "\"group_commit\": false${writer_cpus:+, $writer_cpus}" "$auto_approve"
config banklinkd-held data-held "$writer_cpus" 0
config banklinkd-shared data-shared "" "$auto_approve"
# Risk rules: the example rule set of docs/, otherwise as the first daemon. Its duplicate and
# burst rules send the bench's payments (the same creditor and amount, back to back) to review,
# so they are held for approval: compared with the "held" daemon (every payment held, no rules).
cp docs/rules.example.json "$work/rules.json"
config banklinkd-rules data-rules "$writer_cpus" "$auto_approve"
python3 - "$work/banklinkd-rules.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
config["risk"] = {"rule_set_file": "rules.json"}
json.dump(config, open(sys.argv[1], "w"), indent=2)
PY
# Approvals: every payment waits for one approver, without a one-time password. A code is accepted
# once per principal and 30 s step, so a load of OTP approvals would need thousands of enrolled
# approvers; the OTP check (unseal the secret, HMAC) is measured in `make microbench` instead.
cat >"$work/approve-policy.json" <<JSON
{"rules": [{"id": "all", "match": {"min_amount_minor": "1"},
  "requirement": {"levels": [{"required_approvals": 1, "roles": ["ROLE_APPROVER"]}],
                  "approval_window_seconds": "86400", "require_otp": false}}]}
JSON
cat >"$work/banklinkd-approve.json" <<JSON
{
  "listen": "127.0.0.1:0",
  "data_dir": "data-approve",
  "tls": { "ca": "pki/ca.pem", "certificate": "pki/server.pem", "key": "pki/server.key" },
  "log_level": "notice",
  "storage": { $writer_cpus },
  "payments": { "approval_policy_file": "approve-policy.json" },
  "principals": [ { "identity": "erp", "roles": ["payer"] }, { "identity": "alice", "roles": ["approver"] } ]
}
JSON
prepare="${PREPARE:-$(( (duration + 3) * 1500 ))}"
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
  "${client_pin[@]}" "$bin/banklink-load" "$@" "${common[@]}" >"$work/$name.raw"
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

# Durable writes, in interleaved rounds: balance and pay (group commit on) on the first daemon,
# pay on a second with group commit off and on a third that holds payments for approval.
"${daemon_pin[@]}" "$bin/banklinkd" --config "$work/banklinkd-nogc.json" --log-level info 2>"$work/nogc.log" &
nogc_pid=$!
"${daemon_pin[@]}" "$bin/banklinkd" --config "$work/banklinkd-held.json" --log-level info 2>"$work/held.log" &
held_pid=$!
"${daemon_pin[@]}" "$bin/banklinkd" --config "$work/banklinkd-shared.json" --log-level info 2>"$work/shared.log" &
shared_pid=$!
"${daemon_pin[@]}" "$bin/banklinkd" --config "$work/banklinkd-approve.json" --log-level info 2>"$work/approve.log" &
approve_pid=$!
"${daemon_pin[@]}" "$bin/banklinkd" --config "$work/banklinkd-rules.json" --log-level info 2>"$work/rules.log" &
rules_pid=$!
gc_address="127.0.0.1:$port"
nogc_address="127.0.0.1:$(listening_port "$work/nogc.log")"
held_address="127.0.0.1:$(listening_port "$work/held.log")"
shared_address="127.0.0.1:$(listening_port "$work/shared.log")"
approve_address="127.0.0.1:$(listening_port "$work/approve.log")"
rules_address="127.0.0.1:$(listening_port "$work/rules.log")"
echo "$rounds rounds of balance, pay (group commit on), pay (off), pay (held for approval), pay (writer on the loop's core)"
for round in $(seq 1 "$rounds"); do
  BANKLINK_CERT="$work/pki/viewer.pem" BANKLINK_KEY="$work/pki/viewer.key" BANKLINK_ADDRESS="$gc_address" \
    run "balance-r$round" --scenario balance
  export BANKLINK_CERT="$work/pki/erp.pem" BANKLINK_KEY="$work/pki/erp.key"
  BANKLINK_ADDRESS="$gc_address" run "pay-r$round" --scenario pay; sleep "$settle_s"
  BANKLINK_ADDRESS="$nogc_address" run "pay-nogc-r$round" --scenario pay; sleep "$settle_s"
  BANKLINK_ADDRESS="$held_address" run "pay-held-r$round" --scenario pay
  BANKLINK_ADDRESS="$rules_address" run "pay-rules-r$round" --scenario pay
  BANKLINK_ADDRESS="$shared_address" run "pay-shared-r$round" --scenario pay; sleep "$settle_s"
  # approve beside pay, both with the grpc-swift client (the approve scenario needs it): pay on
  # the first daemon (auto-approved), approve on the approvals daemon, each approval releasing
  # its payment to the bank as pay's creation does.
  BANKLINK_ADDRESS="$gc_address" run "pay-grpc-r$round" --scenario pay --driver grpc-swift; sleep "$settle_s"
  BANKLINK_CERT="$work/pki/alice.pem" BANKLINK_KEY="$work/pki/alice.key" BANKLINK_ADDRESS="$approve_address" \
    run "approve-r$round" --scenario approve --driver grpc-swift --prepare "$prepare" \
    --payer-cert "$work/pki/erp.pem" --payer-key "$work/pki/erp.key"; sleep "$settle_s"
done
for pid in $daemon_pid $nogc_pid $held_pid $shared_pid $approve_pid $rules_pid; do kill -TERM "$pid"; wait "$pid" || true; done
daemon_pid=""; nogc_pid=""; held_pid=""; shared_pid=""; approve_pid=""; rules_pid=""
# Each daemon logs its group commit counts when it stops: payments per commit, for the record.
batch() { sed -n 's/.*group_commit_commits=\([0-9]*\).*group_commit_writes=\([0-9]*\).*/\2 \1/p' "$1" | awk '{ if ($2 > 0) printf "%.1f", $1 / $2 }'; }
gc_batch="$(batch "$work/daemon.log")"
held_batch="$(batch "$work/held.log")"

python3 - "$work" "$rss_kib" "$duration" "$concurrency" "$connections" "$rounds" "$gc_batch" "$held_batch" "$settle_s" <<'PY'
import json, os, statistics, subprocess, sys, datetime
work, rss_kib, duration, concurrency, connections, rounds, gc_batch, held_batch, settle_s = sys.argv[1:]
rounds = int(rounds)
load = lambda name: json.load(open(f"{work}/{name}.json"))
noop, balance, half, noop_half = load("noop"), load("balance"), load("balance-half"), load("noop-half")
per_round = [{kind: load(f"{kind}-r{r}") for kind in ["balance", "pay", "pay-nogc", "pay-held", "pay-rules", "pay-shared", "pay-grpc", "approve"]}
             for r in range(1, rounds + 1)]
tput = lambda run: run["throughput_per_s"]
ratio = tput(balance) / tput(noop)
p99_ratio = half["p99_ms"] / max(noop_half["p99_ms"], 0.001)
rss_mb = int(rss_kib) / 1024

def spread(values):
    """Median and range of a per-round ratio."""
    return statistics.median(values), min(values), max(values)

gc = spread([tput(r["pay"]) / max(tput(r["pay-nogc"]), 0.001) for r in per_round])
pay = spread([tput(r["pay"]) / tput(r["balance"]) for r in per_round])
held = spread([tput(r["pay-held"]) / tput(r["balance"]) for r in per_round])
shared = spread([tput(r["pay-shared"]) / tput(r["balance"]) for r in per_round])
approve = spread([tput(r["approve"]) / max(tput(r["pay-grpc"]), 0.001) for r in per_round])
rules = spread([tput(r["pay-rules"]) / max(tput(r["pay-held"]), 0.001) for r in per_round])
fmt = lambda s: f"{s[0]:.2f}× (rounds: {s[1]:.2f}–{s[2]:.2f})"
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print()
print(f"balance/noop throughput ratio: {ratio:.2f}  (target >= 0.9)")
print(f"balance p99 at half of peak ({tput(half):.0f}/s): {half['p99_ms']:.3f} ms  (target < 2 ms); "
      f"noop at the same load: {noop_half['p99_ms']:.3f} ms; host steal during it: {half['steal_ms']} ms")
print(f"daemon RSS after the query runs: {rss_mb:.1f} MB  (target < 50 MB)")
print(f"pay group commit on/off: {fmt(gc)}  (target >= 3)")
print(f"pay/balance: {fmt(pay)}  (target >= 0.7); create path alone (held for approval): {fmt(held)}")
print(f"pay/balance with the writer thread on the event loop's core: {fmt(shared)}")
print(f"approve/pay (grpc-swift client, each approval releasing its payment): {fmt(approve)}")
print(f"pay with the example rule set / pay held without rules: {fmt(rules)}  (target >= 0.9)")
print(f"group-committed writes per commit: {gc_batch or '?'} (pay), {held_batch or '?'} (held)")

def row(name, r):
    return (f"| {name} | {r['throughput_per_s']:.0f} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | "
            f"{r['p99_ms']:.3f} | {r['p999_ms']:.3f} | {r['errors']} | {r['steal_ms']} |")

round_rows = "\n".join(
    "\n".join([
        row(f"round {i}: balance", r["balance"]),
        row(f"round {i}: pay (CreatePayment, auto-approved, on to the bank), group commit on", r["pay"]),
        row(f"round {i}: pay, group commit off", r["pay-nogc"]),
        row(f"round {i}: pay, create path alone (held for approval), group commit on", r["pay-held"]),
        row(f"round {i}: pay with the example rule set (sent to review: held), group commit on", r["pay-rules"]),
        row(f"round {i}: pay, group commit on, writer thread on the event loop's core", r["pay-shared"]),
        row(f"round {i}: pay, grpc-swift client", r["pay-grpc"]),
        row(f"round {i}: approve (ApprovePayment, P-256 signature, no OTP), grpc-swift client", r["approve"]),
    ])
    for i, r in enumerate(per_round, 1))
section = f"""
## {datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M')} UTC — commit {commit}

Command: `DURATION={duration} CONCURRENCY={concurrency} CONNECTIONS={connections} ROUNDS={rounds} SETTLE={settle_s} make bench`
(release build; `banklink-load` h2 driver; daemons pinned to core 0 and the load generator to
core 1 of this {os.cpu_count()}-core VM, over loopback with mutual TLS; the daemons' writer thread on
core 1 (`storage.writer_cpus`) except in the "writer on the event loop's core" rows; "steal" is
CPU time the hypervisor took from this VM during the run; the pay rounds interleave four daemons,
pausing {settle_s} s after each run whose payments flow on to the simulated bank).

| scenario | calls/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | steal ms |
|---|---|---|---|---|---|---|---|
{row("noop (WhoAmI)", noop)}
{row("balance (GetBalance)", balance)}
{row(f"noop at half of balance's peak ({tput(noop_half):.0f}/s)", noop_half)}
{row(f"balance at half of peak ({tput(half):.0f}/s)", half)}
{round_rows}

- balance/noop throughput: **{ratio:.2f}×** (target ≥ 0.9×)
- GetBalance p99 at half of peak: **{half['p99_ms']:.3f} ms** (target < 2 ms); the transport alone
  (noop) at the same load: {noop_half['p99_ms']:.3f} ms (ratio {p99_ratio:.2f})
- daemon RSS after the query runs: **{rss_mb:.1f} MB** (target < 50 MB)
- pay with group commit on/off: **{fmt(gc)}** (target ≥ 3×)
- pay/balance: **{fmt(pay)}** (target ≥ 0.7×); the create path alone: {fmt(held)}; with the
  writer thread on the event loop's core: {fmt(shared)}
- approve/pay, both through the grpc-swift client: **{fmt(approve)}** (each approval checks a
  P-256 signature, journals it and releases the payment; no OTP — see scripts/bench.sh)
- pay with the example rule set (docs/rules.example.json: features, 9 rules, the explanation
  of those that fire, a risk_hit alert per payment) / the create path held without rules:
  **{fmt(rules)}** (target ≥ 0.9×)
- group-committed writes per commit: {gc_batch or '?'} (pay, including the bank side's updates),
  {held_batch or '?'} (held)
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
