#!/usr/bin/env bash
# Greps the debug-level logs of every daemon the test suite started (kept in DIR by
# `make test` through BANKLINK_TEST_LOG_DIR) for secrets: private key material, OTP secrets and
# enrolment URIs, and the full account numbers the tests and the simulator use (logs carry
# account ids and masked numbers only). Fails when any is found, or when there are no logs to
# check (a check that read nothing would pass for the wrong reason).
#
#   scripts/check-log-secrets.sh DIR
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: $0 DIR}

shopt -s nullglob
logs=("$dir"/*.log)
if [ "${#logs[@]}" -lt 10 ]; then
  echo "check-log-secrets: only ${#logs[@]} daemon logs in $dir; expected the whole suite's" >&2
  exit 1
fi
lines=$(cat "${logs[@]}" | wc -l)
debug=$(cat "${logs[@]}" | grep -c -E '(^|[ "])debug[ "]' || true)
if [ "$debug" -eq 0 ]; then
  echo "check-log-secrets: no debug-level line in $lines lines; the daemons did not log at debug" >&2
  exit 1
fi

# Account numbers: the simulator's catalogue and the creditor accounts the tests pay, with and
# without their spaces.
mapfile -t numbers < <(
  { grep -ohE 'number: "[0-9]{8,}"' Sources/BankLinkBanks/SimulatorCatalogue.swift | grep -oE '[0-9]{8,}'
    grep -rhoE '"--to-account", "[0-9 ]{8,}"' Tests | sed -E 's/.*, "([0-9 ]+)"/\1/'
  } | sort -u)
patterns=("PRIVATE KEY" "otpauth://" "secret_base32" "secretBase32")
for number in "${numbers[@]}"; do
  patterns+=("$number")
  [[ "$number" == *" "* ]] && patterns+=("${number// /}")
done

found=0
for pattern in "${patterns[@]}"; do
  if hits=$(grep -F -l -- "$pattern" "${logs[@]}"); then
    echo "check-log-secrets: '$pattern' appears in: $(echo "$hits" | head -3 | tr '\n' ' ')" >&2
    found=1
  fi
done
# A base32 OTP secret (160 bits: 32 characters, upper case) standing alone.
if hits=$(grep -E -l '(^|[^A-Z2-7])[A-Z2-7]{32}([^A-Z2-7]|$)' "${logs[@]}"); then
  echo "check-log-secrets: a base32 secret appears in: $(echo "$hits" | head -3 | tr '\n' ' ')" >&2
  found=1
fi
if [ "$found" -ne 0 ]; then exit 1; fi
echo "check-log-secrets: ${#logs[@]} daemon logs, $lines lines ($debug at debug level): no key material, OTP secret or full account number"
