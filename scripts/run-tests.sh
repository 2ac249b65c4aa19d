#!/usr/bin/env bash
# Runs `swift test ARGS...` under a watchdog, so a hung test fails the run in minutes with a
# diagnosis instead of holding CI until its own time limit kills it without one.
#
#   scripts/run-tests.sh [--timeout SECONDS] -- SWIFT-TEST-ARGS...
#
# Swift Testing writes its event stream (one JSON record per line, written as events happen,
# so nothing is lost to stdout buffering) to a file. When the time is up the script prints
# the tests that started and never ended, every thread's stack in the test process (gdb, when
# installed) and the banklinkd/banklink processes the tests left running, then kills the tree
# and exits 124.
set -uo pipefail

timeout_seconds=${TEST_TIMEOUT_SECONDS:-1800}
if [ "${1:-}" = "--timeout" ]; then timeout_seconds=$2; shift 2; fi
if [ "${1:-}" = "--" ]; then shift; fi

swift=${SWIFT:-swift}
events=$(mktemp -t banklink-test-events.XXXXXX)
# Daemons the tests start record their process ids here (BankLinkTestSupport.TestProcesses);
# any still running when the run ends - a test that failed before stopping its daemon, or a
# crashed test process - are ended, so they cannot outlive the run or hold its ports.
export BANKLINK_TEST_PIDS_FILE=$(mktemp -t banklink-test-pids.XXXXXX)

end_leftover_daemons() {
  local pid left=0
  while read -r pid; do
    [ -n "$pid" ] || continue
    # Only our own children's children: a recorded id reused by an unrelated process is left.
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'banklink'; then
      kill -9 "$pid" 2>/dev/null && left=$((left + 1))
    fi
  done <"$BANKLINK_TEST_PIDS_FILE"
  if [ "$left" -gt 0 ]; then echo "run-tests: ended $left daemon(s) the tests left running" >&2; fi
}
trap 'end_leftover_daemons; rm -f "$events" "$BANKLINK_TEST_PIDS_FILE"' EXIT

descendants() {
  local pid=$1 child
  for child in $(pgrep -P "$pid" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

unfinished_tests() {
  python3 - "$events" <<'PY'
import json, sys
started, ended = {}, set()
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        record = json.loads(line)
    except ValueError:
        continue
    payload = record.get("payload") or {}
    kind, test = payload.get("kind"), payload.get("testID")
    if test is None:
        continue
    if kind == "testStarted":
        started[test] = payload.get("instant", {}).get("absolute")
    elif kind in ("testEnded", "testSkipped"):
        ended.add(test)
for test, since in started.items():
    if test not in ended:
        print(f"  still running: {test}")
PY
}

"$swift" test --event-stream-output-path "$events" --event-stream-version 0 "$@" &
runner=$!

waited=0
while kill -0 "$runner" 2>/dev/null; do
  if [ "$waited" -ge "$timeout_seconds" ]; then
    echo "=== run-tests: no result after ${timeout_seconds}s: the run is hung ===" >&2
    echo "tests that started and did not end:" >&2
    unfinished_tests >&2
    tree=$(descendants "$runner")
    for pid in $tree; do
      command=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)
      echo "process $pid: $command" >&2
    done
    if command -v gdb >/dev/null; then
      for pid in $tree; do
        if grep -q "PackageTests" "/proc/$pid/cmdline" 2>/dev/null; then
          echo "=== stacks of the test process $pid ===" >&2
          timeout 180 gdb -p "$pid" -batch -nx -ex "set pagination off" -ex "thread apply all bt 25" 2>/dev/null | grep -E '^(Thread|#)' >&2
        fi
      done
    fi
    for pid in $tree "$runner"; do kill -9 "$pid" 2>/dev/null; done
    wait "$runner" 2>/dev/null
    exit 124
  fi
  sleep 5
  waited=$((waited + 5))
done
wait "$runner"
