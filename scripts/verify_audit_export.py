#!/usr/bin/env python3
"""Verify a BankLink audit journal export without BankLink.

Usage: verify_audit_export.py EXPORT.jsonl [--head-hash HEX]

EXPORT.jsonl is what `banklink audit export` writes: one JSON object per line, oldest first.
Every entry is checked as docs/audit.md specifies: the payload's SHA-256, the link to the
previous entry's hash, and the entry hash over the canonical encoding. With --head-hash the
last entry must have that hash (e.g. a receipt or a checkpoint the auditor holds), which also
catches entries cut off the end.

Exit status: 0 when every entry verifies, 1 at the first that does not (it is named), 2 for
bad usage or an unreadable file. Standard library only.
"""
import hashlib
import json
import struct
import sys

DOMAIN = b"banklink-audit-v1"
GENESIS = bytes(32)


def text(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def entry_hash(entry: dict, previous: bytes) -> bytes:
    payload_digest = hashlib.sha256(entry["payload"].encode("utf-8")).digest()
    encoded = (
        DOMAIN
        + struct.pack(">Q", entry["sequence"])
        + struct.pack(">q", entry["time_ms"])
        + text(entry["principal"])
        + text(entry["action"])
        + text(entry["object"])
        + payload_digest
        + previous
    )
    return hashlib.sha256(encoded).digest()


def main(argv: list) -> int:
    args = argv[1:]
    head = None
    if "--head-hash" in args:
        index = args.index("--head-hash")
        if index + 1 >= len(args):
            print(__doc__, file=sys.stderr)
            return 2
        head = bytes.fromhex(args[index + 1])
        del args[index : index + 2]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        lines = open(args[0], encoding="utf-8").read().splitlines()
    except OSError as error:
        print(f"cannot read {args[0]}: {error}", file=sys.stderr)
        return 2

    previous = None
    expected = None
    count = 0
    for number, line in enumerate(lines, start=1):
        entry = json.loads(line)
        sequence = entry["sequence"]
        if previous is None:
            # The export may start after entry 1: it then links to the hash it states.
            previous = GENESIS if sequence == 1 else bytes.fromhex(entry["previous_hash"])
            expected = sequence
        if sequence != expected:
            print(f"line {number}: entry {expected} is missing (found {sequence})")
            return 1
        if bytes.fromhex(entry["previous_hash"]) != previous:
            print(f"entry {sequence}: does not link to entry {sequence - 1}")
            return 1
        if hashlib.sha256(entry["payload"].encode("utf-8")).hexdigest() != entry["payload_sha256"]:
            print(f"entry {sequence}: payload does not match its digest")
            return 1
        computed = entry_hash(entry, previous)
        if computed.hex() != entry["entry_hash"]:
            print(f"entry {sequence}: altered (its contents do not hash to its entry hash)")
            return 1
        previous = computed
        expected = sequence + 1
        count += 1

    if head is not None and previous != head:
        print(f"the last entry's hash is {previous.hex() if previous else '-'}, not the expected head {head.hex()}")
        return 1
    print(f"{count} entries verify; head {previous.hex() if previous else '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
