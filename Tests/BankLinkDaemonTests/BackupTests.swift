import BankLinkClient
import BankLinkCore
import BankLinkDaemon
import BankLinkJournal
import BankLinkProto
import BankLinkStore
import BankLinkTestSupport
import Crypto
import Foundation
import GRPCCore
import SwiftProtobuf
import Synchronization
import Testing

/// Online backup (the `Backup` RPC) and restore (`Restore`, `banklinkd --restore-from`).
@Suite("Backup and restore")
struct BackupTests {
  static let principals = [
    Principal(identity: "admin", roles: [.admin]),
    Principal(identity: "erp", roles: [.payer]),
  ]

  static let instruction = Banklink_V1_PaymentInstruction.with {
    $0.debtorAccountID = "icbc-cny-001"
    $0.creditor = .with {
      $0.name = "Shanghai Huaxin Trading Co., Ltd."
      $0.accountNumber = "3100 2011 0904 0012 345"
      $0.bic = "CMBCCNBS"
      $0.country = "CN"
    }
    $0.amount = .with { $0.minorUnits = 1_000; $0.currencyCode = "CNY" }
    $0.purpose = "INV-2026-0042"
    $0.type = .domestic
  }

  /// The copy's bytes and summary, as `banklink admin backup` receives them.
  static func backup(_ configuration: ClientConfiguration) async throws -> (Data, Banklink_V1_BackupSummary) {
    try await withBankLinkClient(configuration) { client in
      try await Banklink_V1_AdminService.Client(wrapping: client).backup(.init()) { response in
        var bytes = Data()
        var summary: Banklink_V1_BackupSummary?
        for try await chunk in response.messages {
          bytes.append(chunk.data)
          if chunk.hasSummary { summary = chunk.summary }
        }
        return (bytes, try #require(summary))
      }
    }
  }

  @Test("a backup taken under payment load restores into a new data directory: every payment acknowledged before it, a journal that verifies")
  func backupUnderLoad() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let erp = server.client(try server.pki.client(commonName: "erp"))
      let admin = server.client(try server.pki.client(commonName: "admin"))
      let acknowledged = Mutex<[String]>([])
      let stop = Atomic<Bool>(false)
      let load = Task {
        try await withBankLinkClient(erp) { client in
          let payments = Banklink_V1_PaymentService.Client(wrapping: client)
          var index = 0
          while !stop.load(ordering: .relaxed) {
            let response = try await payments.createPayment(.with {
              $0.idempotencyKey = "backup-load-\(index)"
              $0.instruction = Self.instruction
            })
            acknowledged.withLock { $0.append(response.payment.paymentID) }
            index += 1
          }
        }
      }
      while acknowledged.withLock({ $0.count }) < 30 { try await Task.sleep(for: .milliseconds(20)) }
      let before = acknowledged.withLock { $0 }
      let (bytes, summary) = try await Self.backup(admin)
      stop.store(true, ordering: .relaxed)
      try await load.value
      #expect(acknowledged.withLock { $0.count } > before.count, "payments went on during the backup")
      #expect(summary.bytes == UInt64(bytes.count))
      #expect(summary.sha256 == SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined())
      #expect(summary.schemaVersion == Store.schemaVersion)

      try await withTemporaryDirectory { directory in
        let file = directory.appending("backup.mdb")
        try bytes.write(to: URL(fileURLWithPath: file))
        let restored = try Restore.restore(from: file, into: directory.appending("restored"))
        #expect(restored.bytes == Int64(bytes.count))
        #expect(restored.journalEntries >= summary.journalHead)
        let store = try Store(configuration: .init(directory: directory.appending("restored")))
        try store.withReadTransaction { txn in
          for id in before { #expect(try txn.get(Array(id.utf8), in: .payments) != nil, "payment \(id) acknowledged before the backup") }
          // The backup recorded who took it, in the copy itself.
          let entry = try #require(try AuditJournal.entry(summary.journalHead, in: txn))
          #expect(entry.action == "daemon.backup" && entry.principal == "admin")
        }
        // Never over data: a second restore into the same directory is refused.
        #expect(throws: Restore.Failure.self) { try Restore.restore(from: file, into: directory.appending("restored")) }
        // A truncated copy does not verify, and leaves nothing behind.
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: directory.appending("truncated.mdb")))
        #expect(throws: Restore.Failure.self) { try Restore.restore(from: directory.appending("truncated.mdb"), into: directory.appending("bad")) }
        #expect(!FileManager.default.fileExists(atPath: directory.appending("bad/data.mdb")))
      }

      // Admins only.
      let refused = await #expect(throws: RPCError.self) { try await Self.backup(erp) }
      #expect(refused?.code == .permissionDenied)
    }
  }
}
