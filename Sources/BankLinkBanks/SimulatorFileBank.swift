import BankLinkCore
import BankLinkFormats
import BankLinkStore
import Foundation

/// The embedded simulator's **file mode**: it plays the bank on the other side of the
/// host-to-host directories. Each ``exchange(now:)`` round it
///
/// 1. takes the pain.001 files from the outbox (in name order), submits their transfers to the
///    simulated bank (which deduplicates by message id and EndToEndId) and removes each file once
///    submitted; a file it cannot read is moved to `outbox/rejected/`;
/// 2. answers the new status reports with one pain.002;
/// 3. notifies each account's new booked entries with a camt.054, and every
///    `statementIntervalMilliseconds` (and on the first round) writes a camt.053 statement of the
///    entries since the previous one: opening balance = previous closing, closing = opening +
///    entries, electronic sequence number + 1.
///
/// Files reach the inbox exactly once: a round's files and the cursors they advance are
/// committed together in the simulator's store as pending files, then written (temporary name,
/// fsync, rename) and cleared. A kill between the two rewrites the same bytes at the next round.
/// Names start with a counter, so the connector reads them in the order the bank wrote them.
public final class SimulatorFileBank: Sendable {
  public let simulator: BankSimulator
  public let outbox: String
  public let inbox: String
  public let statementIntervalMilliseconds: Int64

  static let pendingPrefix = Array("files/pending/".utf8)
  static let stateKey = Array("files/state".utf8)
  /// Status reports and entries taken per round (the rest wait for the next round).
  public static let maxItemsPerRound = 5_000

  public init(simulator: BankSimulator, outbox: String, inbox: String, statementIntervalMilliseconds: Int64) throws {
    self.simulator = simulator
    self.outbox = outbox
    self.inbox = inbox
    self.statementIntervalMilliseconds = statementIntervalMilliseconds
    for directory in [outbox, inbox, outbox + "/rejected"] {
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }
  }

  /// The bank's side of the exchange, kept in the simulator's store.
  struct State {
    struct AccountState {
      var notified: UInt64 = 0
      var statementFrom: UInt64 = 0
      var closing: Int64
      var sequence: UInt64 = 0
      var lastStatement: Int64 = 0
    }
    var fileCounter: UInt64 = 0
    var reportCursor: UInt64 = 0
    var accounts: [String: AccountState] = [:]
  }

  public struct RoundOutcome: Sendable, Hashable {
    public var submitted = 0
    public var rejectedFiles = 0
    public var filesWritten = 0
  }

  /// One round: outbox in, inbox out.
  @discardableResult
  public func exchange(now: Instant) async throws -> RoundOutcome {
    var outcome = RoundOutcome()
    try await self.flushPending()
    try await self.takeOutbox(&outcome)
    let deadline = ContinuousClock.now.advanced(by: .seconds(30))
    var state = try self.loadState()
    var files: [(name: String, bytes: [UInt8])] = []
    func name(_ kind: String) -> String {
      state.fileCounter += 1
      return String(format: "%010llu-%@.xml", state.fileCounter, kind)
    }

    let reports = try await self.simulator.fetchStatusReports(
      after: String(state.reportCursor), limit: Self.maxItemsPerRound, deadline: deadline)
    if !reports.reports.isEmpty {
      let statuses = reports.reports.map {
        Pain002Writer.Status(originalEndToEndID: $0.endToEndID, status: $0.statusCode, reasonCode: $0.reasonCode, reasonText: $0.reasonText)
      }
      let messageID = "SIMSTS\(state.fileCounter + 1)"
      files.append((name("pain002"), try Pain002Writer.write(messageID: messageID, createdAt: now.isoTimestamp, originalMessageID: "", statuses: statuses)))
      state.reportCursor = UInt64(reports.nextCursor) ?? state.reportCursor
    }

    for simulated in SimulatorCatalogue.accounts {
      let account = simulated.account
      var accountState = state.accounts[account.id] ?? State.AccountState(closing: simulated.openingMinorUnits)
      let statementDue =
        accountState.sequence == 0 || now.millisecondsSinceEpoch - accountState.lastStatement >= self.statementIntervalMilliseconds
      if statementDue {
        let page = try await self.simulator.fetchTransactions(
          accountID: account.id, after: String(accountState.statementFrom), limit: Self.maxItemsPerRound, deadline: deadline)
        let opening = accountState.closing
        let closing = page.transactions.reduce(opening) { $0 + ($1.direction == .debit ? -$1.amount.minorUnits : $1.amount.minorUnits) }
        accountState.sequence += 1
        let statement = Self.statement(
          account, page.transactions, messageID: "SIMSTM\(state.fileCounter + 1)", sequence: accountState.sequence,
          opening: opening, closing: closing, now: now)
        files.append((name("camt053-\(account.id)"), try CamtWriter.write(statement, kind: .statement053)))
        accountState.closing = closing
        accountState.statementFrom = UInt64(page.nextCursor) ?? accountState.statementFrom
        accountState.notified = max(accountState.notified, accountState.statementFrom)
        accountState.lastStatement = now.millisecondsSinceEpoch
      } else {
        let page = try await self.simulator.fetchTransactions(
          accountID: account.id, after: String(accountState.notified), limit: Self.maxItemsPerRound, deadline: deadline)
        if !page.transactions.isEmpty {
          let notification = Self.statement(
            account, page.transactions, messageID: "SIMNTF\(state.fileCounter + 1)", sequence: nil, opening: nil, closing: nil, now: now)
          files.append((name("camt054-\(account.id)"), try CamtWriter.write(notification, kind: .notification054)))
          accountState.notified = UInt64(page.nextCursor) ?? accountState.notified
        }
      }
      state.accounts[account.id] = accountState
    }
    guard !files.isEmpty else { return outcome }
    let committed = state
    let pending = files
    // The files and the state they advance commit together, then the files are written.
    try await self.simulator.store.write { txn in
      try txn.put(Self.stateKey, Self.encode(committed), in: .meta)
      for file in pending { try txn.put(Self.pendingPrefix + Array(file.name.utf8), file.bytes, in: .meta) }
    }
    outcome.filesWritten = try await self.flushPending()
    return outcome
  }

  /// Writes the files committed as pending into the inbox and clears them; returns how many.
  @discardableResult
  func flushPending() async throws -> Int {
    let pending = try self.simulator.store.withReadTransaction { txn in
      var files: [(key: [UInt8], bytes: [UInt8])] = []
      try txn.scan(.meta, from: Self.pendingPrefix) { key, value in
        guard key.starts(with: Self.pendingPrefix) else { return false }
        files.append((key, value))
        return true
      }
      return files
    }
    for file in pending {
      try DurableFile.write(file.bytes, to: self.inbox + "/" + String(decoding: file.key.dropFirst(Self.pendingPrefix.count), as: UTF8.self))
    }
    guard !pending.isEmpty else { return 0 }
    let keys = pending.map(\.key)
    try await self.simulator.store.write { txn in
      for key in keys { _ = try txn.delete(key, in: .meta) }
    }
    return pending.count
  }

  func takeOutbox(_ outcome: inout RoundOutcome) async throws {
    let names = try FileManager.default.contentsOfDirectory(atPath: self.outbox)
      .filter { !$0.hasPrefix(".") && $0.hasSuffix(".xml") }.sorted()
    for name in names.prefix(64) {
      let path = self.outbox + "/" + name
      let submissions: [PaymentSubmission]
      do {
        submissions = try Self.submissions(Pain001Reader.read(.file(path)))
      } catch {
        try? Data("\(error)\n".utf8).write(to: URL(fileURLWithPath: self.outbox + "/rejected/" + name + ".reason"))
        _ = rename(path, self.outbox + "/rejected/" + name)
        outcome.rejectedFiles += 1
        continue
      }
      // Faults (an outage) leave the file for a later round; a rejected message is set aside.
      let refusal: BankError?
      do {
        _ = try await self.simulator.submitPayments(submissions, deadline: ContinuousClock.now.advanced(by: .seconds(30)))
        refusal = nil
      } catch {
        guard error.code == .rejected else { throw error }
        refusal = error
      }
      if let refusal {
        try? Data("\(refusal)\n".utf8).write(to: URL(fileURLWithPath: self.outbox + "/rejected/" + name + ".reason"))
        _ = rename(path, self.outbox + "/rejected/" + name)
        outcome.rejectedFiles += 1
        continue
      }
      try FileManager.default.removeItem(atPath: path)
      outcome.submitted += submissions.count
    }
  }

  struct UnknownDebtor: Error, CustomStringConvertible {
    var account: String
    var description: String { "the debtor account \(self.account) is not held at the simulated bank" }
  }

  static func submissions(_ message: Pain001Reader.Message) throws -> [PaymentSubmission] {
    try message.transfers.map { transfer in
      let compact = transfer.debtorAccount.filter { $0 != " " }
      guard
        let debtor = SimulatorCatalogue.accounts.first(where: {
          $0.account.number.filter { $0 != " " } == compact || (!$0.account.iban.isEmpty && $0.account.iban == compact)
        }), let currency = CurrencyCode(transfer.currency)
      else { throw UnknownDebtor(account: transfer.debtorAccount) }
      return PaymentSubmission(
        messageID: transfer.instructionID.isEmpty ? message.messageID : transfer.instructionID, endToEndID: transfer.endToEndID,
        debtorAccountID: debtor.account.id, amount: Money(minorUnits: transfer.amountMinor, currency: currency),
        creditor: Counterparty(name: transfer.creditorName, accountNumber: transfer.creditorAccount, bankBIC: transfer.creditorAgentBIC, bankName: ""),
        creditorCountry: transfer.creditorCountry, remittanceInformation: transfer.remittance, requestedExecutionDate: transfer.executionDate)
    }
  }

  static func statement(
    _ account: Account, _ transactions: [BookedTransaction], messageID: String, sequence: UInt64?, opening: Int64?, closing: Int64?,
    now: Instant
  ) -> BankStatement {
    var header = StatementHeader(format: sequence == nil ? .camt054 : .camt053)
    header.messageID = messageID
    header.statementID = messageID
    header.sequenceNumber = sequence.map { Int($0) }
    header.createdAt = now.isoTimestamp
    header.account = StatementAccount(
      iban: account.iban, other: account.iban.isEmpty ? account.number : "", currency: account.currency.code, servicerBIC: account.bankBIC)
    var statement = BankStatement(header: header)
    if let opening, let closing {
      let from = transactions.first?.bookingTime.isoDate ?? now.isoDate
      statement.header.fromDateTime = from + "T00:00:00"
      statement.header.toDateTime = now.isoTimestamp
      statement.header.balances = [
        StatementBalance(type: "OPBD", amountMinor: opening, currency: account.currency.code, date: from),
        StatementBalance(type: "CLBD", amountMinor: closing, currency: account.currency.code, date: now.isoDate),
      ]
    }
    statement.entries = transactions.map { transaction in
      var entry = StatementEntry()
      entry.amountMinor = transaction.amount.minorUnits
      entry.currency = transaction.amount.currency.code
      entry.direction = transaction.direction == .debit ? .debit : .credit
      entry.bookingDate = transaction.bookingTime.isoDate
      entry.valueDate = transaction.valueDate
      entry.accountServicerReference = transaction.bankReference.isEmpty ? transaction.id : transaction.bankReference
      var details = TransactionDetails()
      details.endToEndID = transaction.endToEndID
      details.counterpartyName = transaction.counterparty.name
      details.counterpartyAccount = transaction.counterparty.accountNumber
      details.counterpartyBIC = transaction.counterparty.bankBIC
      if !transaction.description.isEmpty { details.remittance = [transaction.description] }
      entry.details = [details]
      return entry
    }
    return statement
  }

  func loadState() throws -> State {
    try self.simulator.store.withReadTransaction { txn in
      guard let bytes = try txn.get(Self.stateKey, in: .meta) else { return State() }
      var reader = RecordReader(bytes)
      var state = State()
      state.fileCounter = try reader.readUInt64()
      state.reportCursor = try reader.readUInt64()
      let count = try reader.readUInt32()
      for _ in 0..<count {
        let id = try reader.readString()
        state.accounts[id] = State.AccountState(
          notified: try reader.readUInt64(), statementFrom: try reader.readUInt64(), closing: try reader.readInt64(),
          sequence: try reader.readUInt64(), lastStatement: try reader.readInt64())
      }
      return state
    }
  }

  static func encode(_ state: State) -> [UInt8] {
    var writer = RecordWriter(capacity: 256)
    writer.write(state.fileCounter)
    writer.write(state.reportCursor)
    writer.write(UInt32(state.accounts.count))
    for (id, account) in state.accounts.sorted(by: { $0.key < $1.key }) {
      writer.write(id)
      writer.write(account.notified)
      writer.write(account.statementFrom)
      writer.write(account.closing)
      writer.write(account.sequence)
      writer.write(account.lastStatement)
    }
    return writer.bytes
  }
}
