#!/usr/bin/env bash
# make bench-startup: time from starting banklinkd to READY=1 (it listens) with a data directory
# of PAYMENTS (default 1,000,000) settled payments, beside the same-run baseline of an empty
# data directory. Release build; the payments are written directly by the reconciliation
# benchmark's setup (PAYMENTS_ONLY_DATA_DIR). Three starts of each, alternating; reports the
# median and the ratio. Records the figures with the command in docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
payments="${PAYMENTS:-1000000}"
swift build -c release --product banklinkd >/dev/null
swift build -c release --product banklink >/dev/null
swift build -c release --product ReconcileBenchmark >/dev/null
bin=".build/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin/banklink" dev-certs --out "$work/certs" >/dev/null
ENTRIES="$payments" PAYMENTS_ONLY_DATA_DIR="$work/large" "$bin/ReconcileBenchmark"
mkdir -p "$work/empty"
for name in large empty; do
  cat >"$work/$name.json" <<JSON
{"listen": "127.0.0.1:0", "data_dir": "$work/$name", "connector": {"history_days": 1},
 "storage": {"map_size_mib": 16384},
 "tls": {"ca": "$work/certs/ca.pem", "certificate": "$work/certs/server.pem", "key": "$work/certs/server.key"},
 "principals": [{"identity": "admin", "roles": ["admin"]}]}
JSON
done
python3 - "$bin/banklinkd" "$work" "$payments" <<'PY'
import os, socket, subprocess, sys, time, statistics, datetime
daemon, work, payments = sys.argv[1], sys.argv[2], int(sys.argv[3])
def start(name):
    path = f"{work}/notify-{name}.sock"
    if os.path.exists(path): os.unlink(path)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(path)
    notify.settimeout(120)
    begun = time.monotonic()
    process = subprocess.Popen([daemon, "--config", f"{work}/{name}.json", "--log-level", "error"],
                               env={**os.environ, "NOTIFY_SOCKET": path})
    try:
        while True:
            message = notify.recv(4096).decode()
            if message.startswith("READY=1"):
                return time.monotonic() - begun
    finally:
        process.terminate()
        process.wait(timeout=30)
        notify.close()
runs = {"empty": [], "large": []}
for _ in range(3):
    for name in ("empty", "large"):
        runs[name].append(start(name))
empty, large = statistics.median(runs["empty"]), statistics.median(runs["large"])
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
text = "\n".join([
    "", f"### Start-up, {datetime.date.today().isoformat()} (commit {commit})", "",
    f"`PAYMENTS={payments} make bench-startup` (release build; process start to READY=1, three starts each, alternating):", "",
    "| data directory | starts (s) | median | ratio to empty |", "|---|---|---|---|",
    f"| empty (baseline) | {', '.join(f'{t:.3f}' for t in runs['empty'])} | {empty * 1000:.0f} ms | 1.00× |",
    f"| {payments:,} settled payments | {', '.join(f'{t:.3f}' for t in runs['large'])} | {large * 1000:.0f} ms | {large / empty:.2f}× |", ""])
print(text)
open("docs/BENCHMARKS.md", "a").write(text)
PY
