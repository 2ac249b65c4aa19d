import BankLinkClient
import BankLinkProto
import SwiftProtobuf
import BankLinkTestSupport
import Foundation
import GRPCCore
import Testing

/// The journal on the real daemon: a data directory of the previous release migrated, receipts,
/// and an export verified outside BankLink (Python, standard library only).
@Suite("Audit journal on the real daemon")
struct AuditJournalDaemonTests {
  /// `Tests/Fixtures/schema1-data.tar.gz`: a data directory written by the release before the
  /// journal (schema 1; see Tests/Fixtures/README.md for how it was made).
  static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/schema1-data.tar.gz").path
  static let verifyScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("scripts/verify_audit_export.py").path

  @Test("a data directory of the previous release is migrated: its records become a chain that verifies, here and in Python")
  func migratesPreviousRelease() async throws {
    try await withTemporaryDirectory { directory in
      let untar = try runProgram("/bin/tar", ["-xzf", Self.fixture, "-C", directory.path])
      try #require(untar.status == 0, "\(untar.stderr)")
      let pki = try TestPKI(directory: directory)
      let auditor = try pki.client(commonName: "auditor")
      let erp = try pki.client(commonName: "erp")
      let config = directory.appending("banklinkd.json")
      try Data("""
        {"listen": "127.0.0.1:0", "data_dir": "data", "connector": {"history_days": 2, "activity_interval_ms": 0},
         "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
         "principals": [{"identity": "erp", "roles": ["payer"]}, {"identity": "auditor", "roles": ["auditor"]}]}
        """.utf8).write(to: URL(fileURLWithPath: config))
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let daemon = try await RunningDaemon.start(config: config, socket: socket)
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      let address = "127.0.0.1:\(daemon.port)"

      let (migrated, cancelled) = try await withBankLinkClient(pki.clientConfiguration(address: address, identity: auditor)) { client in
        let admin = Banklink_V1_AdminService.Client(wrapping: client)
        let report = try await admin.verifyAuditJournal(.init())
        let entries = try await admin.listAuditEntries(.with { $0.object = "pay-s000000000000004" }).entries
        return (report, entries)
      }
      #expect(migrated.valid, "\(migrated.message)")
      // The fixture's four payments were created (two records each in schema 1), three were
      // claimed, submitted and accepted, and one was cancelled.
      #expect(migrated.entriesVerified >= 16, "\(migrated)")
      #expect(cancelled.map(\.action) == ["payment.created", "payment.pending_approval", "payment.cancelled"])
      #expect(cancelled.last?.payload.contains("fixture: cancelled before approval") == true)
      #expect(cancelled.allSatisfy { $0.payload.contains(#""migrated_from_schema":"1""#) })

      // New changes continue the chain, with receipts.
      let created = try await withBankLinkClient(pki.clientConfiguration(address: address, identity: erp)) { client in
        try await Banklink_V1_PaymentService.Client(wrapping: client).createPayment(.with {
          $0.idempotencyKey = "after-migration"
          $0.instruction = .with {
            $0.debtorAccountID = "icbc-cny-001"
            $0.creditor = .with {
              $0.name = "Shanghai Huaxin Trading Co., Ltd."
              $0.accountNumber = "3100 2011 0904 0012 345"
              $0.bic = "CMBCCNBS"
              $0.country = "CN"
            }
            $0.amount = .with { $0.minorUnits = 1_000; $0.currencyCode = "CNY" }
            $0.purpose = "INV-after-migration"
            $0.type = .domestic
          }
        })
      }
      #expect(created.receipt.journalSequence > migrated.entriesVerified)
      #expect(created.receipt.entryHash.count == 32)
      await daemon.stop()

      // Offline, with no daemon: verify the directory read-only, export it, verify the export in
      // Python against the receipt's hash as the head it must reach (or pass).
      let verify = try runProgram(
        Binaries.cli, ["audit", "verify", "--data-dir", directory.appending("data"), "--certificate", pki.serverCertificatePath])
      #expect(verify.status == 0, "\(verify.stdout) \(verify.stderr)")
      // The daemon signed a checkpoint on shutdown at the latest.
      #expect(verify.stdout.split(separator: "\n").contains { $0.hasPrefix("checkpoints") && !$0.contains(" 0 verified") }, "\(verify.stdout)")
      #expect(verify.stdout.split(separator: "\n").contains { $0.hasPrefix("valid") && $0.hasSuffix(" yes") }, "\(verify.stdout)")
      let export = directory.appending("export.jsonl")
      let exported = try runProgram(Binaries.cli, ["audit", "export", "--data-dir", directory.appending("data"), "--out", export])
      #expect(exported.status == 0, "\(exported.stderr)")
      let lines = try String(contentsOfFile: export, encoding: .utf8).split(separator: "\n")
      #expect(lines.count >= Int(created.receipt.journalSequence))
      let python = try runProgram("/usr/bin/env", ["python3", Self.verifyScript, export, "--certificate", pki.serverCertificatePath])
      #expect(python.status == 0, "\(python.stdout) \(python.stderr)")
      #expect(python.stdout.contains("\(lines.count) entries verify"), "\(python.stdout)")
      #expect(!python.stdout.contains("; 0 signed checkpoints verify"), "\(python.stdout)")

      // The receipt's entry is in the export with the hash the client was given.
      let receiptHex = created.receipt.entryHash.map { String(format: "%02x", $0) }.joined()
      #expect(lines.contains { $0.contains("\"entry_hash\":\"\(receiptHex)\"") })

      // One changed character in the export is found, at its entry.
      var tampered = lines.map(String.init)
      let victim = try #require(tampered.firstIndex { $0.contains("fixture: cancelled before approval") })
      tampered[victim] = tampered[victim].replacingOccurrences(of: "fixture: cancelled", with: "fixture: cancelleD")
      try Data((tampered.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: export))
      let refused = try runProgram("/usr/bin/env", ["python3", Self.verifyScript, export])
      #expect(refused.status == 1, "\(refused.stdout) \(refused.stderr)")
      #expect(refused.stdout.contains("entry \(victim + 1)"), "\(refused.stdout)")

      // An export never overwrites a file; one that cannot be written (a full disk) fails with a
      // message and exit 1 instead of trapping (a file export goes through FILE.partial).
      let again = try runProgram(Binaries.cli, ["audit", "export", "--data-dir", directory.appending("data"), "--out", export])
      #expect(again.status != 0 && again.stderr.contains("exists"), "\(again.status) \(again.stderr)")
      let full = try runProgram("/bin/sh", ["-c", "\(Binaries.cli) audit export --data-dir '\(directory.appending("data"))' > /dev/full"])
      #expect(full.status == 1, "\(full.status) \(full.stderr)")
    }
  }
}
