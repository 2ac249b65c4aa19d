import BankLinkClient
import BankLinkCore
import BankLinkFormats
import BankLinkJournal
import BankLinkProto
@testable import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf
import Testing

/// Statement import over real mutual TLS into real LMDB: chunked upload, deduplication of files
/// and entries, continuity across imports with their alerts, refusals that store nothing, roles,
/// paging, and the sweep of an import cut short.
@Suite("Statement import")
struct StatementImportTests {
  static let principals = [
    Principal(identity: "clerk", roles: [.reconciler]),
    Principal(identity: "auditor", roles: [.auditor]),
    Principal(identity: "viewer", roles: [.viewer]),
    Principal(identity: "erp", roles: [.payer]),
    Principal(identity: "admin", roles: [.admin]),
  ]
  /// icbc-cny-001 as the bank names it.
  static let accountNumber = "1001234509876543210"

  struct Entry {
    var reference: String
    var minor: Int64
    var debit = true
    var endToEnd = ""
    var counterparty = "Jiangsu Hengrui Logistics Co., Ltd."
  }

  /// A camt.053.001.08 statement for one account: opening, entries, closing = opening + entries.
  static func camt053(
    id: String, sequence: Int, account: String = accountNumber, currency: String = "CNY", opening: Int64,
    closing: Int64? = nil, entries: [Entry]
  ) -> Data {
    func amount(_ minor: Int64) -> String { "\(abs(minor) / 100).\(String(format: "%02d", abs(minor) % 100))" }
    func side(_ minor: Int64) -> String { minor < 0 ? "DBIT" : "CRDT" }
    let sum = entries.reduce(opening) { $0 + ($1.debit ? -$1.minor : $1.minor) }
    var xml = """
      <?xml version="1.0" encoding="UTF-8"?>
      <Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>
      <GrpHdr><MsgId>MSG-\(id)</MsgId><CreDtTm>2026-12-03T23:30:00+08:00</CreDtTm></GrpHdr>
      <Stmt><Id>\(id)</Id><ElctrncSeqNb>\(sequence)</ElctrncSeqNb>
      <Acct><Id><Othr><Id>\(account)</Id></Othr></Id><Ccy>\(currency)</Ccy></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="\(currency)">\(amount(opening))</Amt><CdtDbtInd>\(side(opening))</CdtDbtInd><Dt><Dt>2026-12-03</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="\(currency)">\(amount(closing ?? sum))</Amt><CdtDbtInd>\(side(closing ?? sum))</CdtDbtInd><Dt><Dt>2026-12-03</Dt></Dt></Bal>

      """
    for entry in entries {
      xml += """
        <Ntry><Amt Ccy="\(currency)">\(amount(entry.minor))</Amt><CdtDbtInd>\(entry.debit ? "DBIT" : "CRDT")</CdtDbtInd>
        <Sts><Cd>BOOK</Cd></Sts><BookgDt><Dt>2026-12-03</Dt></BookgDt><ValDt><Dt>2026-12-03</Dt></ValDt>
        <AcctSvcrRef>\(entry.reference)</AcctSvcrRef>
        <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>ICDT</Cd><SubFmlyCd>DMCT</SubFmlyCd></Fmly></Domn></BkTxCd>
        <NtryDtls><TxDtls><Refs><EndToEndId>\(entry.endToEnd.isEmpty ? "NOTPROVIDED" : entry.endToEnd)</EndToEndId></Refs>
        <RltdPties><Cdtr><Pty><Nm>\(entry.counterparty)</Nm></Pty></Cdtr></RltdPties>
        <RmtInf><Ustrd>INV \(entry.reference)</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>

        """
    }
    xml += "</Stmt></BkToCstmrStmt></Document>\n"
    return Data(xml.utf8)
  }

  typealias Reconciliation = Banklink_V1_ReconciliationService.Client<HTTP2ClientTransport.Posix>

  static func as_<T: Sendable>(_ server: TestServer, _ who: String, _ body: (Reconciliation) async throws -> T) async throws -> T {
    try await withBankLinkClient(server.client(try server.pki.client(commonName: who))) { try await body(Reconciliation(wrapping: $0)) }
  }

  /// Uploads `file` in chunks of `chunk` bytes.
  static func upload(
    _ service: Reconciliation, _ file: Data, name: String = "statement.xml", format: Banklink_V1_StatementFormat = .unspecified,
    chunk: Int = 1_000
  ) async throws -> Banklink_V1_ImportStatementResponse {
    try await service.importStatement(requestProducer: { writer in
      var offset = 0
      repeat {
        let end = min(offset + chunk, file.count)
        try await writer.write(.with {
          if offset == 0 {
            $0.fileName = name
            $0.format = format
          }
          $0.content = file.subdata(in: offset..<end)
        })
        offset = end
      } while offset < file.count
    })
  }

  static func listed(_ service: Reconciliation, account: String = "") async throws -> [Banklink_V1_StatementSummary] {
    try await service.listStatements(.with { $0.accountID = account }).statements
  }

  @Test("import, the same file again, an overlapping file with a break, a gap: stored once, breaks alerted and journaled")
  func importDeduplicateAndContinuity() async throws {
    try await withTestServer(principals: Self.principals) { server in
      try await Self.as_(server, "clerk") { service in
        let first = Self.camt053(
          id: "STMT-337", sequence: 337, opening: 10_000_000,
          entries: [
            Entry(reference: "REF-1", minor: 800_500, endToEnd: "E2E-1"), Entry(reference: "REF-2", minor: 25_000, debit: false),
            Entry(reference: "REF-3", minor: 1_000),
          ])
        let imported = try await Self.upload(service, first, chunk: 97)
        #expect(imported.entriesImported == 3 && imported.duplicateEntries == 0 && !imported.duplicateFile)
        #expect(imported.statements.count == 1 && imported.statements[0].accountID == "icbc-cny-001")
        #expect(imported.statements[0].breaks.isEmpty, "\(imported.statements[0].breaks)")
        #expect(imported.statements[0].openingBalance.minorUnits == 10_000_000)
        #expect(imported.statements[0].closingBalance.minorUnits == 10_000_000 - 800_500 + 25_000 - 1_000)
        #expect(imported.receipt.journalSequence > 0)
        #expect(imported.fileSha256.count == 64 && imported.fileBytes == Int64(first.count))

        // The entries as stored, every field the file gave.
        let shown = try await service.getStatement(.with { $0.statementID = imported.statementID })
        #expect(shown.entries.map(\.bankReference) == ["REF-1", "REF-2", "REF-3"])
        #expect(shown.entries[0].endToEndID == "E2E-1" && shown.entries[0].direction == .debit)
        #expect(shown.entries[0].amount.minorUnits == 800_500 && shown.entries[0].amount.currencyCode == "CNY")
        #expect(shown.entries[0].counterparty.name == "Jiangsu Hengrui Logistics Co., Ltd.")
        #expect(shown.entries[1].direction == .credit && shown.entries[0].bankTransactionCode == "PMNT/ICDT/DMCT")

        // The same file again: the first import's result, nothing stored twice.
        let again = try await Self.upload(service, first, chunk: 4_096)
        #expect(again.duplicateFile && again.statementID == imported.statementID && again.entriesImported == 3)
        #expect(try await Self.listed(service).count == 1)

        // The next day repeats REF-3, adds REF-4, and opens 1.00 off the previous closing.
        let closing = imported.statements[0].closingBalance.minorUnits
        let second = Self.camt053(
          id: "STMT-338", sequence: 338, opening: closing + 100,
          entries: [Entry(reference: "REF-3", minor: 1_000), Entry(reference: "REF-4", minor: 5_000)])
        let overlap = try await Self.upload(service, second)
        #expect(overlap.entriesImported == 1 && overlap.duplicateEntries == 1)
        #expect(overlap.statements[0].breaks.map(\.kind) == ["opening_not_previous_closing"], "\(overlap.statements[0].breaks)")
        // Numbers 339 and 340 never came.
        let third = Self.camt053(
          id: "STMT-341", sequence: 341, opening: overlap.statements[0].closingBalance.minorUnits,
          entries: [Entry(reference: "REF-5", minor: 7_000)])
        let gap = try await Self.upload(service, third)
        #expect(gap.statements[0].breaks.map(\.kind) == ["sequence_gap"], "\(gap.statements[0].breaks)")
        #expect(gap.statements[0].breaks.first?.message.contains("2 missing") == true)

        let all = try await Self.listed(service, account: "icbc-cny-001")
        #expect(all.map(\.bankStatementID) == ["STMT-337", "STMT-338", "STMT-341"])
        #expect(try await Self.listed(service, account: "icbc-usd-001").isEmpty)
      }
      // Each break is a reconciliation_break alert; each import a journal entry.
      let alerts = try await withBankLinkClient(server.client(try server.pki.client(commonName: "admin"))) { grpc in
        try await Banklink_V1_MonitoringService.Client(wrapping: grpc).listAlerts(.with { $0.kinds = [.reconciliationBreak] }).alerts
      }
      #expect(alerts.count == 2 && alerts.allSatisfy { $0.accountID == "icbc-cny-001" }, "\(alerts.map(\.message))")
      let journaled = try server.payments.store.withReadTransaction { txn in
        try AuditJournal.entries(after: 0, limit: 1_000, in: txn).filter { $0.action == "statement.imported" }.map(\.principal)
      }
      #expect(journaled == ["clerk", "clerk", "clerk"])
    }
  }

  @Test("refused files store nothing: unknown account, wrong currency, malformed, wrong declared format, empty, oversized chunk")
  func refusals() async throws {
    try await withTestServer(principals: Self.principals) { server in
      try await Self.as_(server, "clerk") { service in
        let good = [Entry(reference: "R-1", minor: 100)]
        func refused(_ file: Data, format: Banklink_V1_StatementFormat = .unspecified) async -> RPCError? {
          await #expect(throws: RPCError.self) { try await Self.upload(service, file, format: format) }
        }
        let unknown = await refused(Self.camt053(id: "S-1", sequence: 1, account: "9999000011112222", opening: 0, entries: good))
        #expect(unknown?.code == .invalidArgument && unknown?.message.contains("9999000011112222") == true, "\(String(describing: unknown))")
        let currency = await refused(Self.camt053(id: "S-2", sequence: 2, currency: "USD", opening: 0, entries: good))
        #expect(currency?.code == .invalidArgument && currency?.message.contains("USD") == true, "\(String(describing: currency))")
        var truncated = Self.camt053(id: "S-3", sequence: 3, opening: 0, entries: good)
        truncated = truncated.prefix(truncated.count - 40)
        let malformed = await refused(truncated)
        #expect(malformed?.code == .invalidArgument && malformed?.message.hasPrefix("content:") == true, "\(String(describing: malformed))")
        let declared = await refused(Self.camt053(id: "S-4", sequence: 4, opening: 0, entries: good), format: .mt940)
        #expect(declared?.message.contains("not MT940 as declared") == true, "\(String(describing: declared))")
        let notStatement = await refused(Data("hello, this is not a statement\n".utf8))
        #expect(notStatement?.code == .invalidArgument)
        let empty = await #expect(throws: RPCError.self) {
          try await service.importStatement(requestProducer: { _ in })
        }
        #expect(empty?.code == .invalidArgument && empty?.message.contains("content") == true)
        let oversized = await #expect(throws: RPCError.self) {
          try await service.importStatement(requestProducer: { writer in
            try await writer.write(.with { $0.content = Data(count: Limits.maxStatementChunkBytes + 1) })
          })
        }
        #expect(oversized?.code == .invalidArgument && oversized?.message.hasPrefix("content:") == true)
        // A statement number beyond any bank's (arithmetic on it would overflow).
        var huge = String(decoding: Self.camt053(id: "S-6", sequence: 1, opening: 0, entries: good), as: UTF8.self)
        huge = huge.replacingOccurrences(of: "<ElctrncSeqNb>1</ElctrncSeqNb>", with: "<ElctrncSeqNb>9223372036854775807</ElctrncSeqNb>")
        let number = await refused(Data(huge.utf8))
        #expect(number?.code == .invalidArgument && number?.message.contains("ElctrncSeqNb") == true, "\(String(describing: number))")
        // Nothing of any of them was kept.
        #expect(try await Self.listed(service).isEmpty)
        // A good file afterwards stores normally: nothing half-written blocks it.
        let stored = try await Self.upload(service, Self.camt053(id: "S-5", sequence: 5, opening: 0, entries: good))
        #expect(stored.entriesImported == 1)
      }
    }
  }

  @Test("identical entries without a reference are each stored; the same again in a later file are duplicates; a forged page token is an empty page")
  func identicalEntriesAndTokens() async throws {
    try await withTestServer(principals: Self.principals) { server in
      try await Self.as_(server, "clerk") { service in
        // Two 10.00 fees on one day with no bank reference: two entries.
        var text = String(decoding: Self.camt053(id: "F-1", sequence: 1, opening: 10_000, entries: [
          Entry(reference: "X", minor: 1_000), Entry(reference: "X", minor: 1_000),
        ]), as: UTF8.self)
        text = text.replacingOccurrences(of: "<AcctSvcrRef>X</AcctSvcrRef>", with: "")
        let first = try await Self.upload(service, Data(text.utf8))
        #expect(first.entriesImported == 2 && first.duplicateEntries == 0, "\(first)")
        // A re-export (another statement id, so another file) holding the same two: duplicates.
        let again = try await Self.upload(service, Data(text.replacingOccurrences(of: "F-1", with: "F-1-REEXPORT").utf8))
        #expect(!again.duplicateFile && again.entriesImported == 0 && again.duplicateEntries == 2, "\(again)")
        // A token after the last possible sequence: an empty page, not a crash.
        let forged = PageToken.encode(.statements, after: UInt64.max)
        let page = try await service.listStatements(.with { $0.pageToken = forged })
        #expect(page.statements.isEmpty)
        #expect(try await service.listStatements(.with { $0.accountID = "icbc-cny-001"; $0.pageToken = forged }).statements.isEmpty)
      }
    }
  }

  @Test("roles: reconcilers and admins import; auditors read; viewers and payers do neither")
  func roles() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let file = Self.camt053(id: "S-9", sequence: 9, opening: 0, entries: [Entry(reference: "R-9", minor: 1)])
      for who in ["viewer", "erp", "auditor"] {
        let denied = await #expect(throws: RPCError.self) { try await Self.as_(server, who) { try await Self.upload($0, file) } }
        #expect(denied?.code == .permissionDenied, "\(who): \(String(describing: denied))")
      }
      let imported = try await Self.as_(server, "admin") { try await Self.upload($0, file) }
      #expect(try await Self.as_(server, "auditor") { try await Self.listed($0) }.map(\.statementID) == [imported.statementID])
      for who in ["viewer", "erp"] {
        let denied = await #expect(throws: RPCError.self) { try await Self.as_(server, who) { try await Self.listed($0) } }
        #expect(denied?.code == .permissionDenied)
      }
      let missing = await #expect(throws: RPCError.self) {
        try await Self.as_(server, "auditor") { try await $0.getStatement(.with { $0.statementID = "stm-000000000999" }) }
      }
      #expect(missing?.code == .notFound)
      let malformed = await #expect(throws: RPCError.self) {
        try await Self.as_(server, "auditor") { try await $0.getStatement(.with { $0.statementID = "../etc" }) }
      }
      #expect(malformed?.code == .invalidArgument && malformed?.message.hasPrefix("statement_id") == true)
    }
  }

  @Test("a file larger than one commit: every entry stored once, paged back in order")
  func largeFileInSeveralCommits() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let count = Limits.statementEntriesPerCommit * 2 + 123
      let entries = (0..<count).map { Entry(reference: "BIG-\($0)", minor: Int64(100 + $0 % 1_000)) }
      let file = Self.camt053(id: "BIG", sequence: 1, opening: 1_000_000_000, entries: entries)
      try await Self.as_(server, "clerk") { service in
        let imported = try await Self.upload(service, file, chunk: 256 * 1024)
        #expect(imported.entriesImported == Int64(count) && imported.statements[0].breaks.isEmpty)
        var references: [String] = []
        var token = ""
        repeat {
          let page = try await service.getStatement(.with {
            $0.statementID = imported.statementID
            $0.pageSize = Int32(Limits.maxStatementEntriesPage)
            $0.pageToken = token
          })
          references += page.entries.map(\.bankReference)
          token = page.nextPageToken
        } while !token.isEmpty
        #expect(references == entries.map(\.reference))
      }
    }
  }

  @Test("batch bookings with thousands of details each: the import commits by details too, and stores every one")
  func detailsBoundTheCommit() async throws {
    try await withTestServer(principals: Self.principals) { server in
      // Six entries of the most details an entry keeps: Limits.statementDetailsPerCommit is
      // reached after the fifth, so the sixth goes in a second commit.
      let perEntry = FormatLimits.maxDetailsPerEntry - 1
      #expect(5 * (perEntry + 1) >= Limits.statementDetailsPerCommit && 4 * (perEntry + 1) < Limits.statementDetailsPerCommit)
      let entries = (0..<6).map { Entry(reference: "BATCH-\($0)", minor: 1_000) }
      var xml = String(decoding: Self.camt053(id: "BATCH", sequence: 1, opening: 1_000_000, entries: entries), as: UTF8.self)
      let extra = (0..<perEntry).map { "<TxDtls><Refs><EndToEndId>E\($0)</EndToEndId></Refs></TxDtls>" }.joined()
      xml = xml.replacingOccurrences(of: "<NtryDtls>", with: "<NtryDtls>" + extra)
      let imported = try await Self.as_(server, "clerk") { try await Self.upload($0, Data(xml.utf8), chunk: 1 << 20) }
      #expect(imported.entriesImported == 6)
      let details = try server.payments.store.withReadTransaction { txn -> [Int] in
        var counts: [Int] = []
        try txn.scan(.statementEntries) { _, value in
          counts.append(try StatementKeys.decodeEntry(value).1.details.count)
          return true
        }
        return counts
      }
      #expect(details == Array(repeating: perEntry + 1, count: 6))
    }
  }

  @Test("an import cut short is removed at start: its statement, entries and dedup keys; the entries import again")
  func unfinishedImportIsSwept() async throws {
    try await withTestServer(principals: Self.principals) { server in
      // What a crash between two of an import's commits leaves: an unfinished statement and
      // entries with their dedup keys.
      var entry = StatementEntry()
      entry.accountServicerReference = "CUT-1"
      entry.amountMinor = 500
      entry.currency = "CNY"
      entry.direction = .debit
      entry.bookingDate = "2026-12-03"
      let cut = entry
      try server.payments.store.withWriteTransaction { txn in
        let statement = StoredStatement(
          sequence: 1, accountID: "icbc-cny-001", format: .camt053, bankStatementID: "CUT", messageID: "CUT",
          importTime: Instant(millisecondsSinceEpoch: 0))
        try txn.put(StatementKeys.statement(1), StatementKeys.encode(statement), in: .statements)
        try txn.put(StatementKeys.entry(1, 0), StatementKeys.encode(cut, accountID: "icbc-cny-001"), in: .statementEntries)
        try txn.put(StatementKeys.dedup("icbc-cny-001", cut), StatementKeys.entry(1, 0), in: .statementEntryKeys)
        var head = RecordWriter()
        head.write(UInt64(1))
        try txn.put(StatementKeys.sequenceKey, head.bytes, in: .meta)
      }
      let store = StatementStore(store: server.payments.store, cache: server.cache, now: { Instant(millisecondsSinceEpoch: 0) })
      #expect(try store.statement(1) == nil, "an unfinished statement is never visible")
      #expect(try store.removeUnfinishedImports() == 2)
      let left = try server.payments.store.withReadTransaction { txn in
        (try txn.get(StatementKeys.entry(1, 0), in: .statementEntries), try txn.get(StatementKeys.dedup("icbc-cny-001", cut), in: .statementEntryKeys))
      }
      #expect(left.0 == nil && left.1 == nil)
      // The same entry now imports as new, under a fresh sequence.
      let imported = try await Self.as_(server, "clerk") { service in
        try await Self.upload(service, Self.camt053(id: "CUT", sequence: 1, opening: 1_000, entries: [Entry(reference: "CUT-1", minor: 500)]))
      }
      #expect(imported.entriesImported == 1 && imported.duplicateEntries == 0 && imported.statementID == "stm-000000000002")
    }
  }
}
