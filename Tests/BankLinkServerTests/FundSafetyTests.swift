import BankLinkBanks
import BankLinkClient
import BankLinkCore
import BankLinkJournal
import BankLinkProto
import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SwiftProtobuf
import Logging
import Synchronization
import Testing

/// The ways money could be lost that issue 9 found: a cancel racing the bank call, available
/// overstated between syncs, bad bank data stalling processing, a replay refused after
/// midnight. Each test reproduces the fault against the real simulator and store.
@Suite("Fund safety")
struct FundSafetyTests {
  static let principals = [Principal(identity: "erp", roles: [.payer]), Principal(identity: "admin", roles: [.admin])]
  static let account = "icbc-cny-001"

  static func instruction(_ minorUnits: Int64, date: String = "") -> PaymentInstruction {
    PaymentInstruction(
      debtorAccountID: Self.account,
      creditor: Creditor(name: "Jiangsu Hengrui Logistics Co., Ltd.", accountNumber: "3201 5501 0400 0087 761", bic: "PCBCCNBJ", country: "CN"),
      amount: Money(minorUnits: minorUnits, currency: CurrencyCode("CNY")!),
      purpose: "Freight INV-77", requestedExecutionDate: date, type: .domestic)
  }

  static func bankProcesses(_ server: TestServer) async throws {
    try await server.simulator.processSubmissions(now: WallClock.now().adding(milliseconds: 60_000))
  }

  /// Ledger − Σ amounts of payments that still hold a reservation, from the stored payments.
  static func expectedAvailable(_ server: TestServer) throws -> Int64 {
    let ledger = try #require(try server.cache.balance(Self.account)).balance.ledger.minorUnits
    var open: Int64 = 0
    var after: String?
    repeat {
      let page = try server.payments.list(.init(), after: after, limit: Limits.maxPageSize)
      open += page.payments.filter { $0.instruction.debtorAccountID == Self.account && $0.status.holdsReservation }
        .reduce(0) { $0 + $1.instruction.amount.minorUnits }
      after = page.resumeAfter
    } while after != nil
    return ledger - open
  }

  // MARK: 1. Cancel vs submission

  @Test("a claimed payment cannot be cancelled (FAILED_PRECONDITION, with the bank); a cancelled one is never sent")
  func claimBeforeBankCall() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let claimed = try await server.payments.create(Self.instruction(10_000), idempotencyKey: "a", creator: "erp").payment
      let sending = try await server.payments.claimForSubmission(limit: 10)
      #expect(sending.map(\.payment.id) == [claimed.id])
      #expect(try server.payments.payment(claimed.id)?.status == .submitting)
      await #expect(throws: PaymentLedger.Refusal.notCancellable(paymentID: claimed.id, status: .submitting)) {
        try await server.payments.cancel(claimed.id, by: "erp", isAdmin: false, reason: "too late")
      }
      // Over gRPC the refusal says the payment is with the bank.
      let files = try server.pki.client(commonName: "erp")
      try await withBankLinkClient(server.client(files)) { client in
        let payments = Banklink_V1_PaymentService.Client(wrapping: client)
        let error = await #expect(throws: RPCError.self) {
          try await payments.cancelPayment(.with { $0.paymentID = claimed.id; $0.reason = "too late" })
        }
        #expect(error?.code == .failedPrecondition)
        #expect(error?.message.contains("with the bank") == true)
      }
      // The claimed payment goes out (again, with the same ids) on the next round.
      #expect(try await server.submitter.submitPending() == 1)
      #expect(try server.payments.payment(claimed.id)?.status == .submitted)

      // Cancelled before the claim: the outbox entry is discarded, nothing reaches the bank.
      let cancelled = try await server.payments.create(Self.instruction(20_000), idempotencyKey: "b", creator: "erp").payment
      _ = try await server.payments.cancel(cancelled.id, by: "erp", isAdmin: false, reason: "duplicate")
      #expect(try await server.submitter.submitPending() == 0)
      #expect(try server.simulator.receipts()[cancelled.endToEndID] == nil)
      #expect(try server.payments.outbox(limit: 10).isEmpty)
    }
  }

  @Test("load: hundreds of cancels at random moments of a slow bank's submission cycle; nothing cancelled is paid")
  func cancelRaceUnderLoad() async throws {
    try await withTestServer(principals: Self.principals) { server in
      // A slow bank widens the window between the claim and the acknowledgement.
      server.simulator.setFaults(.init(latencyMilliseconds: 40, jitterMilliseconds: 80))
      let stop = Atomic(false)
      let submitter = Task {
        while !stop.load(ordering: .acquiring) {
          _ = try? await server.submitter.submitPending()
          try? await Self.bankProcesses(server)
          _ = try? await server.submitter.pollStatusReports()
        }
      }
      let count = 300
      var generator = SplitMix64(seed: 20_261_202)
      let delays = (0..<count).map { _ in Int.random(in: 0...250, using: &generator) }
      let outcomes = try await withThrowingTaskGroup(of: (Payment, Bool).self) { group in
        for index in 0..<count {
          group.addTask {
            let payment = try await server.payments.create(
              Self.instruction(1_000 + Int64(index)), idempotencyKey: "race-\(index)", creator: "erp"
            ).payment
            // Random moments, and two kinds that make sure both sides of the claim are hit on a
            // machine of any speed (a loaded CI runner may claim nothing within 250 ms): every
            // fourth payment is cancelled at once, every fourth after the submitter claimed it.
            switch index % 4 {
            case 0: break
            case 1:
              let claimedBy = ContinuousClock.now.advanced(by: .seconds(20))
              while try server.payments.payment(payment.id)?.status == .approved, ContinuousClock.now < claimedBy {
                try await Task.sleep(for: .milliseconds(5))
              }
            default: try await Task.sleep(for: .milliseconds(delays[index]))
            }
            do {
              _ = try await server.payments.cancel(payment.id, by: "erp", isAdmin: false, reason: "race")
              return (payment, true)
            } catch let refusal as PaymentLedger.Refusal {
              guard case .notCancellable = refusal else { throw refusal }
              return (payment, false)
            }
          }
        }
        var outcomes: [(Payment, Bool)] = []
        for try await outcome in group { outcomes.append(outcome) }
        return outcomes
      }
      stop.store(true, ordering: .releasing)
      await submitter.value
      server.simulator.setFaults(.none)
      // Drain: everything still owed to the bank goes out, settles, and the cache catches up.
      try await server.submitter.submitPending()
      try await Self.bankProcesses(server)
      try await server.submitter.pollStatusReports()
      try await server.sync.syncOnce()

      let cancelled = outcomes.filter(\.1).map(\.0)
      let refused = outcomes.filter { !$0.1 }.map(\.0)
      #expect(!cancelled.isEmpty && !refused.isEmpty, "the delays must hit both sides of the claim")
      let receipts = try server.simulator.receipts()
      for payment in cancelled {
        #expect(receipts[payment.endToEndID] == nil, "cancelled payment \(payment.id) reached the bank")
        #expect(try server.payments.payment(payment.id)?.status == .cancelled)
      }
      for payment in refused {
        #expect(receipts[payment.endToEndID] == 1, "a refused cancel means the bank has it, once")
        #expect(try server.payments.payment(payment.id)?.status == .settled)
      }
      #expect(try server.payments.available(accountID: Self.account) == Self.expectedAvailable(server))
      #expect(try server.payments.auditEntries(limit: 100_000).filter { $0.action == "bank.anomaly" }.isEmpty)
    }
  }

  @Test("a bank report the payment's state cannot take is recorded as an anomaly, never dropped")
  func reportForCancelledPayment() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let payment = try await server.payments.create(Self.instruction(30_000), idempotencyKey: "c", creator: "erp").payment
      _ = try await server.payments.cancel(payment.id, by: "erp", isAdmin: false, reason: "stop")
      let cursor = "crafted-1"
      let applied = try await server.payments.apply(
        [PaymentStatusReport(endToEndID: payment.endToEndID, statusCode: "ACSC", time: WallClock.now())], nextCursor: cursor)
      #expect(applied.changed == 0)
      #expect(applied.anomalies.count == 1)
      #expect(applied.anomalies.first?.subject == payment.id)
      let recorded = try server.payments.auditEntries(limit: 10_000).filter { $0.action == "bank.anomaly" }
      #expect(recorded.count == 1)
      #expect(recorded.first?.payload.contains("cancelled") == true)
      #expect(try server.payments.payment(payment.id)?.status == .cancelled)
      #expect(try server.payments.statusCursor() == cursor)
    }
  }

  @Test("a bank report for a payment never sent (approved, not claimed) is an anomaly: not settled, still sent")
  func reportForUnsentPayment() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let payment = try await server.payments.create(Self.instruction(30_000), idempotencyKey: "u", creator: "erp").payment
      #expect(payment.status == .approved)
      let applied = try await server.payments.apply(
        [PaymentStatusReport(endToEndID: payment.endToEndID, statusCode: "ACSC", time: WallClock.now())], nextCursor: "forged-1")
      #expect(applied.changed == 0 && applied.anomalies.map(\.subject) == [payment.id])
      let recorded = try server.payments.auditEntries(limit: 10_000).filter { $0.action == "bank.anomaly" }
      #expect(recorded.count == 1 && recorded.first?.payload.contains("has not been sent") == true, "\(recorded)")
      #expect(try server.payments.payment(payment.id)?.status == .approved)
      // The submitter still sends it, once.
      #expect(try await server.submitter.submitPending() == 1)
      #expect(try server.simulator.receipts()[payment.endToEndID] == 1)
    }
  }

  // MARK: 2. Available never overstated

  @Test("a booked debit releases its reservation only with a balance that includes it; an older balance never replaces a newer")
  func availableAfterPartialSync() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let payment = try await server.payments.create(Self.instruction(50_000), idempotencyKey: "d", creator: "erp").payment
      try await server.submitter.submitPending()
      try await Self.bankProcesses(server)
      try await server.submitter.pollStatusReports()
      #expect(try server.payments.payment(payment.id)?.status == .settled)
      let oldLedger = try #require(try server.cache.balance(Self.account)).balance.ledger.minorUnits
      #expect(try server.payments.available(accountID: Self.account) == oldLedger - 50_000)

      // The transactions sync, then the balance fetch fails: the debit is in the history but
      // not in the cached ledger, so the reservation must stay.
      let cursor = try server.cache.syncCursor(Self.account)
      let page = try await server.simulator.fetchTransactions(
        accountID: Self.account, after: cursor, limit: 1_000, deadline: .now.advanced(by: .seconds(5)))
      #expect(page.transactions.contains { $0.endToEndID == payment.endToEndID })
      try await server.cache.apply(page, accountID: Self.account, syncedAt: WallClock.now())
      #expect(
        try server.payments.available(accountID: Self.account) == oldLedger - 50_000,
        "available must not rise before the cached ledger shows the debit")

      // The balance that includes the debit releases it in the same write.
      let fresh = try await server.simulator.fetchBalance(accountID: Self.account, deadline: .now.advanced(by: .seconds(5)))
      #expect(try await server.cache.store(balance: fresh, syncedAt: WallClock.now()) == .stored)
      #expect(fresh.ledger.minorUnits == oldLedger - 50_000)
      #expect(try server.payments.available(accountID: Self.account) == fresh.ledger.minorUnits)

      // A refresh that lost the race with the sync: an older balance is kept out.
      let stale = LedgerBalance(accountID: Self.account, ledger: Money(minorUnits: oldLedger, currency: fresh.ledger.currency), asOf: fresh.asOf.adding(milliseconds: -1))
      #expect(try await server.cache.store(balance: stale, syncedAt: WallClock.now()) == .keptNewer)
      #expect(try server.cache.balance(Self.account)?.balance == fresh)
      #expect(try server.payments.available(accountID: Self.account) == fresh.ledger.minorUnits)
    }
  }

  @Test("a balance in another currency than the account's is refused")
  func balanceCurrencyChecked() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let before = try server.cache.balance(Self.account)
      let wrong = LedgerBalance(accountID: Self.account, ledger: Money(minorUnits: 1, currency: CurrencyCode("USD")!), asOf: WallClock.now())
      await #expect(throws: BankError.self) { try await server.cache.store(balance: wrong, syncedAt: WallClock.now()) }
      #expect(try server.cache.balance(Self.account) == before)
    }
  }

  @Test("a balance dated ahead of the clock is refused: it would freeze the cache and release early")
  func futureBalanceRefused() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let before = try #require(try server.cache.balance(Self.account))
      let future = LedgerBalance(
        accountID: Self.account, ledger: before.balance.ledger,
        asOf: WallClock.now().adding(milliseconds: BankDataLimits.maxClockSkewMilliseconds + 60_000))
      await #expect(throws: BankError.self) { try await server.cache.store(balance: future, syncedAt: WallClock.now()) }
      #expect(try server.cache.balance(Self.account) == before)
    }
  }

  @Test("a debit carrying a payment's EndToEndId on another account or for another amount releases nothing")
  func foreignDebitNotMatched() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let payment = try await server.payments.create(Self.instruction(70_000), idempotencyKey: "f", creator: "erp").payment
      try await server.submitter.submitPending()
      _ = try await server.payments.apply(
        [PaymentStatusReport(endToEndID: payment.endToEndID, statusCode: "ACSC", time: WallClock.now())], nextCursor: "x")
      #expect(try server.payments.payment(payment.id)?.status == .settled)
      let availableBefore = try #require(try server.payments.available(accountID: Self.account))
      // A fee of 1.00 carrying the payment's EndToEndId, then a balance that includes it.
      let fee = BookedTransaction(
        id: "fee-1", accountID: Self.account, amount: Money(minorUnits: 100, currency: CurrencyCode("CNY")!), direction: .debit,
        bookingTime: WallClock.now(), valueDate: WallClock.now().isoDate,
        counterparty: Counterparty(name: "Bank", accountNumber: "1", bankBIC: "ICBKCNBJ", bankName: "ICBC"),
        endToEndID: payment.endToEndID, bankReference: "FEE", description: "fee")
      let applied = try await server.cache.apply(
        TransactionFeedPage(transactions: [fee], nextCursor: try server.cache.syncCursor(Self.account) ?? "", hasMore: false),
        accountID: Self.account, syncedAt: WallClock.now())
      #expect(applied.anomalies.count == 1)
      let ledger = try #require(try server.cache.balance(Self.account)).balance.ledger
      try await server.cache.store(
        balance: LedgerBalance(accountID: Self.account, ledger: ledger, asOf: WallClock.now().adding(milliseconds: 1)), syncedAt: WallClock.now())
      #expect(try server.payments.available(accountID: Self.account) == availableBefore, "the reservation must stay")
    }
  }

  // MARK: 3. Bad bank data

  @Test("bad feed entries are skipped and recorded while the cursor moves on")
  func badTransactionsSkipped() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let before = try server.cache.transactionCount(accountID: Self.account)
      func entry(_ id: String) -> BookedTransaction {
        BookedTransaction(
          id: id, accountID: Self.account, amount: Money(minorUnits: 100, currency: CurrencyCode("CNY")!), direction: .credit,
          bookingTime: WallClock.now(), valueDate: WallClock.now().isoDate,
          counterparty: Counterparty(name: "X", accountNumber: "1", bankBIC: "ICBKCNBJ", bankName: "ICBC"),
          endToEndID: "", bankReference: "R", description: "d")
      }
      let page = TransactionFeedPage(
        transactions: [entry(""), entry(String(repeating: "x", count: 600)), entry("good-1")], nextCursor: "crafted-cursor", hasMore: false)
      let applied = try await server.cache.apply(page, accountID: Self.account, syncedAt: WallClock.now())
      #expect(applied.inserted == 1)
      #expect(applied.anomalies.count == 2)
      #expect(try server.cache.syncCursor(Self.account) == "crafted-cursor")
      #expect(try server.cache.transactionCount(accountID: Self.account) == before + 1)
      #expect(try server.payments.auditEntries(limit: 10_000).filter { $0.action == "bank.anomaly" }.count == 2)
    }
  }

  @Test("a feed cursor too long to store fails the page, is recorded once per episode, and clears when the feed moves")
  func overLongCursor() async throws {
    try await withTestServer(principals: Self.principals) { server in
      func anomalies() throws -> [Alert] {
        try server.payments.writer.store.withReadTransaction {
          try AlertLog.page(after: 0, limit: 1_000, scanLimit: 10_000, filter: AlertFilter(), in: $0).alerts
        }.filter { $0.kind == .anomaly && $0.message.contains("cannot move on") }
      }
      let long = String(repeating: "c", count: BankDataLimits.maxCursorBytes + 1)
      let cursorBefore = try server.cache.syncCursor(Self.account)
      let page = TransactionFeedPage(transactions: [], nextCursor: long, hasMore: false)
      // Every round fails the same way; the operator hears of it once.
      for _ in 0..<3 {
        await #expect(throws: BankError.self) { try await server.cache.apply(page, accountID: Self.account, syncedAt: WallClock.now()) }
        await #expect(throws: BankError.self) { try await server.payments.apply([], nextCursor: long) }
      }
      #expect(try server.cache.syncCursor(Self.account) == cursorBefore, "nothing half-written")
      let raised = try anomalies()
      #expect(raised.count == 2, "one for the account's feed, one for the status reports: \(raised.map(\.message))")
      #expect(try server.payments.auditEntries(limit: 10_000).filter { $0.action == "bank.anomaly" }.count == 2)

      // The feed moves on (a usable page): the episode ends, and a later stuck cursor is new.
      try await server.cache.apply(
        TransactionFeedPage(transactions: [], nextCursor: "ok-1", hasMore: false), accountID: Self.account, syncedAt: WallClock.now())
      await #expect(throws: BankError.self) { try await server.cache.apply(page, accountID: Self.account, syncedAt: WallClock.now()) }
      #expect(try anomalies().count == 3)
    }
  }

  @Test("status reports without a usable EndToEndId are recorded and passed over")
  func badReportsSkipped() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let payment = try await server.payments.create(Self.instruction(40_000), idempotencyKey: "e", creator: "erp").payment
      try await server.submitter.submitPending()
      let now = WallClock.now()
      let applied = try await server.payments.apply(
        [
          PaymentStatusReport(endToEndID: "", statusCode: "ACTC", time: now),  // group-level report
          PaymentStatusReport(endToEndID: String(repeating: "E", count: 600), statusCode: "ACTC", time: now),
          PaymentStatusReport(endToEndID: "BL-UNKNOWN", statusCode: "ACSC", time: now),
          PaymentStatusReport(endToEndID: payment.endToEndID, statusCode: "XXXX", time: now),
          PaymentStatusReport(endToEndID: payment.endToEndID, statusCode: "ACTC", time: now),
        ], nextCursor: "7")
      #expect(applied.anomalies.count == 4)
      #expect(applied.changed == 1)
      #expect(try server.payments.payment(payment.id)?.status == .accepted)
      #expect(try server.payments.statusCursor() == "7")
    }
  }

  @Test("one failing account does not stop the others from syncing")
  func accountsIsolated() async throws {
    try await withTestServer(principals: Self.principals) { server in
      // The first account (in the bank's order) fails; the last one must still sync.
      let ids = try server.cache.accounts().map(\.id)
      let (failing, other) = (try #require(ids.first), try #require(ids.last))
      let before = try server.cache.transactionCount(accountID: other)
      _ = try await server.simulator.book(
        accountID: other, amountMinorUnits: 700, direction: .credit, at: WallClock.now(),
        counterparty: Counterparty(name: "X", accountNumber: "1", bankBIC: "BKCHHKHH", bankName: "BOC"), description: "new")
      server.simulator.setFaults(.init(failingAccountIDs: [failing]))
      await #expect(throws: AccountSyncError.self) { try await server.sync.syncOnce() }
      #expect(try server.cache.transactionCount(accountID: other) == before + 1, "a later account still synced")
      #expect(server.sync.status.failedRounds == 1)
    }
  }

  @Test("a bank that always has more status reports is read a bounded number of pages per round")
  func statusPollingBounded() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.appending("data"), mapSizeMiB: 64))
      let ledger = PaymentLedger(writer: GroupCommitWriter(store: store), configuration: .init(), now: WallClock.now)
      let bank = EndlessReportsBank()
      let submitter = PaymentSubmitter(ledger: ledger, connector: bank, intervalMilliseconds: 100, logger: .init(label: "test"))
      _ = try await submitter.pollStatusReports()
      #expect(bank.pages.load(ordering: .relaxed) == BankDataLimits.maxStatusPagesPerRound)
      #expect(try ledger.statusCursor() == String(BankDataLimits.maxStatusPagesPerRound))
    }
  }

  // MARK: 4. Replay whatever the date

  @Test("a retry after midnight of a request dated that day returns the payment it created")
  func replayAfterMidnight() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let clock = Mutex(WallClock.now())
      let ledger = PaymentLedger(writer: server.payments.writer, configuration: .init(), now: { clock.withLock { $0 } })
      let today = clock.withLock { $0.isoDate }
      let created = try await ledger.create(Self.instruction(60_000, date: today), idempotencyKey: "midnight", creator: "erp")
      clock.withLock { $0 = $0.adding(milliseconds: 86_400_000) }
      let retried = try await ledger.create(Self.instruction(60_000, date: today), idempotencyKey: "midnight", creator: "erp")
      #expect(retried.replayed)
      #expect(retried.payment == created.payment)
      // A new key with yesterday's date is still refused.
      await #expect(throws: PaymentLedger.Refusal.self) {
        try await ledger.create(Self.instruction(60_000, date: today), idempotencyKey: "midnight-2", creator: "erp")
      }
      // The same for batches.
      let batch = try await ledger.createBatch([Self.instruction(1_000, date: clock.withLock { $0.isoDate })], idempotencyKey: "b", creator: "erp")
      clock.withLock { $0 = $0.adding(milliseconds: 86_400_000) }
      let batchRetry = try await ledger.createBatch([Self.instruction(1_000, date: batch.payments[0].instruction.requestedExecutionDate)], idempotencyKey: "b", creator: "erp")
      #expect(batchRetry.replayed && batchRetry.payments == batch.payments)
    }
  }

  @Test("an empty execution date is filled with the creation day, and a replay keeps it")
  func emptyDateFilled() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let created = try await server.payments.create(Self.instruction(1_000), idempotencyKey: "date", creator: "erp")
      #expect(created.payment.instruction.requestedExecutionDate == WallClock.now().isoDate)
      let again = try await server.payments.create(Self.instruction(1_000), idempotencyKey: "date", creator: "erp")
      #expect(again.replayed && again.payment == created.payment)
    }
  }

  // MARK: 5. Smaller ones

  @Test("an account known before its balance is synced: UNAVAILABLE (retry), never 'insufficient funds'")
  func balanceNotSyncedYet() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      // The accounts arrive first, as the first sync round stores them before any balance.
      let accounts = try await server.simulator.listAccounts(deadline: .now.advanced(by: .seconds(5)))
      _ = try await server.cache.store(accounts: accounts, at: WallClock.now())
      await #expect(throws: PaymentLedger.Refusal.balanceNotSynced(Self.account)) {
        try await server.payments.create(Self.instruction(1_000), idempotencyKey: "early", creator: "erp")
      }
      let error = await #expect(throws: RPCError.self) {
        try await withBankLinkClient(server.client(try server.pki.client(commonName: "erp"))) { client in
          try await Banklink_V1_PaymentService.Client(wrapping: client).createPayment(.with {
            $0.idempotencyKey = "early"
            $0.instruction = .with {
              $0.debtorAccountID = Self.account
              $0.creditor = .with { $0.name = "Jiangsu Hengrui Logistics Co., Ltd."; $0.accountNumber = "3201550104000087761"; $0.bic = "PCBCCNBJ"; $0.country = "CN" }
              $0.amount = .with { $0.minorUnits = 1_000; $0.currencyCode = "CNY" }
              $0.type = .domestic
            }
          })
        }
      }
      #expect(error?.code == .unavailable && error?.message.contains("not been synced") == true, "\(String(describing: error))")
      // Once synced, the same request succeeds.
      try await server.sync.syncOnce()
      #expect(try await server.payments.create(Self.instruction(1_000), idempotencyKey: "early", creator: "erp").payment.status == .approved)
    }
  }

  @Test("the approval threshold is in major units of each payment's currency")
  func thresholdPerCurrency() {
    let configuration = PaymentLedger.Configuration(approvalThresholdMajorUnits: 1_000_000)
    #expect(configuration.approvalThreshold(in: CurrencyCode("CNY")!) == 100_000_000)
    #expect(configuration.approvalThreshold(in: CurrencyCode("JPY")!) == 1_000_000)
    #expect(configuration.approvalThreshold(in: CurrencyCode("KWD")!) == 1_000_000_000)
    #expect(PaymentLedger.Configuration(approvalThresholdMajorUnits: .max).approvalThreshold(in: CurrencyCode("USD")!) == .max)
  }

  @Test("payment ids are fixed width and in commit order, after the ids of earlier builds")
  func idsInCommitOrder() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let created = try await withThrowingTaskGroup(of: Payment.self) { group in
        for index in 0..<120 {
          group.addTask {
            try await server.payments.create(Self.instruction(100 + Int64(index)), idempotencyKey: "id-\(index)", creator: "erp").payment
          }
        }
        var payments: [Payment] = []
        for try await payment in group { payments.append(payment) }
        return payments
      }
      #expect(Set(created.map(\.id.utf8.count)).count == 1, "fixed width")
      // Commit order is audit order: each payment's "payment.created" record follows the
      // previous payment's.
      let audited = try server.payments.auditEntries(limit: 10_000).filter { $0.action == "payment.created" }.map(\.object)
      #expect(audited == audited.sorted())
      #expect(audited.count == 120)
      let listed = try server.payments.list(.init(), after: nil, limit: 1_000).payments.map(\.id)
      #expect(listed == audited)
      #expect("pay-1764000000000-99" < created[0].id, "sorts after the ids of earlier builds")
    }
  }
}

/// A crafted bank whose status feed never ends: every page says more follows.
final class EndlessReportsBank: PaymentInitiationConnector {
  let pages = Atomic(0)

  func submitPayments(_ submissions: [PaymentSubmission], deadline: ContinuousClock.Instant) async throws(BankError)
    -> [SubmissionAcknowledgement]
  {
    throw BankError(.unavailable, "not used")
  }

  func fetchStatusReports(after cursor: String?, limit: Int, deadline: ContinuousClock.Instant) async throws(BankError)
    -> StatusReportPage
  {
    let page = self.pages.add(1, ordering: .relaxed).newValue
    return StatusReportPage(reports: [], nextCursor: String(page), hasMore: true)
  }
}
