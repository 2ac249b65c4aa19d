import BankLinkBanks
import BankLinkCore
import BankLinkJournal
import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import Testing

/// Outbox → bank → status reports → payment states and reservations, with the real simulator.
@Suite("Submission to the bank")
struct SubmissionTests {
  static let principals = [Principal(identity: "erp", roles: [.payer])]

  static func instruction(_ minorUnits: Int64, account: String = "icbc-cny-001") -> PaymentInstruction {
    PaymentInstruction(
      debtorAccountID: account,
      creditor: Creditor(name: "Jiangsu Hengrui Logistics Co., Ltd.", accountNumber: "3201 5501 0400 0087 761", bic: "PCBCCNBJ", country: "CN"),
      amount: Money(minorUnits: minorUnits, currency: CurrencyCode("CNY")!),
      purpose: "Freight INV-77", requestedExecutionDate: "", type: .domestic)
  }

  static func create(_ server: TestServer, count: Int, amount: Int64 = 10_000) async throws -> [Payment] {
    var payments: [Payment] = []
    for index in 0..<count {
      payments.append(try await server.payments.create(Self.instruction(amount + Int64(index)), idempotencyKey: "p-\(index)", creator: "erp").payment)
    }
    return payments
  }

  /// Lets the simulated bank process everything received so far.
  static func bankProcesses(_ server: TestServer) async throws {
    try await server.simulator.processSubmissions(now: WallClock.now().adding(milliseconds: 60_000))
  }

  static func statuses(_ server: TestServer, _ payments: [Payment]) throws -> [PaymentStatus] {
    try payments.map { try #require(try server.payments.payment($0.id)).status }
  }

  @Test("approved payments reach the bank once, settle, and release their reservation when booked")
  func exactlyOnceAndSettled() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let ledgerBefore = try #require(try server.cache.balance("icbc-cny-001")).balance.ledger.minorUnits
      let payments = try await Self.create(server, count: 5)
      let total = payments.reduce(0) { $0 + $1.instruction.amount.minorUnits }
      #expect(try server.payments.available(accountID: "icbc-cny-001") == ledgerBefore - total)

      #expect(try await server.submitter.submitPending() == 5)
      #expect(try await server.submitter.submitPending() == 0, "a second pass must send nothing")
      #expect(try Self.statuses(server, payments) == Array(repeating: .submitted, count: 5))
      let receipts = try server.simulator.receipts()
      #expect(payments.allSatisfy { receipts[$0.endToEndID] == 1 })

      try await Self.bankProcesses(server)
      try await server.submitter.pollStatusReports()
      #expect(try Self.statuses(server, payments) == Array(repeating: .settled, count: 5))
      let settled = try #require(try server.payments.payment(payments[0].id))
      #expect(settled.bankStatusCode == "ACSC")
      // Settled but not yet on the cached ledger: still reserved, so available is not overstated.
      #expect(try server.payments.available(accountID: "icbc-cny-001") == ledgerBefore - total)

      try await server.sync.syncOnce()
      let ledgerAfter = try #require(try server.cache.balance("icbc-cny-001")).balance.ledger.minorUnits
      #expect(try server.payments.available(accountID: "icbc-cny-001") == ledgerAfter)
      // The bank booked exactly one debit per payment.
      let bookedDebits = try server.cache.transactions(
        accountID: "icbc-cny-001", start: Instant(millisecondsSinceEpoch: 0), end: WallClock.now().adding(milliseconds: 120_000),
        direction: .debit, after: nil, limit: 100_000
      ).transactions.map(\.1.endToEndID)
      for payment in payments {
        #expect(bookedDebits.filter { $0 == payment.endToEndID }.count == 1)
      }
    }
  }

  @Test("the outbox goes to the bank in messages of at most submissionBatchSize, each payment once")
  func batchedMessages() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let count = Limits.submissionBatchSize + 20
      let payments = try await Self.create(server, count: count, amount: 100)
      let messagesBefore = server.simulator.messagesReceived
      #expect(try await server.submitter.submitPending() == count)
      #expect(server.simulator.messagesReceived - messagesBefore == 2)
      #expect(try server.payments.outbox(limit: 1_000).isEmpty)
      #expect(try Self.statuses(server, payments) == Array(repeating: .submitted, count: count))
      let receipts = try server.simulator.receipts()
      #expect(payments.allSatisfy { receipts[$0.endToEndID] == 1 })

      // A message that repeats a transaction: the bank counts the second receipt and marks it.
      let entry = PaymentLedger.OutboxEntry(key: [], paymentID: payments[0].id, messageID: "MSG-REPEAT")
      let submission = server.payments.submissionForTesting(entry, payments[0])
      let acknowledgements = try await server.simulator.submitPayments([submission, submission], deadline: .now.advanced(by: .seconds(5)))
      #expect(acknowledgements.map(\.duplicate) == [true, true])
      #expect(try server.simulator.receipts()[payments[0].endToEndID] == 3)
    }
  }

  @Test("a message the bank refuses is split: only the transaction refused on its own fails")
  func refusedMessage() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let payments = try await Self.create(server, count: 3)
      let bad = payments[1]
      let availableBefore = try #require(try server.payments.available(accountID: "icbc-cny-001"))
      server.simulator.setFaults(.init(refusedEndToEndIDs: [bad.endToEndID]))
      #expect(try await server.submitter.submitPending() == 2)
      #expect(try Self.statuses(server, payments) == [.submitted, .failed, .submitted])
      let receipts = try server.simulator.receipts()
      #expect(receipts[payments[0].endToEndID] == 1)
      #expect(receipts[payments[2].endToEndID] == 1)
      #expect(receipts[bad.endToEndID] == nil, "a refused message leaves no record at the bank")
      // The failed payment no longer reserves funds; the others still do.
      #expect(try server.payments.available(accountID: "icbc-cny-001") == availableBefore + bad.instruction.amount.minorUnits)
      #expect(try server.payments.outbox(limit: 10).isEmpty)
    }
  }

  @Test("a lost acknowledgement is resent with the same ids and the bank deduplicates it")
  func lostAcknowledgement() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let payment = try #require(try await Self.create(server, count: 1).first)
      // The bank receives it but the daemon never learns (as after a crash before the outbox
      // entry was removed).
      let entry = try #require(try server.payments.outbox(limit: 10).first?.entry)
      let first = try await server.simulator.submitPayment(
        server.payments.submissionForTesting(entry, payment), deadline: .now.advanced(by: .seconds(5)))
      #expect(!first.duplicate)
      #expect(try await server.submitter.submitPending() == 1)
      #expect(try server.simulator.receipts()[payment.endToEndID] == 2)
      try await Self.bankProcesses(server)
      try await server.submitter.pollStatusReports()
      try await server.sync.syncOnce()
      #expect(try server.payments.payment(payment.id)?.status == .settled)
      let debits = try server.cache.transactions(
        accountID: "icbc-cny-001", start: Instant(millisecondsSinceEpoch: 0), end: WallClock.now().adding(milliseconds: 120_000),
        direction: .debit, after: nil, limit: 100_000
      ).transactions.filter { $0.1.endToEndID == payment.endToEndID }
      #expect(debits.count == 1, "deduplicated by the bank: paid once")
    }
  }

  @Test("a re-send the bank refuses as a duplicate message stays submitting and reserved, alerts, and settles on the report")
  func refusedResend() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let availableBefore = try #require(try server.payments.available(accountID: "icbc-cny-001"))
      let payment = try #require(try await Self.create(server, count: 1).first)
      // A round claims the payment and the bank receives it, but the answer is lost (the
      // daemon crashed or timed out before recording it).
      let claimed = try await server.payments.claimForSubmission(limit: 10)
      #expect(claimed.map(\.resend) == [false])
      let entry = try #require(claimed.first?.entry)
      _ = try await server.simulator.submitPayment(
        server.payments.submissionForTesting(entry, payment), deadline: .now.advanced(by: .seconds(5)))
      // The next round sends it again, and this bank refuses a message it already holds (DU01).
      server.simulator.setFaults(.init(refuseDuplicateMessages: true))
      #expect(try await server.submitter.submitPending() == 0)
      let held = try #require(try server.payments.payment(payment.id))
      #expect(held.status == .submitting, "failing it would release funds the bank may still pay")
      #expect(try server.payments.available(accountID: "icbc-cny-001") == availableBefore - payment.instruction.amount.minorUnits)
      #expect(try server.payments.outbox(limit: 10).isEmpty, "not sent a third time")
      #expect(try server.simulator.receipts()[payment.endToEndID] == 1)
      let journal = try server.payments.auditEntries(limit: 1_000).filter { $0.object == payment.id }.map(\.action)
      #expect(journal.last == "payment.resend_refused")
      let alerts = try server.payments.writer.store.withReadTransaction { txn in
        try AlertLog.page(after: 0, limit: 100, scanLimit: 1_000, filter: AlertFilter(), in: txn).alerts
      }.filter { $0.paymentID == payment.id }
      #expect(alerts.map(\.kind) == [.anomaly])
      #expect(alerts.first?.severity == .critical)
      #expect(alerts.first?.message.contains("DU01") == true, "\(alerts)")

      // The bank pays the first copy and reports it: the payment settles, paid once.
      try await Self.bankProcesses(server)
      try await server.submitter.pollStatusReports()
      #expect(try server.payments.payment(payment.id)?.status == .settled)
      try await server.sync.syncOnce()
      let ledgerAfter = try #require(try server.cache.balance("icbc-cny-001")).balance.ledger.minorUnits
      #expect(try server.payments.available(accountID: "icbc-cny-001") == ledgerAfter)
    }
  }

  @Test("a first attempt the bank refuses fails at once, with no alert about a possible first copy")
  func refusedFirstAttempt() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let payment = try #require(try await Self.create(server, count: 1).first)
      server.simulator.setFaults(.init(refusedEndToEndIDs: [payment.endToEndID], refuseDuplicateMessages: true))
      #expect(try await server.submitter.submitPending() == 0)
      #expect(try server.payments.payment(payment.id)?.status == .failed)
      let journal = try server.payments.auditEntries(limit: 1_000).filter { $0.object == payment.id }.map(\.action)
      #expect(!journal.contains("payment.resend_refused"))
    }
  }

  @Test("bank faults: outage, rejections, duplicated and reordered reports all end in the right state")
  func bankFaults() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let before = try #require(try server.payments.available(accountID: "icbc-cny-001"))
      let payments = try await Self.create(server, count: 6)

      server.simulator.setFaults(.init(outage: true))
      await #expect(throws: BankError.self) { try await server.submitter.submitPending() }
      // Claimed before the bank call, so no longer cancellable; sent again on the next round.
      #expect(try Self.statuses(server, payments) == Array(repeating: .submitting, count: 6))

      server.simulator.setFaults(.init(timeoutRate: 0, rejectionRate: 1, duplicateReportRate: 1, reorderReports: true))
      #expect(try await server.submitter.submitPending() == 6)
      try await Self.bankProcesses(server)
      try await server.submitter.pollStatusReports()
      let failed = try Self.statuses(server, payments)
      #expect(failed == Array(repeating: .failed, count: 6))
      let payment = try #require(try server.payments.payment(payments[0].id))
      #expect(payment.bankStatusCode == "RJCT")
      #expect(payment.bankReasonCode == "AC04")
      // Rejected payments release their reservations at once.
      #expect(try server.payments.available(accountID: "icbc-cny-001") == before)

      // Replaying the whole report feed changes nothing.
      _ = try await server.payments.apply(
        try await server.simulator.fetchStatusReports(after: nil, limit: 1000, deadline: .now.advanced(by: .seconds(5))).reports,
        nextCursor: try #require(try server.payments.statusCursor()))
      #expect(try Self.statuses(server, payments) == failed)
      #expect(try server.payments.available(accountID: "icbc-cny-001") == before)
    }
  }

  @Test("a payment handed to the bank can no longer be cancelled")
  func noCancelAfterSubmission() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let payment = try #require(try await Self.create(server, count: 1).first)
      try await server.submitter.submitPending()
      await #expect(throws: PaymentLedger.Refusal.notCancellable(paymentID: payment.id, status: .submitted)) {
        try await server.payments.cancel(payment.id, by: "erp", isAdmin: false, reason: "too late")
      }
    }
  }
}
