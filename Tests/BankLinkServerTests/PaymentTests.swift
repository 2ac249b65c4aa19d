import BankLinkClient
import BankLinkCore
import BankLinkProto
import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SwiftProtobuf
import Testing

/// PaymentService end to end over real mutual TLS, with the cache synced from the simulator.
@Suite("Payments")
struct PaymentTests {
  static let principals = [
    Principal(identity: "erp", roles: [.payer]),
    Principal(identity: "payroll", roles: [.payer]),
    Principal(identity: "admin", roles: [.admin]),
    Principal(identity: "viewer", roles: [.viewer]),
    Principal(identity: "auditor", roles: [.auditor]),
  ]

  typealias Payments = Banklink_V1_PaymentService.Client<HTTP2ClientTransport.Posix>

  static func instruction(amount: Int64 = 123_456, account: String = "icbc-cny-001", currency: String = "CNY")
    -> Banklink_V1_PaymentInstruction
  {
    .with {
      $0.debtorAccountID = account
      $0.creditor = .with {
        $0.name = "Shanghai Huaxin Trading Co., Ltd."
        $0.accountNumber = "3100 2011 0904 0012 345"
        $0.bic = "CMBCCNBS"
        $0.country = "CN"
      }
      $0.amount = .with { $0.minorUnits = amount; $0.currencyCode = currency }
      $0.purpose = "INV-2026-0042"
      $0.type = .domestic
    }
  }

  static func create(_ payments: Payments, key: String, _ instruction: Banklink_V1_PaymentInstruction = instruction())
    async throws -> Banklink_V1_CreatePaymentResponse
  {
    try await payments.createPayment(.with { $0.idempotencyKey = key; $0.instruction = instruction })
  }

  /// Runs `body` with a PaymentService client per identity.
  static func withPayments<T: Sendable>(
    approvalThreshold: Int64 = 1_000_000,
    _ body: @Sendable (TestServer, _ client: @Sendable (String) -> ClientConfiguration) async throws -> T
  ) async throws -> T {
    try await withTestServer(principals: Self.principals, approvalThresholdMajorUnits: approvalThreshold) { server in
      var files: [String: ClientIdentityFiles] = [:]
      for principal in Self.principals { files[principal.identity] = try server.pki.client(commonName: principal.identity) }
      let frozen = files
      return try await body(server) { identity in server.client(frozen[identity]!) }
    }
  }

  static func as_<T: Sendable>(_ configuration: ClientConfiguration, _ body: (Payments) async throws -> T) async throws -> T {
    try await withBankLinkClient(configuration) { client in try await body(Payments(wrapping: client)) }
  }

  static func violations(_ error: RPCError?) throws -> [String] {
    guard let error, error.code == .invalidArgument else { return [] }
    return try error.unpackGoogleRPCStatus()?.details.compactMap(\.badRequest).flatMap(\.violations).map(\.field) ?? []
  }

  @Test("every mutating reply carries the receipt of its journal entry; a replay returns the original receipt")
  func receipts() async throws {
    try await Self.withPayments { server, client in
      let auditor = try server.pki.client(commonName: "auditor")
      let (created, replay, cancelled, cancelledAgain, batch) = try await Self.as_(client("erp")) { payments in
        let created = try await Self.create(payments, key: "r-1")
        let replay = try await Self.create(payments, key: "r-1")
        let cancelled = try await payments.cancelPayment(.with { $0.paymentID = created.payment.paymentID; $0.reason = "receipt test" })
        let again = try await payments.cancelPayment(.with { $0.paymentID = created.payment.paymentID; $0.reason = "again" })
        let batch = try await payments.createPaymentBatch(.with {
          $0.idempotencyKey = "r-batch"
          $0.items = [Self.instruction(amount: 10), Self.instruction(amount: 20)]
        })
        return (created, replay, cancelled, again, batch)
      }
      #expect(created.hasReceipt && created.receipt.journalSequence > 0 && created.receipt.entryHash.count == 32)
      #expect(replay.replayed && replay.receipt == created.receipt)
      #expect(cancelled.receipt.journalSequence > created.receipt.journalSequence)
      #expect(cancelledAgain.receipt == cancelled.receipt)
      #expect(batch.receipt.journalSequence > cancelled.receipt.journalSequence)

      try await withBankLinkClient(server.client(auditor)) { client in
        let admin = Banklink_V1_AdminService.Client(wrapping: client)
        // The receipts are the journal's entries: same sequence, same hash.
        let about = try await admin.listAuditEntries(.with { $0.object = created.payment.paymentID }).entries
        #expect(about.map(\.action) == ["payment.created", "payment.cancelled"])
        #expect(about.first.map { $0.sequence == created.receipt.journalSequence && $0.entryHash == created.receipt.entryHash } == true)
        #expect(about.last.map { $0.sequence == cancelled.receipt.journalSequence && $0.entryHash == cancelled.receipt.entryHash } == true)
        // The details as given, plus the call's request id (made up: the client sent none).
        #expect(about.last?.payload.hasPrefix(#"{"reason":"receipt test","request_id":""#) == true, "\(String(describing: about.last?.payload))")
        #expect(about.first?.principal == "erp")
        // Filters: by principal and action, paged with a token.
        let byAction = try await admin.listAuditEntries(.with { $0.action = "payment.created"; $0.pageSize = 1 })
        #expect(byAction.entries.count == 1 && !byAction.nextPageToken.isEmpty)
        var all: [Banklink_V1_AuditEntry] = []
        var token = ""
        repeat {
          let page = try await admin.listAuditEntries(.with { $0.principal = "erp"; $0.pageSize = 2; $0.pageToken = token })
          all += page.entries
          token = page.nextPageToken
        } while !token.isEmpty
        #expect(all.count == 5)  // created, cancelled, two batch items, the batch
        #expect(all.allSatisfy { $0.principal == "erp" })
        // The whole journal verifies and ends at the last receipt.
        let report = try await admin.verifyAuditJournal(.init())
        #expect(report.valid, "\(report.message)")
        #expect(report.headHash == batch.receipt.entryHash)
        // Bad arguments are named.
        let error = await #expect(throws: RPCError.self) {
          _ = try await admin.listAuditEntries(.with { $0.pageToken = "bm90IGEgdG9rZW4=" })
        }
        #expect(error?.code == .invalidArgument && error?.message.contains("page_token") == true)
      }
      // Viewers do not read the journal.
      let viewer = try server.pki.client(commonName: "viewer")
      let denied = await #expect(throws: RPCError.self) {
        try await withBankLinkClient(server.client(viewer)) { client in
          _ = try await Banklink_V1_AdminService.Client(wrapping: client).verifyAuditJournal(.init())
        }
      }
      #expect(denied?.code == .permissionDenied)
    }
  }

  @Test("a full store is RESOURCE_EXHAUSTED with an incident id, never a path or configuration key")
  func fullStore() async throws {
    try await withTestServer(principals: Self.principals, historyDays: 1, mapSizeMiB: Limits.minMapSizeMiB) { server in
      let erp = try server.pki.client(commonName: "erp")
      try await Self.as_(server.client(erp)) { payments in
        var instruction = Self.instruction(amount: 1)
        instruction.creditor.name = String(repeating: "N", count: Limits.maxPartyNameLength)
        instruction.purpose = String(repeating: "P", count: Limits.maxRemittanceLength)
        // 1 MiB holds a few thousand payments: create until the store refuses.
        var failure: RPCError?
        for index in 0..<20_000 {
          do {
            _ = try await Self.create(payments, key: "fill-\(index)", instruction)
          } catch let error as RPCError {
            failure = error
            break
          }
        }
        let error = try #require(failure, "1 MiB never filled")
        #expect(error.code == .resourceExhausted, "\(error)")
        #expect(error.message.contains("incident"), "\(error.message)")
        for leak in ["map_size", "storage.", "/", "MDB_", "mdb"] {
          #expect(!error.message.contains(leak), "\(error.message)")
        }
        let info = try error.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first
        #expect(info?.reason == "STORAGE_FULL")
        #expect(info?.metadata["incident"].map { !$0.isEmpty } == true)
        // Reads keep working on a full store.
        let listed = try await payments.listPayments(.with { $0.pageSize = 10 })
        #expect(listed.payments.count == 10)
      }
    }
  }

  @Test("create, read back, list; small payments are released, large ones wait for approval")
  func createAndRead() async throws {
    try await Self.withPayments { server, client in
      try await Self.as_(client("erp")) { payments in
        let small = try await Self.create(payments, key: "k-small")
        #expect(!small.replayed)
        #expect(small.payment.status == .approved)
        #expect(small.payment.creator == "erp")
        #expect(small.payment.endToEndID.hasPrefix("BL"))
        let large = try await Self.create(payments, key: "k-large", Self.instruction(amount: 500_000_000))
        #expect(large.payment.status == .pendingApproval)

        let read = try await payments.getPayment(.with { $0.paymentID = small.payment.paymentID })
        #expect(read == small.payment)
        let listed = try await payments.listPayments(.init())
        #expect(listed.payments.map(\.paymentID) == [small.payment.paymentID, large.payment.paymentID])
        let waiting = try await payments.listPayments(.with { $0.statuses = [.pendingApproval] })
        #expect(waiting.payments.map(\.paymentID) == [large.payment.paymentID])
        let paged = try await payments.listPayments(.with { $0.pageSize = 1 })
        #expect(paged.payments.count == 1 && !paged.nextPageToken.isEmpty)
        let second = try await payments.listPayments(.with { $0.pageSize = 1; $0.pageToken = paged.nextPageToken })
        #expect(second.payments.map(\.paymentID) == [large.payment.paymentID])

        let missing = await #expect(throws: RPCError.self) { try await payments.getPayment(.with { $0.paymentID = "pay-0-0" }) }
        #expect(missing?.code == .notFound)
      }
    }
  }

  @Test("the same key returns the original payment; another request under it is refused; keys are per caller")
  func idempotency() async throws {
    try await Self.withPayments { server, client in
      let first = try await Self.as_(client("erp")) { try await Self.create($0, key: "inv-42") }
      let again = try await Self.as_(client("erp")) { try await Self.create($0, key: "inv-42") }
      #expect(again.replayed)
      #expect(again.payment == first.payment)

      let conflict = await #expect(throws: RPCError.self) {
        try await Self.as_(client("erp")) { try await Self.create($0, key: "inv-42", Self.instruction(amount: 1)) }
      }
      #expect(conflict?.code == .alreadyExists)
      #expect(conflict?.message.contains("idempotency_key") == true)

      // Another payer's identical key is a different payment.
      let other = try await Self.as_(client("payroll")) { try await Self.create($0, key: "inv-42") }
      #expect(!other.replayed)
      #expect(other.payment.paymentID != first.payment.paymentID)
    }
  }

  @Test("100 concurrent calls with one key create exactly one payment and reserve once")
  func concurrentSameKey() async throws {
    try await Self.withPayments { server, client in
      let before = try #require(try server.payments.available(accountID: "icbc-cny-002"))
      let ids = try await Self.as_(client("erp")) { payments in
        try await withThrowingTaskGroup(of: String.self) { group in
          for _ in 0..<100 {
            group.addTask {
              try await Self.create(payments, key: "payroll-2026-11", Self.instruction(amount: 777, account: "icbc-cny-002"))
                .payment.paymentID
            }
          }
          var ids: Set<String> = []
          for try await id in group { ids.insert(id) }
          return ids
        }
      }
      #expect(ids.count == 1)
      let all = try server.payments.list(.init(), after: nil, limit: 1000).payments
      #expect(all.count == 1)
      let after = try server.payments.available(accountID: "icbc-cny-002")
      #expect(after == before - 777)
    }
  }

  @Test("a selective filter pages through a long history reading a bounded number of payments per call")
  func boundedListScan() async throws {
    try await Self.withPayments { server, client in
      var payrollIDs: Set<String> = []
      for index in 0..<8 {
        let creator = index == 5 ? "payroll" : "erp"
        let created = try await Self.as_(client(creator)) { try await Self.create($0, key: "scan-\(index)", Self.instruction(amount: 100)) }
        if creator == "payroll" { payrollIDs.insert(created.payment.paymentID) }
      }
      var filter = PaymentLedger.Filter()
      filter.creator = "payroll"
      var seen: [String] = []
      var after: String?
      var calls = 0
      repeat {
        let page = try server.payments.list(filter, after: after, limit: 10, scanLimit: 2)
        calls += 1
        #expect(page.payments.allSatisfy { $0.creator == "payroll" })
        seen += page.payments.map(\.id)
        after = page.resumeAfter
      } while after != nil && calls < 20
      #expect(seen.count == 1 && Set(seen) == payrollIDs)
      // Eight payments, two read per call: four calls, the last one ending the listing.
      #expect(calls == 4)

      // A full page stops at the page: the next one starts after its last payment.
      let full = try server.payments.list(.init(), after: nil, limit: 3)
      #expect(full.payments.count == 3 && full.resumeAfter == full.payments.last?.id)
      let rest = try server.payments.list(.init(), after: full.resumeAfter, limit: 10)
      #expect(rest.payments.count == 5 && rest.resumeAfter == nil)
      #expect(Set(full.payments.map(\.id)).isDisjoint(with: rest.payments.map(\.id)))
    }
  }

  @Test("the same payment survives a restart of the ledger and is replayed from the store")
  func replayAfterRestart() async throws {
    try await Self.withPayments { server, client in
      let first = try await Self.as_(client("erp")) { try await Self.create($0, key: "restart-1") }
      // A new ledger over the same store, as after a daemon restart.
      let reopened = PaymentLedger(writer: GroupCommitWriter(store: server.payments.writer.store), configuration: .init(), now: WallClock.now)
      // The request as the client sent it: the stored payment carries the execution date the
      // server filled in for the empty one.
      var instruction = try #require(try server.payments.payment(first.payment.paymentID)).instruction
      instruction.requestedExecutionDate = ""
      let replay = try await reopened.create(instruction, idempotencyKey: "restart-1", creator: "erp")
      #expect(replay.replayed)
      #expect(replay.payment.id == first.payment.paymentID)
    }
  }

  @Test("idempotency records keep a digest of the request; records holding the whole request still guard their keys")
  func idempotencyFingerprints() async throws {
    try await Self.withPayments { server, client in
      let store = server.payments.writer.store
      func record(_ key: String) throws -> [UInt8]? {
        try store.withReadTransaction { try $0.get(Array("erp".utf8) + [0] + Array(key.utf8), in: .idempotency) }
      }
      // A long request: the record stays the size of a digest and an id.
      var long = Self.instruction()
      long.purpose = String(repeating: "Payroll November ", count: 8)
      let created = try await Self.as_(client("erp")) { try await Self.create($0, key: "digest-1", long) }
      let stored = try #require(try record("digest-1"))
      var reader = RecordReader(stored)
      let fingerprint = try reader.readString()
      #expect(fingerprint.hasPrefix("sha256:") && fingerprint.utf8.count == 7 + 64)
      #expect(try reader.readString() == created.payment.paymentID)
      #expect(stored.count < 120)

      // A record in the earlier form (the canonical request in hex), as a data directory written
      // by an earlier build holds it.
      let original = try await Self.as_(client("erp")) { try await Self.create($0, key: "legacy-1") }
      var sent = try #require(try server.payments.payment(original.payment.paymentID)).instruction
      sent.requestedExecutionDate = ""  // as the client sent it (the server fills in the day)
      let canonical = sent.canonicalRecord
      var legacy = RecordWriter()
      let digits = Array("0123456789abcdef")
      legacy.write(String(canonical.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0x0F)]] }))
      legacy.write(original.payment.paymentID)
      try store.withWriteTransaction { txn in
        try txn.put(Array("erp".utf8) + [0] + Array("legacy-1".utf8), legacy.bytes, in: .idempotency)
      }
      let replay = try await Self.as_(client("erp")) { try await Self.create($0, key: "legacy-1") }
      #expect(replay.replayed && replay.payment.paymentID == original.payment.paymentID)
      let conflict = await #expect(throws: RPCError.self) {
        try await Self.as_(client("erp")) { try await Self.create($0, key: "legacy-1", Self.instruction(amount: 1)) }
      }
      #expect(conflict?.code == .alreadyExists)
    }
  }

  @Test("every field is validated and named")
  func validation() async throws {
    try await Self.withPayments { server, client in
      try await Self.as_(client("erp")) { payments in
        let noKey = await #expect(throws: RPCError.self) { try await Self.create(payments, key: "") }
        #expect(try Self.violations(noKey) == ["idempotency_key"])
        let spaced = await #expect(throws: RPCError.self) { try await Self.create(payments, key: "has space") }
        #expect(try Self.violations(spaced) == ["idempotency_key"])

        var bad = Self.instruction()
        bad.creditor.iban = "DE89370400440532013001"
        bad.creditor.accountNumber = ""
        bad.creditor.bic = "XX"
        bad.creditor.country = "ZZ"
        bad.amount.minorUnits = -5
        bad.purpose = String(repeating: "x", count: 200)
        bad.requestedExecutionDate = "2001-01-01"
        let many = await #expect(throws: RPCError.self) { try await Self.create(payments, key: "bad-1", bad) }
        #expect(Set(try Self.violations(many)) == [
          "instruction.creditor.iban", "instruction.creditor.bic", "instruction.creditor.country",
          "instruction.amount.minor_units", "instruction.purpose", "instruction.requested_execution_date",
        ])

        var noType = Self.instruction()
        noType.type = .unspecified
        noType.amount.currencyCode = "yuan"
        let unrepresentable = await #expect(throws: RPCError.self) { try await Self.create(payments, key: "bad-2", noType) }
        #expect(Set(try Self.violations(unrepresentable)) == ["instruction.type", "instruction.amount.currency_code"])

        let wrongCurrency = await #expect(throws: RPCError.self) {
          try await Self.create(payments, key: "bad-3", Self.instruction(currency: "USD"))
        }
        #expect(try Self.violations(wrongCurrency) == ["instruction.amount.currency_code"])
        let noAccount = await #expect(throws: RPCError.self) {
          try await Self.create(payments, key: "bad-4", Self.instruction(account: "icbc-cny-999"))
        }
        #expect(try Self.violations(noAccount) == ["instruction.debtor_account_id"])

        // Nothing was written by any refused request.
        let stored = try await payments.listPayments(.init())
        #expect(stored.payments.isEmpty)
      }
    }
  }

  @Test("insufficient available funds is FAILED_PRECONDITION with the shortfall; reservations count")
  func insufficientFunds() async throws {
    try await Self.withPayments(approvalThreshold: Int64.max) { server, client in
      let available = try #require(try server.payments.available(accountID: "db-eur-001"))
      try await Self.as_(client("erp")) { payments in
        let tooMuch = await #expect(throws: RPCError.self) {
          try await Self.create(payments, key: "eur-1", Self.instruction(amount: available + 1, account: "db-eur-001", currency: "EUR"))
        }
        #expect(tooMuch?.code == .failedPrecondition)
        #expect(tooMuch?.message.contains("shortfall 0.01 EUR") == true)

        // Reserving all but 1 cent leaves exactly 1 cent available.
        _ = try await Self.create(payments, key: "eur-2", Self.instruction(amount: available - 1, account: "db-eur-001", currency: "EUR"))
        let balance = try await withBankLinkClient(client("viewer")) { client in
          try await Banklink_V1_AccountService.Client(wrapping: client).getBalance(.with { $0.accountID = "db-eur-001" })
        }
        #expect(balance.available.minorUnits == balance.ledger.minorUnits - (available - 1))
        let overdraw = await #expect(throws: RPCError.self) {
          try await Self.create(payments, key: "eur-3", Self.instruction(amount: 2, account: "db-eur-001", currency: "EUR"))
        }
        #expect(overdraw?.code == .failedPrecondition)
      }
    }
  }

  @Test("cancel: by the creator or an admin, not by another payer; releases the reservation")
  func cancel() async throws {
    try await Self.withPayments { server, client in
      let before = try #require(try server.payments.available(accountID: "icbc-usd-001"))
      let created = try await Self.as_(client("erp")) {
        try await Self.create($0, key: "usd-1", Self.instruction(amount: 10_000, account: "icbc-usd-001", currency: "USD"))
      }
      let reservedNow = try server.payments.available(accountID: "icbc-usd-001")
      #expect(reservedNow == before - 10_000)
      let id = created.payment.paymentID
      let foreign = await #expect(throws: RPCError.self) {
        try await Self.as_(client("payroll")) { try await $0.cancelPayment(.with { $0.paymentID = id }) }
      }
      #expect(foreign?.code == .permissionDenied)
      let cancelled = try await Self.as_(client("erp")) {
        try await $0.cancelPayment(.with { $0.paymentID = id; $0.reason = "duplicate invoice" })
      }
      #expect(cancelled.payment.status == .cancelled)
      #expect(cancelled.payment.statusReason == "duplicate invoice")
      let released = try server.payments.available(accountID: "icbc-usd-001")
      #expect(released == before)
      // Cancelling again changes nothing and releases nothing twice.
      _ = try await Self.as_(client("admin")) { try await $0.cancelPayment(.with { $0.paymentID = id }) }
      let releasedOnce = try server.payments.available(accountID: "icbc-usd-001")
      #expect(releasedOnce == before)

      let byAdmin = try await Self.as_(client("erp")) { try await Self.create($0, key: "usd-2", Self.instruction(amount: 5, account: "icbc-usd-001", currency: "USD")) }
      let adminCancel = try await Self.as_(client("admin")) {
        try await $0.cancelPayment(.with { $0.paymentID = byAdmin.payment.paymentID })
      }
      #expect(adminCancel.payment.status == .cancelled)
    }
  }

  @Test("only payers create; viewers read")
  func authorization() async throws {
    try await Self.withPayments { server, client in
      let refused = await #expect(throws: RPCError.self) { try await Self.as_(client("viewer")) { try await Self.create($0, key: "v-1") } }
      #expect(refused?.code == .permissionDenied)
      let adminRefused = await #expect(throws: RPCError.self) { try await Self.as_(client("admin")) { try await Self.create($0, key: "a-1") } }
      #expect(adminRefused?.code == .permissionDenied)
      let listed = try await Self.as_(client("viewer")) { try await $0.listPayments(.init()) }
      #expect(listed.payments.isEmpty)
    }
  }

  @Test("a batch is created whole or not at all, with every failing item named")
  func batches() async throws {
    try await Self.withPayments { server, client in
      try await Self.as_(client("payroll")) { payments in
        let items = (1...3).map { Self.instruction(amount: Int64($0) * 1_000, account: "icbc-cny-002") }
        let batch = try await payments.createPaymentBatch(.with { $0.idempotencyKey = "payroll-nov"; $0.items = items })
        #expect(batch.payments.count == 3)
        #expect(batch.payments.allSatisfy { $0.batchID == batch.batchID && $0.status == .approved })
        let replay = try await payments.createPaymentBatch(.with { $0.idempotencyKey = "payroll-nov"; $0.items = items })
        #expect(replay.replayed)
        #expect(replay.payments.map(\.paymentID) == batch.payments.map(\.paymentID))

        var invalid = items
        invalid[1].creditor.bic = "NOPE"
        let refused = await #expect(throws: RPCError.self) {
          try await payments.createPaymentBatch(.with { $0.idempotencyKey = "payroll-bad"; $0.items = invalid })
        }
        #expect(try Self.violations(refused) == ["items[1].creditor.bic"])

        let available = try #require(try server.payments.available(accountID: "icbc-cny-002"))
        var tooMuch = items
        tooMuch[2].amount.minorUnits = available
        let unfunded = await #expect(throws: RPCError.self) {
          try await payments.createPaymentBatch(.with { $0.idempotencyKey = "payroll-big"; $0.items = tooMuch })
        }
        #expect(unfunded?.code == .failedPrecondition)
        #expect(unfunded?.message.contains("items[2]") == true)
        #expect(unfunded?.message.contains("items[0]") == false)
        // Nothing of the refused batches was created or reserved.
        let listed = try await payments.listPayments(.with { $0.pageSize = 100 })
        #expect(listed.payments.count == 3)
        let after = try server.payments.available(accountID: "icbc-cny-002")
        #expect(after == available)
      }
    }
  }
}
