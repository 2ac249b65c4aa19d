#!/usr/bin/env bash
# make bench-formats: the statement readers on large files. Generates a camt.053.001.08 and an
# MT940 file of ENTRIES entries (default 1,000,000; each entry with a transaction's references,
# counterparty and remittance, as a bank writes them) and a tenth-size camt.053 as the same-run
# baseline, then reads each with `banklink statements parse FILE --summary` (release build)
# under /usr/bin/time: entries per second and peak RSS. RSS should not grow with the file.
# The same-run baseline for speed is libxml2 alone (Benchmarks/FormatsBaseline/sax_noop.c: the
# SAX2 push parser with callbacks that do nothing, fed as the walker feeds it), built with gcc.
# Records the figures with the command in docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
entries="${ENTRIES:-1000000}"
swift build -c release --product banklink >/dev/null
bin=".build/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/sax_noop" Benchmarks/FormatsBaseline/sax_noop.c $(pkg-config --cflags --libs libxml-2.0)

python3 - "$work" "$entries" <<'PY'
import sys
work, entries = sys.argv[1], int(sys.argv[2])
def camt(path, count):
    with open(path, "w", buffering=1 << 20) as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">'
                '<BkToCstmrStmt><GrpHdr><MsgId>BENCH</MsgId><CreDtTm>2026-12-03T23:00:00+08:00</CreDtTm></GrpHdr><Stmt>'
                '<Id>BENCH-1</Id><ElctrncSeqNb>1</ElctrncSeqNb><Acct><Id><Othr><Id>1001234567890001</Id></Othr></Id><Ccy>CNY</Ccy></Acct>\n')
        total = 0
        for i in range(count):
            amount = 100 + i % 100000
            total += amount
        f.write('<Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">%d.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-12-03</Dt></Dt></Bal>\n' % (total // 100 + 1))
        closing = (total // 100 + 1) * 100 - total
        f.write('<Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">%d.%02d</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-12-03</Dt></Dt></Bal>\n' % (closing // 100, closing % 100))
        for i in range(count):
            amount = 100 + i % 100000
            f.write('<Ntry><Amt Ccy="CNY">%d.%02d</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts><BookgDt><Dt>2026-12-03</Dt></BookgDt>'
                    '<ValDt><Dt>2026-12-03</Dt></ValDt><AcctSvcrRef>ICBC%010d</AcctSvcrRef><BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>ICDT</Cd>'
                    '<SubFmlyCd>DMCT</SubFmlyCd></Fmly></Domn></BkTxCd><NtryDtls><TxDtls><Refs><InstrId>I%d</InstrId><EndToEndId>BL%013d</EndToEndId></Refs>'
                    '<Amt Ccy="CNY">%d.%02d</Amt><RltdPties><Cdtr><Pty><Nm>Supplier %d Co., Ltd.</Nm></Pty></Cdtr><CdtrAcct><Id><Othr><Id>62220%011d</Id></Othr></Id></CdtrAcct></RltdPties>'
                    '<RmtInf><Ustrd>INV-2026-%07d</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>\n'
                    % (amount // 100, amount % 100, i, i, i, amount // 100, amount % 100, i % 5000, i, i))
        f.write('</Stmt></BkToCstmrStmt></Document>\n')
def mt940(path, count):
    with open(path, "w", buffering=1 << 20, newline="") as f:
        f.write(":20:BENCH\r\n:25:1001234567890001\r\n:28C:1/1\r\n:60F:C261202CNY%d,00\r\n" % (count * 1000))
        total = 0
        for i in range(count):
            amount = 100 + i % 100000
            total += amount
            f.write(":61:2612031203D%d,%02dNTRFBL%013d//ICBC%010d\r\n:86:/EREF/BL%013d/REMI/INV-2026-%07d/NAME/Supplier %d Co., Ltd./IBAN/62220%011d\r\n"
                    % (amount // 100, amount % 100, i, i, i, i, i % 5000, i))
        closing = count * 100000 - total
        f.write(":62F:C261203CNY%d,%02d\r\n-\r\n" % (closing // 100, closing % 100))
camt(f"{work}/baseline.xml", max(1, entries // 10))
camt(f"{work}/camt053.xml", entries)
mt940(f"{work}/mt940.sta", entries)
PY

run() {
  local name="$1" file="$2"
  /usr/bin/time -f "%M %e" -o "$work/$name.time" "$bin/banklink" statements parse "$file" --summary >"$work/$name.out"
  read -r rss_kib seconds <"$work/$name.time"
  local count
  count="$(sed -n 's/.*: [0-9]* statements, \([0-9]*\) entries, \([0-9]*\) continuity breaks.*/\1 \2/p' "$work/$name.out")"
  echo "$name $(stat -c %s "$file") $count $seconds $rss_kib" | tee -a "$work/results"
}
/usr/bin/time -f "%M %e" -o "$work/libxml2.time" "$work/sax_noop" "$work/camt053.xml" >/dev/null
read -r rss_kib seconds <"$work/libxml2.time"
echo "libxml2-alone $(stat -c %s "$work/camt053.xml") $entries 0 $seconds $rss_kib" | tee -a "$work/results"
run baseline "$work/baseline.xml"
run camt053 "$work/camt053.xml"
run mt940 "$work/mt940.sta"

python3 - "$work/results" "$entries" <<'PY'
import sys, subprocess, datetime
rows = [line.split() for line in open(sys.argv[1])]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
base = {r[0]: r for r in rows}["baseline"]
parser = {r[0]: r for r in rows}["libxml2-alone"]
lines = ["", f"### Statement files, {datetime.date.today().isoformat()} (commit {commit})", "",
         f"`ENTRIES={sys.argv[2]} make bench-formats` (release build, one core, `banklink statements parse FILE --summary` under `/usr/bin/time`):", "",
         "| file | size | entries | breaks | seconds | entries/s | time / libxml2 alone | peak RSS | RSS / baseline |", "|---|---|---|---|---|---|---|---|---|"]
for name, size, entries, breaks, seconds, rss in rows:
    rate = int(entries) / float(seconds) if float(seconds) > 0 else 0
    ratio = f"{float(seconds) / float(parser[4]):.2f}×" if name == "camt053" and float(parser[4]) > 0 else "—"
    lines.append(f"| {name} | {int(size) / 1e6:.0f} MB | {entries} | {breaks} | {seconds} | {rate:,.0f} | {ratio} | {int(rss) / 1024:.0f} MB | {int(rss) / int(base[5]):.2f}× |")
text = "\n".join(lines) + "\n"
print(text)
open("docs/BENCHMARKS.md", "a").write(text)
PY
