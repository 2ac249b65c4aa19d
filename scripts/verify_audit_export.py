#!/usr/bin/env python3
"""Verify a BankLink audit journal export without BankLink.

Usage: verify_audit_export.py EXPORT.jsonl [--head-hash HEX] [--certificate DAEMON.pem]

EXPORT.jsonl is what `banklink audit export` writes: one JSON object per line, oldest first.
Every entry is checked as docs/audit.md specifies: the payload's SHA-256, the link to the
previous entry's hash, and the entry hash over the canonical encoding. With --head-hash the
last entry must have that hash (e.g. a receipt or a checkpoint the auditor holds), which also
catches entries cut off the end. With --certificate (the daemon's TLS certificate), every
signed checkpoint (action journal.checkpoint) made with that certificate is checked with the
`openssl` command: it must sign exactly the entry before it. Rewriting the journal before a
checkpoint then needs the daemon's private key.

Exit status: 0 when every entry verifies, 1 at the first that does not (it is named), 2 for
bad usage or an unreadable file. Standard library only.
"""
import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

DOMAIN = b"banklink-audit-v1"
CHECKPOINT_DOMAIN = b"banklink-checkpoint-v1"
DIGESTS = {"ecdsa-with-SHA256": "-sha256", "ecdsa-with-SHA384": "-sha384", "sha256WithRSAEncryption": "-sha256"}
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


class CheckpointVerifier:
    """Checks checkpoint signatures with `openssl dgst -verify` and the certificate's public key."""

    def __init__(self, certificate_path: str, work: str):
        pem = open(certificate_path, encoding="ascii").read()
        body = pem.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
        self.digest = hashlib.sha256(base64.b64decode("".join(body.split()))).hexdigest()
        self.work = work
        self.public_key = os.path.join(work, "daemon-public.pem")
        subprocess.run(
            ["openssl", "x509", "-in", certificate_path, "-pubkey", "-noout", "-out", self.public_key], check=True
        )

    def check(self, entry: dict) -> str:
        """"verified", "other-certificate", or why the checkpoint is invalid."""
        fields = json.loads(entry["payload"])
        if int(fields["signed_sequence"]) != entry["sequence"] - 1 or fields["signed_hash"] != entry["previous_hash"]:
            return f"checkpoint {entry['sequence']} does not sign the entry before it"
        if fields["certificate_sha256"] != self.digest:
            return "other-certificate"
        message = CHECKPOINT_DOMAIN + struct.pack(">Q", int(fields["signed_sequence"])) + bytes.fromhex(fields["signed_hash"])
        message_path = os.path.join(self.work, "message")
        signature_path = os.path.join(self.work, "signature")
        open(message_path, "wb").write(message)
        open(signature_path, "wb").write(base64.b64decode(fields["signature"]))
        digest = DIGESTS.get(fields["algorithm"])
        if digest is None:
            return f"checkpoint {entry['sequence']} uses an unknown algorithm {fields['algorithm']}"
        result = subprocess.run(
            ["openssl", "dgst", digest, "-verify", self.public_key, "-signature", signature_path, message_path],
            capture_output=True,
        )
        if result.returncode != 0:
            return f"checkpoint {entry['sequence']} has a signature the certificate does not verify"
        return "verified"


def main(argv: list) -> int:
    args = argv[1:]
    options = {}
    for name in ("--head-hash", "--certificate"):
        if name in args:
            index = args.index(name)
            if index + 1 >= len(args):
                print(__doc__, file=sys.stderr)
                return 2
            options[name] = args[index + 1]
            del args[index : index + 2]
    head = bytes.fromhex(options["--head-hash"]) if "--head-hash" in options else None
    work = tempfile.mkdtemp()
    checkpoints = CheckpointVerifier(options["--certificate"], work) if "--certificate" in options else None
    signed = 0
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
        if checkpoints is not None and entry["action"] == "journal.checkpoint":
            outcome = checkpoints.check(entry)
            if outcome == "verified":
                signed += 1
            elif outcome != "other-certificate":
                print(outcome)
                return 1
        previous = computed
        expected = sequence + 1
        count += 1

    if head is not None and previous != head:
        print(f"the last entry's hash is {previous.hex() if previous else '-'}, not the expected head {head.hex()}")
        return 1
    summary = f"{count} entries verify; head {previous.hex() if previous else '-'}"
    if checkpoints is not None:
        summary += f"; {signed} signed checkpoints verify"
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
