@testable import BankLinkBanks
import BankLinkCore
import BankLinkFormats
import BankLinkTestSupport
import Foundation
import Testing

@Suite("Host-to-host file connector")
struct HostToHostTests {
  static let start = Instant(millisecondsSinceEpoch: 1_793_000_000_000)

  /// The simulated bank on one side of the directories and the connector on the other, on
  /// clocks the test moves.
  struct Setup {
    let simulator: BankSimulator
    let connector: HostToHostConnector
    let directory: TemporaryDirectory
    var outbox: String { self.directory.appending("outbox") }
    var inbox: String { self.directory.appending("inbox") }

    init(_ directory: TemporaryDirectory, clock: @escaping @Sendable () -> Instant) throws {
      self.directory = directory
      self.simulator = try BankSimulator(
        configuration: .init(directory: directory.appending("bank"), seed: 3, historyDays: 2, mapSizeMiB: 64, settlementDelayMilliseconds: 0),
        clock: clock)
      self.connector = try HostToHostConnector(
        configuration: .init(
          outbox: directory.appending("outbox"), inbox: directory.appending("inbox"), stateDirectory: directory.appending("connector"),
          accounts: BankSimulator.catalogueAccounts, settleMilliseconds: 0, mapSizeMiB: 64),
        clock: clock)
    }

    func bank(statementEveryMilliseconds: Int64 = 3_600_000) throws -> SimulatorFileBank {
      try SimulatorFileBank(simulator: self.simulator, outbox: self.outbox, inbox: self.inbox, statementIntervalMilliseconds: statementEveryMilliseconds)
    }

    func feed(_ account: String) async throws -> [BookedTransaction] {
      var cursor: String?
      var all: [BookedTransaction] = []
      while true {
        let page = try await self.connector.fetchTransactions(accountID: account, after: cursor, limit: 500, deadline: .now.advanced(by: .seconds(5)))
        all += page.transactions
        cursor = page.nextCursor
        if !page.hasMore { return all }
      }
    }

    func reports() async throws -> [BankLinkBanks.PaymentStatusReport] {
      try await self.connector.fetchStatusReports(after: nil, limit: 10_000, deadline: .now.advanced(by: .seconds(5))).reports
    }

    func names(_ path: String) throws -> [String] {
      try FileManager.default.contentsOfDirectory(atPath: path).filter { !$0.hasPrefix(".") }.sorted()
    }
  }

  static func submission(_ id: String, minor: Int64 = 12_345) -> PaymentSubmission {
    PaymentSubmission(
      messageID: "MSG-\(id)", endToEndID: "E2E-\(id)", debtorAccountID: "icbc-cny-001", amount: Money(minorUnits: minor, currency: CurrencyCode("CNY")!),
      creditor: Counterparty(name: "Shanghai Steel Co.", accountNumber: "6222020200112233", bankBIC: "ABOCCNBJ", bankName: ""),
      creditorCountry: "CN", remittanceInformation: "Invoice \(id)", requestedExecutionDate: "2026-10-26")
  }

  @Test("end to end through the directories: statements give balances, a payment goes out as pain.001 once, pain.002 and camt.054 come back")
  func endToEnd() async throws {
    try await withTemporaryDirectory { directory in
      let clock = ManualClock(Self.start)
      let setup = try Setup(directory) { clock.now }
      let bank = try setup.bank()
      let deadline = ContinuousClock.now.advanced(by: .seconds(10))

      // Before any statement the connector knows no balance: sync must not invent one.
      await #expect(throws: BankError.self) { try await setup.connector.fetchBalance(accountID: "icbc-cny-001", deadline: deadline) }

      // Round 1: the bank's first statement per account.
      let first = try await bank.exchange(now: clock.now)
      #expect(first.filesWritten == BankSimulator.catalogueAccounts.count)
      let polled = try await setup.connector.pollInbox()
      #expect(polled.processed == first.filesWritten && polled.quarantined == 0)
      #expect(try setup.names(setup.inbox).filter { $0.hasSuffix(".xml") }.isEmpty)
      #expect(try setup.names(setup.inbox + "/archive").count == first.filesWritten)
      for account in BankSimulator.catalogueAccounts {
        let bankBalance = try await setup.simulator.fetchBalance(accountID: account.id, deadline: deadline)
        let balance = try await setup.connector.fetchBalance(accountID: account.id, deadline: deadline)
        #expect(balance.ledger == bankBalance.ledger, "\(account.id)")
        let bankEntries = try await BankSimulatorTests.all(setup.simulator, account.id)
        #expect(try await setup.feed(account.id).count == bankEntries.count, "\(account.id)")
      }
      let statementEvents = try setup.connector.events(after: 0, limit: 100)
      #expect(statementEvents.count == first.filesWritten)

      // A payment: one pain.001 in the outbox; the same round again writes nothing new.
      clock.advance(milliseconds: 1_000)
      let acknowledged = try await setup.connector.submitPayments([Self.submission("1")], deadline: deadline)
      #expect(acknowledged.first?.duplicate == false)
      let outgoing = try setup.names(setup.outbox).filter { $0.hasSuffix(".xml") }
      #expect(outgoing == ["MSG-1.xml"])
      let written = try Data(contentsOf: URL(fileURLWithPath: setup.outbox + "/MSG-1.xml"))
      let message = try Pain001Reader.read(.data(written))
      #expect(message.messageID == "MSG-1")
      #expect(message.transfers.map(\.endToEndID) == ["E2E-1"])
      #expect(message.transfers.first?.amountMinor == 12_345 && message.transfers.first?.debtorAccount == "1001234509876543210")
      let again = try await setup.connector.submitPayments([Self.submission("1")], deadline: deadline)
      #expect(again.first?.duplicate == true)
      #expect(try Data(contentsOf: URL(fileURLWithPath: setup.outbox + "/MSG-1.xml")) == written)

      // The bank takes it (ACTC), settles it (ACSC) and notifies the debit.
      _ = try await bank.exchange(now: clock.now)
      #expect(try setup.names(setup.outbox).filter { $0.hasSuffix(".xml") }.isEmpty)
      clock.advance(milliseconds: 1_000)
      _ = try await setup.simulator.processSubmissions(now: clock.now)
      _ = try await bank.exchange(now: clock.now)
      _ = try await setup.connector.pollInbox()
      let statuses = try await setup.reports().filter { $0.endToEndID == "E2E-1" }.map(\.statusCode)
      #expect(statuses.contains("ACTC") && statuses.contains("ACSC"), "\(statuses)")
      let debit = try await setup.feed("icbc-cny-001").filter { $0.endToEndID == "E2E-1" }
      #expect(debit.count == 1 && debit.first?.direction == .debit && debit.first?.amount.minorUnits == 12_345)
      let ledger = try await setup.simulator.fetchBalance(accountID: "icbc-cny-001", deadline: deadline).ledger
      let balance = try await setup.connector.fetchBalance(accountID: "icbc-cny-001", deadline: deadline)
      #expect(balance.ledger == ledger)
      // The entry's booking time is when its file was processed, and the balance is as of then.
      #expect(debit.first.map { $0.bookingTime <= balance.asOf } == true)
      #expect(try setup.simulator.receipts()["E2E-1"] == 1)

      // The next statement repeats the notified entries: not booked twice, balance = closing.
      clock.advance(milliseconds: 2_000)
      let before = try await setup.feed("icbc-cny-001").count
      _ = try await setup.bank(statementEveryMilliseconds: 1_000).exchange(now: clock.now)
      _ = try await setup.connector.pollInbox()
      #expect(try await setup.feed("icbc-cny-001").count == before)
      #expect(try await setup.connector.fetchBalance(accountID: "icbc-cny-001", deadline: deadline).ledger == ledger)
    }
  }

  @Test("the inbox quarantines what it cannot read, ignores files still arriving, and only moves a file it has processed before")
  func inboxEdges() async throws {
    try await withTemporaryDirectory { directory in
      let clock = ManualClock(Self.start)
      let setup = try Setup(directory) { clock.now }
      let bank = try setup.bank()
      _ = try await bank.exchange(now: clock.now)
      _ = try await setup.connector.pollInbox()
      let events = try setup.connector.events(after: 0, limit: 100).count
      let feed = try await setup.feed("icbc-cny-001").count

      // Not XML of any bank format; a camt.053 of an account not configured; a truncated one.
      try Data("hello".utf8).write(to: URL(fileURLWithPath: setup.inbox + "/note.txt"))
      var header = StatementHeader(format: .camt053)
      header.messageID = "X1"
      header.statementID = "X1"
      header.createdAt = "2026-10-26T10:00:00"
      header.account = StatementAccount(other: "999999", currency: "CNY")
      let foreign = try CamtWriter.write(BankStatement(header: header), kind: .statement053)
      try Data(foreign).write(to: URL(fileURLWithPath: setup.inbox + "/foreign.xml"))
      let archived = try setup.names(setup.inbox + "/archive")
      let sample = try Data(contentsOf: URL(fileURLWithPath: setup.inbox + "/archive/" + archived[0]))
      try sample.prefix(sample.count / 2).write(to: URL(fileURLWithPath: setup.inbox + "/truncated.xml"))
      // Files still being written are left alone.
      try sample.write(to: URL(fileURLWithPath: setup.inbox + "/upload.xml.part"))
      try sample.write(to: URL(fileURLWithPath: setup.inbox + "/.hidden.xml"))

      let outcome = try await setup.connector.pollInbox()
      #expect(outcome.quarantined == 3 && outcome.processed == 0, "\(outcome)")
      let quarantined = try setup.names(setup.inbox + "/quarantine")
      #expect(quarantined.contains("note.txt") && quarantined.contains("foreign.xml") && quarantined.contains("truncated.xml"))
      let reason = try String(contentsOfFile: setup.inbox + "/quarantine/foreign.xml.reason", encoding: .utf8)
      #expect(reason.contains("999999") && reason.contains("not in connector.files.accounts"), "\(reason)")
      let newEvents = try setup.connector.events(after: UInt64(events), limit: 100)
      #expect(newEvents.count == 3)
      #expect(newEvents.allSatisfy { if case .quarantined = $0 { true } else { false } })
      #expect(try setup.names(setup.inbox).contains("upload.xml.part"))

      // The same statement delivered again (or left in the inbox by a crash after its commit):
      // moved to the archive, nothing stored twice.
      try sample.write(to: URL(fileURLWithPath: setup.inbox + "/" + archived[0]))
      let replay = try await setup.connector.pollInbox()
      #expect(replay.moved == 1 && replay.processed == 0)
      #expect(try setup.connector.events(after: 0, limit: 100).count == events + 3)
      #expect(try await setup.feed("icbc-cny-001").count == feed)
      #expect(!(try setup.names(setup.inbox).contains(archived[0])))
    }
  }

  @Test("a file that cannot be moved holds back no other and is reported after three polls; a quarantined file is taken again; an oversize one is refused by its size")
  func inboxFailures() async throws {
    try await withTemporaryDirectory { directory in
      let clock = ManualClock(Self.start)
      let setup = try Setup(directory) { clock.now }
      func quarantineEvents() throws -> Int {
        try setup.connector.events(after: 0, limit: 1_000).count { if case .quarantined = $0 { true } else { false } }
      }
      // `quarantine/` replaced by a link to nowhere: every move there fails (ENOENT), as after
      // an operator's mistake; the archive still works.
      let quarantine = setup.inbox + "/quarantine"
      try FileManager.default.removeItem(atPath: quarantine)
      try FileManager.default.createSymbolicLink(atPath: quarantine, withDestinationPath: directory.appending("nowhere"))
      try Data("hello".utf8).write(to: URL(fileURLWithPath: setup.inbox + "/0001-note.txt"))
      try Self.file(.notification054, id: "N-AFTER", entries: [("REF-AFTER", "2026-12-03", 500)])
        .write(to: URL(fileURLWithPath: setup.inbox + "/0002-after.xml"))
      var stuck: [HostToHostConnector.StuckFile] = []
      for poll in 1...4 {
        let outcome = try await setup.connector.pollInbox()
        #expect(outcome.failed == 1 && outcome.processed == (poll == 1 ? 1 : 0), "poll \(poll): \(outcome)")
        stuck += outcome.stuck
      }
      // Reported once, at the third failed poll, with the error; the file after it went through.
      #expect(stuck.map(\.name) == ["0001-note.txt"] && stuck.allSatisfy { !$0.error.isEmpty })
      #expect(try setup.names(setup.inbox + "/archive") == ["0002-after.xml"])
      #expect(try await setup.feed("icbc-cny-001").map(\.amount.minorUnits) == [500])
      // One quarantine event for the note, however many polls failed to move it.
      #expect(try quarantineEvents() == 1)

      // The folder back: the note is quarantined, still one event.
      try FileManager.default.removeItem(atPath: quarantine)
      try FileManager.default.createDirectory(atPath: quarantine, withIntermediateDirectories: false)
      var outcome = try await setup.connector.pollInbox()
      #expect(outcome.quarantined == 1 && outcome.failed == 0 && outcome.stuck.isEmpty, "\(outcome)")
      #expect(try setup.names(quarantine).contains("0001-note.txt"))
      #expect(try quarantineEvents() == 1)

      // The same bytes delivered again are read again (not taken for processed and deleted):
      // refused again, quarantined beside the first, without a second alert.
      try Data("hello".utf8).write(to: URL(fileURLWithPath: setup.inbox + "/0003-note.txt"))
      outcome = try await setup.connector.pollInbox()
      #expect(outcome.quarantined == 1 && outcome.moved == 0, "\(outcome)")
      #expect(try setup.names(quarantine).contains("0003-note.txt"))
      #expect(try quarantineEvents() == 1)

      // A sparse file past the size limit is refused by its size, without reading it through.
      let huge = setup.inbox + "/0004-huge.xml"
      _ = FileManager.default.createFile(atPath: huge, contents: Data("<?xml".utf8))
      let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: huge))
      try handle.truncate(atOffset: UInt64(HostToHostLimits.maxInboxFileBytes) * 64)
      try handle.close()
      outcome = try await setup.connector.pollInbox()
      #expect(outcome.quarantined == 1, "\(outcome)")
      let reason = try String(contentsOfFile: quarantine + "/0004-huge.xml.reason", encoding: .utf8)
      #expect(reason.contains("\(HostToHostLimits.maxInboxFileBytes * 64) bytes"), "\(reason)")
      #expect(try quarantineEvents() == 2)
    }
  }

  @Test("an outbox or inbox the daemon cannot write is refused at start, naming it (not found out at the first payment)")
  func unwritableFolders() async throws {
    try await withTemporaryDirectory { directory in
      func open(outbox: String, inbox: String) throws -> HostToHostConnector {
        try HostToHostConnector(
          configuration: .init(
            outbox: outbox, inbox: inbox, stateDirectory: directory.appending("connector"), accounts: BankSimulator.catalogueAccounts,
            settleMilliseconds: 0, mapSizeMiB: 16),
          clock: { Self.start })
      }
      // /proc/self exists and no one may write it, root included (as a read-only mount).
      let outbox = #expect(throws: HostToHostConnector.FolderProblem.self) {
        _ = try open(outbox: "/proc/self", inbox: directory.appending("inbox"))
      }
      #expect(outbox?.key == "outbox" && outbox?.path == "/proc/self", "\(String(describing: outbox))")
      let inbox = #expect(throws: HostToHostConnector.FolderProblem.self) {
        _ = try open(outbox: directory.appending("outbox"), inbox: "/proc/self/banklink-inbox")
      }
      #expect(inbox?.key == "inbox" && inbox?.description.contains("cannot be created") == true, "\(String(describing: inbox))")
    }
  }

  static func file(
    _ kind: CamtWriter.Kind, id: String, entries: [(ref: String, date: String, minor: Int64)], closing: (minor: Int64, date: String)? = nil
  ) throws -> Data {
    var header = StatementHeader(format: kind == .statement053 ? .camt053 : .camt054)
    header.messageID = id
    header.statementID = id
    header.createdAt = "2026-12-03T08:00:00"
    header.account = StatementAccount(other: "1001234509876543210", currency: "CNY")
    if let closing {
      header.sequenceNumber = 1
      header.balances = [StatementBalance(type: "CLBD", amountMinor: closing.minor, currency: "CNY", date: closing.date)]
    }
    var statement = BankStatement(header: header)
    statement.entries = entries.map { item in
      var entry = StatementEntry()
      entry.amountMinor = abs(item.minor)
      entry.currency = "CNY"
      entry.direction = item.minor < 0 ? .debit : .credit
      entry.bookingDate = item.date
      entry.accountServicerReference = item.ref
      return entry
    }
    return Data(try CamtWriter.write(statement, kind: kind))
  }

  @Test("a statement for day D arriving after notifications of D+1: its closing balance plus what it does not cover")
  func lateStatement() async throws {
    try await withTemporaryDirectory { directory in
      let clock = ManualClock(Self.start)
      let setup = try Setup(directory) { clock.now }
      let deadline = ContinuousClock.now.advanced(by: .seconds(5))
      func deliver(_ name: String, _ data: Data) async throws {
        try data.write(to: URL(fileURLWithPath: setup.inbox + "/" + name))
        clock.advance(milliseconds: 1_000)
        #expect(try await setup.connector.pollInbox().processed == 1)
      }
      // Day 1 closes at 1,000.00; on day 2 a debit of 300.00 and a credit of 50.00 are notified
      // (and a day-1 entry the bank later leaves out of its day-1 statement).
      try await deliver("1.xml", try Self.file(.statement053, id: "S1", entries: [], closing: (100_000, "2026-12-01")))
      try await deliver(
        "2.xml",
        try Self.file(.notification054, id: "N1", entries: [("D1-X", "2026-12-02", -1_000), ("D2-A", "2026-12-03", -30_000), ("D2-B", "2026-12-03", 5_000)]))
      #expect(try await setup.connector.fetchBalance(accountID: "icbc-cny-001", deadline: deadline).ledger.minorUnits == 74_000)
      // Day 2's statement arrives after: it lists D1-Y (not notified) and closes at 99,500 –
      // without the day-3 entries, which still count; D1-X, left out of its own day, expires.
      try await deliver("3.xml", try Self.file(.statement053, id: "S2", entries: [("D1-Y", "2026-12-02", -500)], closing: (99_500, "2026-12-02")))
      let balance = try await setup.connector.fetchBalance(accountID: "icbc-cny-001", deadline: deadline)
      #expect(balance.ledger.minorUnits == 99_500 - 30_000 + 5_000)
      // Day 3's statement covers them: its closing balance alone.
      try await deliver(
        "4.xml", try Self.file(.statement053, id: "S3", entries: [("D2-A", "2026-12-03", -30_000), ("D2-B", "2026-12-03", 5_000)], closing: (74_500, "2026-12-03")))
      #expect(try await setup.connector.fetchBalance(accountID: "icbc-cny-001", deadline: deadline).ledger.minorUnits == 74_500)
      // An older statement delivered late moves no balance; its unknown entry joins the feed.
      try await deliver("5.xml", try Self.file(.statement053, id: "S0", entries: [("D0-Z", "2026-12-01", -700)], closing: (1, "2026-12-01")))
      #expect(try await setup.connector.fetchBalance(accountID: "icbc-cny-001", deadline: deadline).ledger.minorUnits == 74_500)
      // Every entry once in the feed.
      #expect(try await setup.feed("icbc-cny-001").map(\.bankReference) == ["D1-X", "D2-A", "D2-B", "D1-Y", "D0-Z"])
    }
  }

  @Test("a balance that would leave Int64 quarantines the file, and nothing of it is stored")
  func balanceOverflow() async throws {
    try await withTemporaryDirectory { directory in
      let clock = ManualClock(Self.start)
      let setup = try Setup(directory) { clock.now }
      let deadline = ContinuousClock.now.advanced(by: .seconds(5))
      let near = Int64.max - 1_000
      try Self.file(.statement053, id: "S1", entries: [], closing: (near, "2026-12-01")).write(to: URL(fileURLWithPath: setup.inbox + "/1.xml"))
      clock.advance(milliseconds: 1_000)
      #expect(try await setup.connector.pollInbox().processed == 1)
      try Self.file(.notification054, id: "N1", entries: [("OK-1", "2026-12-02", 500), ("OVER-1", "2026-12-02", 600)])
        .write(to: URL(fileURLWithPath: setup.inbox + "/2.xml"))
      clock.advance(milliseconds: 1_000)
      let outcome = try await setup.connector.pollInbox()
      #expect(outcome.quarantined == 1 && outcome.processed == 0, "\(outcome)")
      let reason = try String(contentsOfFile: setup.inbox + "/quarantine/2.xml.reason", encoding: .utf8)
      #expect(reason.contains("64-bit"), "\(reason)")
      // Not even the entry that fitted: the file is all or nothing.
      #expect(try await setup.connector.fetchBalance(accountID: "icbc-cny-001", deadline: deadline).ledger.minorUnits == near)
      #expect(try await setup.feed("icbc-cny-001").isEmpty)
    }
  }

  @Test("a file replaced under its name while processed: the content processed is archived, the newcomer stays for its own turn")
  func replacedWhileProcessed() async throws {
    try await withTemporaryDirectory { directory in
      let clock = ManualClock(Self.start)
      let setup = try Setup(directory) { clock.now }
      let path = setup.inbox + "/day.xml"
      let first = try Self.file(.notification054, id: "N1", entries: [("A-1", "2026-12-02", 500)])
      let second = try Self.file(.notification054, id: "N2", entries: [("B-1", "2026-12-02", 700)])
      try first.write(to: URL(fileURLWithPath: path))
      // What the connector holds while it works, then a sender renaming a new file over the name.
      let held = try InboxFile(path)
      try second.write(to: URL(fileURLWithPath: setup.inbox + "/.incoming"))
      #expect(rename(setup.inbox + "/.incoming", path) == 0)
      #expect(!held.isStill(at: path))
      #expect(try held.fingerprint().1 == Int64(first.count))
      try FileManager.default.createDirectory(atPath: setup.inbox + "/archive", withIntermediateDirectories: true)
      try setup.connector.move(held, from: path, to: setup.inbox + "/archive/day.xml")
      #expect(try Data(contentsOf: URL(fileURLWithPath: setup.inbox + "/archive/day.xml")) == first)
      #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == second)
      // The file still in place is renamed as before.
      let now = try InboxFile(path)
      try setup.connector.move(now, from: path, to: setup.inbox + "/archive/day-2.xml")
      #expect(!FileManager.default.fileExists(atPath: path))
      #expect(try Data(contentsOf: URL(fileURLWithPath: setup.inbox + "/archive/day-2.xml")) == second)
      // A file that changes while it is read is not taken until it is still.
      try first.write(to: URL(fileURLWithPath: setup.inbox + "/growing.xml"))
      let growing = try InboxFile(setup.inbox + "/growing.xml")
      #expect(growing.unchanged())
      let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: setup.inbox + "/growing.xml"))
      try handle.seekToEnd()
      try handle.write(contentsOf: Data(" ".utf8))
      try handle.close()
      #expect(!growing.unchanged())
    }
  }

  @Test("a file with more statements than a bank sends is quarantined")
  func tooManyStatements() async throws {
    try await withTemporaryDirectory { directory in
      let clock = ManualClock(Self.start)
      let setup = try Setup(directory) { clock.now }
      let one = String(decoding: try Self.file(.notification054, id: "N1", entries: []), as: UTF8.self)
      // The writer's one notification, repeated past the limit inside one message.
      let open = try #require(one.range(of: "<Ntfctn>"))
      let close = try #require(one.range(of: "</Ntfctn>"))
      let notification = String(one[open.lowerBound..<close.upperBound])
      let many = String(one[..<open.lowerBound]) + String(repeating: notification, count: HostToHostLimits.maxStatementsPerFile + 1)
        + String(one[close.upperBound...])
      try Data(many.utf8).write(to: URL(fileURLWithPath: setup.inbox + "/many.xml"))
      clock.advance(milliseconds: 1_000)
      #expect(try await setup.connector.pollInbox().quarantined == 1)
      let reason = try String(contentsOfFile: setup.inbox + "/quarantine/many.xml.reason", encoding: .utf8)
      #expect(reason.contains("statements in one file"), "\(reason)")
    }
  }

  @Test("a group-level pain.002 rejection applies to every transfer of the message it names")
  func groupStatus() async throws {
    try await withTemporaryDirectory { directory in
      let clock = ManualClock(Self.start)
      let setup = try Setup(directory) { clock.now }
      _ = try await setup.connector.submitPayments([Self.submission("a"), Self.submission("b")], deadline: .now.advanced(by: .seconds(5)))
      let file = try #require(try setup.names(setup.outbox).first { $0.hasSuffix(".xml") })
      let messageID = String(file.dropLast(4))
      #expect(messageID.hasPrefix("BLR"))
      // Resent as the same round after a crash: the same file name, not a second file.
      _ = try await setup.connector.submitPayments([Self.submission("a"), Self.submission("b")], deadline: .now.advanced(by: .seconds(5)))
      #expect(try setup.names(setup.outbox).filter { $0.hasSuffix(".xml") } == [file])
      // Resent in a round with a newly approved payment: the new one gets a file of its own;
      // the others are not put in a second file under another MsgId.
      let mixed = try await setup.connector.submitPayments([Self.submission("a"), Self.submission("c")], deadline: .now.advanced(by: .seconds(5)))
      #expect(mixed.map(\.duplicate) == [true, false])
      #expect(try setup.names(setup.outbox).filter { $0.hasSuffix(".xml") } == [file, "MSG-c.xml"].sorted())
      let second = try Pain001Reader.read(.file(setup.outbox + "/MSG-c.xml"))
      #expect(second.transfers.map(\.endToEndID) == ["E2E-c"])
      let report = """
        <?xml version="1.0"?>
        <Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.03"><CstmrPmtStsRpt>
        <GrpHdr><MsgId>R1</MsgId><CreDtTm>2026-10-26T10:00:00</CreDtTm></GrpHdr>
        <OrgnlGrpInfAndSts><OrgnlMsgId>\(messageID)</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.03</OrgnlMsgNmId><GrpSts>RJCT</GrpSts>
        <StsRsnInf><Rsn><Cd>FF01</Cd></Rsn></StsRsnInf></OrgnlGrpInfAndSts>
        </CstmrPmtStsRpt></Document>
        """
      try Data(report.utf8).write(to: URL(fileURLWithPath: setup.inbox + "/status.xml"))
      #expect(try await setup.connector.pollInbox().processed == 1)
      let reports = try await setup.reports()
      #expect(Set(reports.map(\.endToEndID)) == ["E2E-a", "E2E-b"])
      #expect(reports.allSatisfy { $0.statusCode == "RJCT" && $0.reasonCode == "FF01" })
    }
  }

  @Test("a pain.002 status for a whole PmtInf block covers the transfers sent in it without one of their own; one with no status is quarantined")
  func blockStatus() async throws {
    try await withTemporaryDirectory { directory in
      let clock = ManualClock(Self.start)
      let setup = try Setup(directory) { clock.now }
      // Two execution dates: two PmtInf blocks, (a, b) and (c).
      var c = Self.submission("c")
      c.requestedExecutionDate = "2026-10-27"
      _ = try await setup.connector.submitPayments([Self.submission("a"), Self.submission("b"), c], deadline: .now.advanced(by: .seconds(5)))
      let file = try #require(try setup.names(setup.outbox).first { $0.hasSuffix(".xml") })
      let messageID = String(file.dropLast(4))
      let sent = try Pain001Reader.read(.file(setup.outbox + "/" + file))
      // The block ids as sent (the message id cut to keep them within 35 characters).
      let (block1, block2) = (
        Pain001Writer.paymentInformationID(messageID: messageID, number: 1), Pain001Writer.paymentInformationID(messageID: messageID, number: 2)
      )
      #expect(sent.transfers.map(\.paymentInformationID) == [block1, block1, block2])
      // Block 1 rejected whole (no transaction statuses); in block 2, c settled; the group
      // partially accepted (PART: about no transfer in particular).
      let report = """
        <?xml version="1.0"?>
        <Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.03"><CstmrPmtStsRpt>
        <GrpHdr><MsgId>R2</MsgId><CreDtTm>2026-10-26T10:00:00</CreDtTm></GrpHdr>
        <OrgnlGrpInfAndSts><OrgnlMsgId>\(messageID)</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.03</OrgnlMsgNmId><GrpSts>PART</GrpSts></OrgnlGrpInfAndSts>
        <OrgnlPmtInfAndSts><OrgnlPmtInfId>\(block1)</OrgnlPmtInfId><PmtInfSts>RJCT</PmtInfSts>
        <StsRsnInf><Rsn><Cd>AC04</Cd></Rsn><AddtlInf>account closed</AddtlInf></StsRsnInf></OrgnlPmtInfAndSts>
        <OrgnlPmtInfAndSts><OrgnlPmtInfId>\(block2)</OrgnlPmtInfId>
        <TxInfAndSts><OrgnlEndToEndId>E2E-c</OrgnlEndToEndId><TxSts>ACSC</TxSts></TxInfAndSts></OrgnlPmtInfAndSts>
        </CstmrPmtStsRpt></Document>
        """
      try Data(report.utf8).write(to: URL(fileURLWithPath: setup.inbox + "/status.xml"))
      #expect(try await setup.connector.pollInbox().processed == 1)
      let reports = try await setup.reports().map { "\($0.endToEndID) \($0.statusCode) \($0.reasonCode)" }.sorted()
      #expect(reports == ["E2E-a RJCT AC04", "E2E-b RJCT AC04", "E2E-c ACSC "], "\(reports)")
      // A report with no status at all (PART only, a transaction without TxSts): quarantined.
      let empty = """
        <?xml version="1.0"?>
        <Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.03"><CstmrPmtStsRpt>
        <GrpHdr><MsgId>R3</MsgId><CreDtTm>2026-10-26T10:00:00</CreDtTm></GrpHdr>
        <OrgnlGrpInfAndSts><OrgnlMsgId>\(messageID)</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.03</OrgnlMsgNmId><GrpSts>PART</GrpSts></OrgnlGrpInfAndSts>
        <OrgnlPmtInfAndSts><OrgnlPmtInfId>\(block2)</OrgnlPmtInfId>
        <TxInfAndSts><OrgnlEndToEndId>E2E-c</OrgnlEndToEndId></TxInfAndSts></OrgnlPmtInfAndSts>
        </CstmrPmtStsRpt></Document>
        """
      try Data(empty.utf8).write(to: URL(fileURLWithPath: setup.inbox + "/empty.xml"))
      #expect(try await setup.connector.pollInbox().quarantined == 1)
      let reason = try String(contentsOfFile: setup.inbox + "/quarantine/empty.xml.reason", encoding: .utf8)
      #expect(reason.contains("no status"), "\(reason)")
      #expect(try await setup.reports().count == 3)
      // A block this connector has no record of sending (another sender's, or a file sent
      // before blocks were recorded): nothing can be applied, so quarantined, not archived.
      let foreign = report.replacingOccurrences(of: block1, with: "ELSEWHERE-1").replacingOccurrences(of: "<TxInfAndSts><OrgnlEndToEndId>E2E-c</OrgnlEndToEndId><TxSts>ACSC</TxSts></TxInfAndSts>", with: "")
        .replacingOccurrences(of: "<OrgnlMsgId>\(messageID)</OrgnlMsgId>", with: "<OrgnlMsgId>ELSEWHERE</OrgnlMsgId>")
      try Data(foreign.utf8).write(to: URL(fileURLWithPath: setup.inbox + "/foreign.xml"))
      #expect(try await setup.connector.pollInbox().quarantined == 1)
      let foreignReason = try String(contentsOfFile: setup.inbox + "/quarantine/foreign.xml.reason", encoding: .utf8)
      #expect(foreignReason.contains("no record of sending"), "\(foreignReason)")
      #expect(try await setup.reports().count == 3)
    }
  }
}

/// A clock the test moves by hand.
final class ManualClock: @unchecked Sendable {
  private let lock = NSLock()
  private var current: Instant
  init(_ start: Instant) { self.current = start }
  var now: Instant { self.lock.withLock { self.current } }
  func advance(milliseconds: Int64) { self.lock.withLock { self.current = self.current.adding(milliseconds: milliseconds) } }
}
