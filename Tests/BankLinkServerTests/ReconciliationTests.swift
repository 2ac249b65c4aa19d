import BankLinkClient
import BankLinkCore
import BankLinkFormats
import BankLinkProto
import BankLinkJournal
@testable import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf
import Synchronization
import Testing

/// Reconciliation over real mutual TLS and real LMDB: payments sent to the simulated bank, then
/// a statement that books them every way a bank does — by EndToEndId, with a fee, without a
/// reference, as one booking for a batch, as a return — beside fees, collections and a
/// mismatch; the report; matching by hand.
@Suite("Reconciliation")
struct ReconciliationTests {
  static let principals = [
    Principal(identity: "erp", roles: [.payer]),
    Principal(identity: "clerk", roles: [.reconciler]),
    Principal(identity: "auditor", roles: [.auditor]),
    Principal(identity: "viewer", roles: [.viewer]),
  ]
  static let account = "icbc-cny-001"

  static func instruction(_ minor: Int64, creditor: String, purpose: String, date: String) -> PaymentInstruction {
    PaymentInstruction(
      debtorAccountID: Self.account,
      creditor: Creditor(name: creditor, accountNumber: "3201550104000087761", bic: "PCBCCNBJ", country: "CN"),
      amount: Money(minorUnits: minor, currency: CurrencyCode("CNY")!), purpose: purpose, requestedExecutionDate: date, type: .domestic)
  }

  struct Line {
    var minor: Int64
    var debit = true
    var endToEnd = ""
    var reference: String
    var code = "PMNT/ICDT/DMCT"
    var counterparty = ""
    var remittance = ""
    var returnReason = ""
    var batch: Int?
    var reversal = false
    /// A second transaction detail naming another payment.
    var secondEndToEnd = ""
  }

  static func camt053(date: String, lines: [Line]) -> Data {
    func amount(_ minor: Int64) -> String { "\(abs(minor) / 100).\(String(format: "%02d", abs(minor) % 100))" }
    let opening: Int64 = 1_000_000_000
    let closing = lines.reduce(opening) { $0 + ($1.debit ? -$1.minor : $1.minor) }
    var xml = """
      <?xml version="1.0" encoding="UTF-8"?>
      <Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>
      <GrpHdr><MsgId>RECON-\(date)</MsgId><CreDtTm>\(date)T23:00:00Z</CreDtTm></GrpHdr>
      <Stmt><Id>RECON-\(date)</Id><ElctrncSeqNb>1</ElctrncSeqNb>
      <Acct><Id><Othr><Id>1001234509876543210</Id></Othr></Id><Ccy>CNY</Ccy></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">\(amount(opening))</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>\(date)</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">\(amount(closing))</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>\(date)</Dt></Dt></Bal>

      """
    for line in lines {
      let parts = line.code.split(separator: "/")
      xml += """
        <Ntry><Amt Ccy="CNY">\(amount(line.minor))</Amt><CdtDbtInd>\(line.debit ? "DBIT" : "CRDT")</CdtDbtInd>\(line.reversal ? "<RvslInd>true</RvslInd>" : "")
        <Sts><Cd>BOOK</Cd></Sts><BookgDt><Dt>\(date)</Dt></BookgDt><ValDt><Dt>\(date)</Dt></ValDt>
        <AcctSvcrRef>\(line.reference)</AcctSvcrRef>
        <BkTxCd><Domn><Cd>\(parts[0])</Cd><Fmly><Cd>\(parts[1])</Cd><SubFmlyCd>\(parts[2])</SubFmlyCd></Fmly></Domn></BkTxCd>
        <NtryDtls>\(line.batch.map { "<Btch><NbOfTxs>\($0)</NbOfTxs></Btch>" } ?? "")<TxDtls>
        \(line.endToEnd.isEmpty ? "" : "<Refs><EndToEndId>\(line.endToEnd)</EndToEndId></Refs>")
        \(line.counterparty.isEmpty ? "" : "<RltdPties><Cdtr><Pty><Nm>\(line.counterparty)</Nm></Pty></Cdtr></RltdPties>")
        \(line.remittance.isEmpty ? "" : "<RmtInf><Ustrd>\(line.remittance)</Ustrd></RmtInf>")
        \(line.returnReason.isEmpty ? "" : "<RtrInf><Rsn><Cd>\(line.returnReason)</Cd></Rsn></RtrInf>")
        </TxDtls>\(line.secondEndToEnd.isEmpty ? "" : "<TxDtls><Refs><EndToEndId>\(line.secondEndToEnd)</EndToEndId></Refs></TxDtls>")</NtryDtls></Ntry>

        """
    }
    return Data((xml + "</Stmt></BkToCstmrStmt></Document>\n").utf8)
  }

  typealias Reconciliation = Banklink_V1_ReconciliationService.Client<HTTP2ClientTransport.Posix>

  static func as_<T: Sendable>(_ server: TestServer, _ who: String, _ body: (Reconciliation) async throws -> T) async throws -> T {
    try await withBankLinkClient(server.client(try server.pki.client(commonName: who))) { try await body(Reconciliation(wrapping: $0)) }
  }

  static func report(_ service: Reconciliation, _ id: String, pageSize: Int32 = 3) async throws -> Banklink_V1_ReconciliationReport {
    var whole = Banklink_V1_ReconciliationReport()
    var token = ""
    repeat {
      let page = try await service.getReconciliationReport(.with {
        $0.reportID = id
        $0.pageSize = pageSize
        $0.pageToken = token
      })
      let matches = whole.matches + page.matches
      let entries = whole.unmatchedEntries + page.unmatchedEntries
      let payments = whole.unmatchedPayments + page.unmatchedPayments
      whole = page
      whole.matches = matches
      whole.unmatchedEntries = entries
      whole.unmatchedPayments = payments
      token = page.nextPageToken
    } while !token.isEmpty
    return whole
  }

  @Test("every way a bank books a payment is matched with its reason; the rest classified; a clerk matches and unmatches")
  func reconcileStatement() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let today = WallClock.now().isoDate
      let ledger = server.payments
      func pay(_ minor: Int64, _ key: String, creditor: String = "Jiangsu Hengrui Logistics Co., Ltd.", purpose: String = "Freight") async throws -> Payment {
        try await ledger.create(Self.instruction(minor, creditor: creditor, purpose: purpose, date: today), idempotencyKey: key, creator: "erp").payment
      }
      let exact = try await pay(800_000, "exact")
      let withFee = try await pay(250_000, "fee")
      let noReference = try await pay(
        123_456, "heuristic", creditor: "Zhejiang Lianda Electronics Co., Ltd.", purpose: "Invoice LD-2026-4471")
      let batch = try await ledger.createBatch(
        [Self.instruction(10_000, creditor: "Payroll A", purpose: "Salary", date: today),
         Self.instruction(20_000, creditor: "Payroll B", purpose: "Salary", date: today)],
        idempotencyKey: "batch", creator: "erp")
      let returned = try await pay(77_700, "returned")
      let mismatched = try await pay(300_000, "mismatch")
      let unbooked = try await pay(999_900, "unbooked")
      // Cancelled before it reached the bank; the bank books its EndToEndId anyway, for the
      // same amount as `unbooked`: never settled in its place.
      let cancelled = try await pay(999_900, "cancelled")
      _ = try await ledger.cancel(cancelled.id, by: "erp", isAdmin: false, reason: "duplicate")
      // Everything goes to the bank; no pain.002 is applied, so nothing is settled yet.
      _ = try await server.submitter.submitPending()
      #expect(try ledger.payment(exact.id)?.status == .submitted)

      let lines = [
        Line(minor: 800_000, endToEnd: exact.endToEndID, reference: "B-1"),
        Line(minor: 250_500, endToEnd: withFee.endToEndID, reference: "B-2"),
        Line(minor: 123_456, reference: "B-3", counterparty: "ZHEJIANG LIANDA ELECTRONICS CO LTD", remittance: "LD-2026-4471"),
        Line(minor: 30_000, reference: "B-4", batch: 2),
        Line(minor: 77_700, debit: true, endToEnd: returned.endToEndID, reference: "B-5"),
        Line(minor: 77_700, debit: false, endToEnd: returned.endToEndID, reference: "B-6", code: "PMNT/ICDT/RRTN", returnReason: "AC04"),
        Line(minor: 150, reference: "B-7", code: "ACMT/MDOP/CHRG"),
        Line(minor: 5_000_000, debit: false, reference: "B-8", code: "PMNT/RCDT/DMCT", counterparty: "A customer"),
        Line(minor: 310_000, endToEnd: mismatched.endToEndID, reference: "B-9"),
        Line(minor: 999_900, endToEnd: cancelled.endToEndID, reference: "B-10"),
      ]
      let imported = try await Self.as_(server, "clerk") { service in
        try await service.importStatement(requestProducer: { writer in
          try await writer.write(.with { $0.content = Self.camt053(date: today, lines: lines) })
        })
      }
      let run = imported.reconciliation
      #expect(run.matched == 6 && run.unmatchedEntries == 4 && run.unmatchedPayments == 2, "\(run)")
      #expect(run.settled == 5 && run.returned == 1, "\(run)")

      let report = try await Self.as_(server, "auditor") { try await Self.report($0, run.reportID) }
      #expect(report.createdBy == "auto" && report.accountID == Self.account && report.fromDate == today)
      let byReference = Dictionary(uniqueKeysWithValues: report.matches.map { ($0.entry.bankReference, $0) })
      #expect(byReference["B-1"]?.method == .reference && byReference["B-1"]?.paymentIds == [exact.id] && byReference["B-1"]?.score == 1000)
      #expect(byReference["B-2"]?.difference.minorUnits == 500 && byReference["B-2"]?.reason.contains("fee 500") == true)
      #expect(byReference["B-3"]?.method == .heuristic && byReference["B-3"]?.paymentIds == [noReference.id], "\(report.matches.map(\.reason))")
      #expect(byReference["B-3"]?.reason.contains("counterparty") == true && byReference["B-3"]!.score >= 600)
      #expect(byReference["B-4"]?.method == .batch && Set(byReference["B-4"]?.paymentIds ?? []) == Set(batch.payments.map(\.id)))
      #expect(byReference["B-6"]?.method == .return && byReference["B-6"]?.reason.contains("AC04") == true)
      let classes = Dictionary(uniqueKeysWithValues: report.unmatchedEntries.map { ($0.entry.bankReference, $0.classification) })
      #expect(
        classes == ["B-7": "fee", "B-8": "collection", "B-9": "amount_mismatch", "B-10": "reference_not_open"],
        "\(report.unmatchedEntries.map(\.reason))")
      #expect(report.unmatchedEntries.first { $0.entry.bankReference == "B-10" }?.reason.contains("cancelled") == true)
      #expect(Set(report.unmatchedPayments.map(\.paymentID)) == [mismatched.id, unbooked.id])

      // What the matches did to the payments.
      for payment in [exact, withFee, noReference] + batch.payments { #expect(try ledger.payment(payment.id)?.status == .settled) }
      #expect(try ledger.payment(returned.id)?.status == .returned)
      #expect(try ledger.payment(mismatched.id)?.status == .submitted)
      #expect(try ledger.payment(unbooked.id)?.status == .submitted)
      #expect(try ledger.payment(cancelled.id)?.status == .cancelled)

      let mismatchEntry = try #require(report.unmatchedEntries.first { $0.entry.bankReference == "B-9" }).entry.entryID
      try await Self.as_(server, "clerk") { service in
        // A clerk's match needs a note, and only payments of the entry's account not matched yet.
        let noNote = await #expect(throws: RPCError.self) {
          try await service.matchEntry(.with { $0.entryID = mismatchEntry; $0.paymentIds = [mismatched.id] })
        }
        #expect(noNote?.code == .invalidArgument && noNote?.message.hasPrefix("note") == true)
        let taken = await #expect(throws: RPCError.self) {
          try await service.matchEntry(.with { $0.entryID = mismatchEntry; $0.paymentIds = [exact.id]; $0.note = "wrong one" })
        }
        #expect(taken?.code == .failedPrecondition, "\(String(describing: taken))")
        let matched = try await service.matchEntry(.with {
          $0.entryID = mismatchEntry
          $0.paymentIds = [mismatched.id]
          $0.note = "bank booked 100.00 of charges on the same line; confirmed by phone"
        })
        #expect(matched.match.method == .manual && matched.match.matchedBy == "clerk" && matched.match.difference.minorUnits == 10_000)
        #expect(matched.receipt.journalSequence > 0)
        #expect(try ledger.payment(mismatched.id)?.status == .settled)
        let twice = await #expect(throws: RPCError.self) {
          try await service.matchEntry(.with { $0.entryID = mismatchEntry; $0.paymentIds = [unbooked.id]; $0.note = "again" })
        }
        #expect(twice?.code == .failedPrecondition)
        _ = try await service.unmatchEntry(.with { $0.entryID = mismatchEntry; $0.note = "matched in error" })
        let notMatched = await #expect(throws: RPCError.self) {
          try await service.unmatchEntry(.with { $0.entryID = mismatchEntry; $0.note = "again" })
        }
        #expect(notMatched?.code == .failedPrecondition)

        // On demand: the unmatched entry and payment are still there, nothing matched twice;
        // the payment the clerk unmatched is held for a clerk, and listed as unmatched.
        let again = try await service.reconcile(.with { $0.accountID = Self.account })
        #expect(again.matched == 0 && again.unmatchedEntries == 4 && again.unmatchedPayments == 2, "\(again)")
        let listed = try await Self.report(service, again.reportID)
        #expect(Set(listed.unmatchedPayments.map(\.paymentID)) == [mismatched.id, unbooked.id])
      }
      let anomalies = try server.payments.store.withReadTransaction { txn in
        try AlertLog.page(after: 0, limit: 100, scanLimit: 1_000, filter: AlertFilter(), in: txn).alerts.filter { $0.kind == .anomaly }
      }
      #expect(anomalies.contains { $0.message.contains("does not hold open") }, "\(anomalies.map(\.message))")
      // Auditors read, never change; viewers neither.
      let denied = await #expect(throws: RPCError.self) {
        try await Self.as_(server, "auditor") { try await $0.reconcile(.with { $0.accountID = Self.account }) }
      }
      #expect(denied?.code == .permissionDenied)
      let viewer = await #expect(throws: RPCError.self) {
        try await Self.as_(server, "viewer") { try await $0.getReconciliationReport(.with { $0.reportID = run.reportID }) }
      }
      #expect(viewer?.code == .permissionDenied)
      let journal = try server.payments.store.withReadTransaction { txn in
        try AuditJournal.entries(after: 0, limit: 10_000, in: txn).map(\.action)
      }
      #expect(journal.filter { $0 == "reconciliation.run" }.count == 2)
      #expect(journal.contains("reconciliation.matched") && journal.contains("reconciliation.unmatched"))
    }
  }

  @Test("a reversal is never a return; a debit naming a payment not open is left whole to a clerk; a fee never settles a payment by amount")
  func bankBookingsThatAreNotPayments() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let today = WallClock.now().isoDate
      let ledger = server.payments
      func pay(_ minor: Int64, _ key: String) async throws -> Payment {
        try await ledger.create(Self.instruction(minor, creditor: "Jiangsu Hengrui Logistics Co., Ltd.", purpose: "Freight", date: today),
          idempotencyKey: key, creator: "erp").payment
      }
      let twice = try await pay(100_000, "twice")
      let open = try await pay(100_000, "multi-open")
      let cancelled = try await pay(3_000, "multi-cancelled")
      _ = try await ledger.cancel(cancelled.id, by: "erp", isAdmin: false, reason: "duplicate")
      let feeSized = try await pay(25_000, "fee-sized")
      _ = try await server.submitter.submitPending()
      let lines = [
        // Booked, booked a second time by mistake, and that second booking reversed (with a
        // reason code, as banks send).
        Line(minor: 100_000, endToEnd: twice.endToEndID, reference: "N-1"),
        Line(minor: 100_000, endToEnd: twice.endToEndID, reference: "N-2"),
        Line(minor: 100_000, debit: false, endToEnd: twice.endToEndID, reference: "N-3", returnReason: "DUPL", reversal: true),
        // One debit for an open payment and a cancelled one: within the fee tolerance of the
        // open one alone.
        Line(minor: 103_000, endToEnd: open.endToEndID, reference: "N-4", secondEndToEnd: cancelled.endToEndID),
        // A charge of exactly the amount of a payment due today.
        Line(minor: 25_000, reference: "N-5", code: "ACMT/MDOP/CHRG"),
      ]
      let imported = try await Self.as_(server, "clerk") { service in
        try await service.importStatement(requestProducer: { writer in
          try await writer.write(.with { $0.content = Self.camt053(date: today, lines: lines) })
        })
      }
      let report = try await Self.as_(server, "auditor") { try await Self.report($0, imported.reconciliation.reportID) }
      #expect(report.matches.map(\.entry.bankReference) == ["N-1"], "\(report.matches.map(\.reason))")
      let classes = Dictionary(uniqueKeysWithValues: report.unmatchedEntries.map { ($0.entry.bankReference, $0.classification) })
      #expect(
        classes == ["N-2": "reference_not_open", "N-3": "payment_reversal", "N-4": "reference_not_open", "N-5": "fee"],
        "\(report.unmatchedEntries.map(\.reason))")
      #expect(try ledger.payment(twice.id)?.status == .settled)
      #expect(try ledger.payment(open.id)?.status == .submitted)
      #expect(try ledger.payment(cancelled.id)?.status == .cancelled)
      #expect(try ledger.payment(feeSized.id)?.status == .submitted)
      // The reversal naming a payment of ours is an anomaly for a clerk, as the strays are.
      let anomalies = try server.payments.writer.store.withReadTransaction {
        try AlertLog.page(after: 0, limit: 100, scanLimit: 1_000, filter: AlertFilter(), in: $0).alerts
      }.filter { $0.kind == .anomaly }.map(\.message)
      #expect(anomalies.contains { $0.contains("1 reversals") } && anomalies.contains { $0.contains("2 booked entries") }, "\(anomalies)")
    }
  }

  @Test("the run after an import lists the open payments of its statements' period and window, not every older one again; a run on demand lists them")
  func autoRunListsItsPeriodsPayments() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let now = WallClock.now()
      let today = now.isoDate
      func day(_ offset: Int64) -> String { now.adding(milliseconds: offset * 86_400_000).isoDate }
      let open = try await server.payments.create(
        Self.instruction(42_000, creditor: "Jiangsu Hengrui Logistics Co., Ltd.", purpose: "Freight", date: today),
        idempotencyKey: "older", creator: "erp"
      ).payment
      _ = try await server.submitter.submitPending()
      func importCharge(on date: String) async throws -> Banklink_V1_ReconcileResponse {
        try await Self.as_(server, "clerk") { service in
          try await service.importStatement(requestProducer: { writer in
            try await writer.write(.with { $0.content = Self.camt053(date: date, lines: [Line(minor: 150, reference: "T-\(date)", code: "ACMT/MDOP/CHRG")]) })
          })
        }.reconciliation
      }
      // Within the date window after its day: listed, it is late.
      let late = try await importCharge(on: day(2))
      #expect(late.unmatchedEntries == 1 && late.unmatchedPayments == 1, "\(late)")
      // A week on: not listed again by every run after an import.
      let later = try await importCharge(on: day(7))
      #expect(later.unmatchedEntries == 1 && later.unmatchedPayments == 0, "\(later)")
      let onDemand = try await Self.as_(server, "clerk") { service in try await service.reconcile(.with { $0.accountID = Self.account }) }
      let report = try await Self.as_(server, "clerk") { try await Self.report($0, onDemand.reportID) }
      #expect(report.unmatchedPayments.map(\.paymentID) == [open.id])
    }
  }

  @Test("the run after an import considers that import's entries: earlier unmatched entries are not listed again; a run on demand lists them all")
  func autoRunScope() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let today = WallClock.now().isoDate
      func upload(_ lines: [Line], id: String) async throws -> Banklink_V1_ReconcileResponse {
        let file = String(decoding: Self.camt053(date: today, lines: lines), as: UTF8.self).replacingOccurrences(of: "RECON-\(today)", with: id)
        return try await Self.as_(server, "clerk") { service in
          try await service.importStatement(requestProducer: { writer in try await writer.write(.with { $0.content = Data(file.utf8) }) })
        }.reconciliation
      }
      let first = try await upload([Line(minor: 150, reference: "F-1", code: "ACMT/MDOP/CHRG"), Line(minor: 250, reference: "F-2", code: "ACMT/MDOP/CHRG")], id: "S-1")
      #expect(first.unmatchedEntries == 2)
      let second = try await upload([Line(minor: 350, reference: "F-3", code: "ACMT/MDOP/CHRG")], id: "S-2")
      #expect(second.unmatchedEntries == 1, "\(second)")
      let report = try await Self.as_(server, "clerk") { try await Self.report($0, second.reportID) }
      #expect(report.unmatchedEntries.map(\.entry.bankReference) == ["F-3"])
      let onDemand = try await Self.as_(server, "clerk") { service in
        try await service.reconcile(.with { $0.accountID = Self.account })
      }
      #expect(onDemand.unmatchedEntries == 3)
    }
  }

  @Test("an inbox statement stored before a crash cut its reconciliation short is reconciled when the inbox service retries it")
  func inboxRetryReconciles() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let today = WallClock.now().isoDate
      let file = Self.camt053(date: today, lines: [Line(minor: 150, reference: "C-1", code: "ACMT/MDOP/CHRG")])
      try await withTemporaryDirectory { directory in
        let path = directory.appending("stmt.xml")
        try file.write(to: URL(fileURLWithPath: path))
        let sha256 = SHA256.hash(data: file).map { String(format: "%02x", $0) }.joined()
        // Stored, then the process died before the reconciliation that follows an import.
        let stored = try await server.server.reconciliation.statements.importFile(
          at: path, sha256: sha256, bytes: Int64(file.count), fileName: "stmt.xml", declared: nil, importedBy: "connector:files")
        #expect(!stored.duplicateFile)
        let reconciler = server.server.reconciliation.reconciler
        func reports() throws -> [ReconciliationReportHeader] { try (1...100).compactMap { try reconciler.report(UInt64($0)) } }
        let before = try reports()
        // The inbox service's retry: a duplicate file, and the run that was missed.
        let retried = try await server.server.importBankStatement(path: path, sha256: sha256, bytes: Int64(file.count), fileName: "stmt.xml")
        #expect(retried.duplicateFile)
        let after = try reports()
        #expect(after.count == before.count + 1)
        #expect(after.last?.unmatchedEntries == 1, "\(after)")
      }
    }
  }

  /// Imports `file` through the statement store alone (no run after it: the test runs its own).
  static func importWithoutRun(_ server: TestServer, _ file: Data) async throws {
    try await withTemporaryDirectory { directory in
      let path = directory.appending("statement.xml")
      try file.write(to: URL(fileURLWithPath: path))
      _ = try await server.server.reconciliation.statements.importFile(
        at: path, sha256: Hex.encode(Array(SHA256.hash(data: file))), bytes: Int64(file.count), fileName: "statement.xml", declared: nil,
        importedBy: "clerk")
    }
  }

  @Test("a run larger than one commit: every entry decided once across chunks, and an EndToEndId wins over an amount that fits")
  func runAcrossCommits() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let today = WallClock.now().isoDate
      let now = WallClock.now()
      let count = Limits.statementEntriesPerCommit * 2 + 100
      let booked = count - 3
      let contested = Limits.statementEntriesPerCommit + 1_000
      func id(_ i: Int) -> String { "pay-chunks-" + String(i) }
      func endToEnd(_ i: Int) -> String { "E2E-CHUNKS-" + String(i) }
      func minor(_ i: Int) -> Int64 { Int64(100_000 + i * 10_000) }
      // Submitted payments with amounts far apart (no fee tolerance makes two of them fit one
      // entry), written directly: the run is under test, not the ledger.
      try server.payments.store.withWriteTransaction { txn in
        for i in 0..<count {
          let payment = Payment(
            id: id(i), instruction: Self.instruction(minor(i), creditor: "Creditor \(i) Trading Co., Ltd.", purpose: "Invoice \(i)", date: today),
            status: .submitted, creator: "erp", idempotencyKey: "chunks-\(i)", endToEndID: endToEnd(i), createdAt: now, updatedAt: now)
          try txn.put(Array(payment.id.utf8), payment.record, in: .payments)
          try txn.put(Array(endToEnd(i).utf8), Array(payment.id.utf8), in: .paymentsByEndToEnd)
        }
      }
      // First, an entry without a reference that fits the contested payment by amount, date and
      // name; the entry naming that payment's EndToEndId comes in a later commit of the run.
      var lines = [
        Line(minor: minor(contested), reference: "H-0", counterparty: "CREDITOR \(contested) TRADING CO LTD", remittance: "Invoice \(contested)")
      ]
      for i in 0..<booked { lines.append(Line(minor: minor(i), endToEnd: endToEnd(i), reference: "R-\(i)")) }
      try await Self.importWithoutRun(server, Self.camt053(date: today, lines: lines))
      let reconciler = server.server.reconciliation.reconciler
      let outcome = try reconciler.reconcile(accountID: Self.account, fromDate: today, toDate: today, by: "clerk")
      #expect(outcome.report.matched == booked && outcome.report.settled == booked, "\(outcome.report)")
      #expect(outcome.report.unmatchedEntries == 1 && outcome.report.unmatchedPayments == 3, "\(outcome.report)")

      // Every line of the report once, in order, across the run's commits.
      var items: [(index: UInt32, item: ReportItem)] = []
      var from: UInt32 = 0
      while true {
        let page = try reconciler.items(of: outcome.report.sequence, from: from, limit: 1_000)
        items += page.items.map { ($0.index, $0.item) }
        guard page.more, let last = page.items.last else { break }
        from = last.index + 1
      }
      #expect(items.map(\.index) == (0..<UInt32(count + 1)).map { $0 })
      var matchedPayments: [String: MatchMethod] = [:]
      var entries = Set<[UInt8]>()
      var unmatchedPayments: [String] = []
      for (_, item) in items {
        switch item {
        case .match(let match):
          #expect(entries.insert(match.entryKey).inserted)
          for payment in match.paymentIDs { #expect(matchedPayments.updateValue(match.method, forKey: payment) == nil) }
        case .unmatchedEntry(let key, let classification, _):
          #expect(entries.insert(key).inserted)
          #expect(classification == "unexplained")
        case .unmatchedPayment(let payment): unmatchedPayments.append(payment)
        }
      }
      #expect(matchedPayments[id(contested)] == .reference)
      #expect(matchedPayments.count == booked && matchedPayments.values.allSatisfy { $0 == .reference })
      #expect(unmatchedPayments == (booked..<count).map(id).sorted())
      #expect(try server.payments.payment(id(contested))?.status == .settled)
      #expect(try server.payments.payment(id(count - 1))?.status == .submitted)

      // On demand again: nothing left to match, nothing matched twice.
      let again = try reconciler.reconcile(accountID: Self.account, fromDate: today, toDate: today, by: "clerk")
      #expect(again.report.matched == 0 && again.report.unmatchedEntries == 1 && again.report.unmatchedPayments == 3, "\(again.report)")
    }
  }

  @Test("a run's match record names the report line holding the match: read back whole, unmatched through it, the line kept; a line that does not hold it is corruption")
  func matchRecordsNameTheirLine() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let today = WallClock.now().isoDate
      let now = WallClock.now()
      let store = server.payments.store
      try store.withWriteTransaction { txn in
        for i in 0..<2 {
          let payment = Payment(
            id: "pay-line-\(i)", instruction: Self.instruction(Int64(10_000 * (i + 1)), creditor: "Line \(i) Trading Co., Ltd.", purpose: "Invoice", date: today), status: .submitted, creator: "erp",
            idempotencyKey: "line-\(i)", endToEndID: "E2E-LINE-\(i)", createdAt: now, updatedAt: now)
          try txn.put(Array(payment.id.utf8), payment.record, in: .payments)
          try txn.put(Array(payment.endToEndID.utf8), Array(payment.id.utf8), in: .paymentsByEndToEnd)
        }
      }
      try await Self.importWithoutRun(
        server,
        Self.camt053(
          date: today, lines: [Line(minor: 10_000, endToEnd: "E2E-LINE-0", reference: "L-0"), Line(minor: 20_000, endToEnd: "E2E-LINE-1", reference: "L-1")]))
      let reconciler = server.server.reconciliation.reconciler
      // The run matches both; its report's lines hold the matches whole.
      let report = try reconciler.reconcile(accountID: Self.account, fromDate: today, toDate: today, by: "clerk").report
      #expect(report.matched == 2, "\(report)")
      let lines = try reconciler.items(of: report.sequence, from: 0, limit: 10).items
      let matches = lines.compactMap { line -> EntryMatch? in
        if case .match(let match) = line.item { return match }
        return nil
      }
      #expect(matches.count == 2 && matches.allSatisfy { $0.method == .reference })
      for (index, match) in matches.enumerated() {
        // Stored as the line's place (format, report, index: 13 bytes), read back as the line's match.
        let record = try #require(try store.withReadTransaction { try $0.get(match.entryKey, in: .reconMatches) })
        #expect(record.count == 13 && record.first == 2, "\(record)")
        #expect(try reconciler.match(of: match.entryID) == match, "line \(index)")
      }
      // Unmatched through the line: the match record goes, the report keeps its line.
      _ = try reconciler.unmatch(entryID: matches[0].entryID, note: "booked against the wrong invoice", by: "clerk")
      #expect(try reconciler.match(of: matches[0].entryID) == nil)
      #expect(try reconciler.items(of: report.sequence, from: 0, limit: 10).items.map(\.item) == lines.map(\.item))
      // A clerk's match is stored whole (no line of a run holds it).
      let manual = try reconciler.match(entryID: matches[0].entryID, paymentIDs: ["pay-line-0"], note: "confirmed with the bank", by: "clerk").0
      let manualRecord = try #require(try store.withReadTransaction { try $0.get(manual.entryKey, in: .reconMatches) })
      #expect(manualRecord.first == 1)
      #expect(try reconciler.match(of: manual.entryID) == manual)
      // A run's later pass deciding that entry after the clerk matched it (between the run's
      // commits) leaves it alone: neither this run's match nor listed as unmatched.
      var later = Reconciler.RunState(
        header: ReconciliationReportHeader(sequence: report.sequence + 1, createdAt: now, createdBy: "auto", accountID: Self.account, fromDate: today, toDate: today))
      let heuristic = Reconciler.match(
        manual.entryKey, Self.account, "CNY", ["pay-line-1"], .heuristic, 700, "amount and date", at: now)
      try store.withWriteTransaction { txn in
        try Reconciler.record(.match(heuristic, settle: true, returned: false), at: now, run: &later, txn: &txn)
      }
      #expect(later.header.matched == 0 && later.header.unmatchedEntries == 0, "\(later.header)")
      #expect(try reconciler.match(of: manual.entryID) == manual)
      // A record naming a line that holds another entry's match is refused as corrupt, never
      // taken for this entry's match.
      try store.withWriteTransaction { txn in
        var writer = RecordWriter()
        writer.write(UInt8(2))
        writer.write(report.sequence)
        writer.write(UInt32(0))
        try txn.put(matches[1].entryKey, writer.bytes, in: .reconMatches)
      }
      let corrupt = #expect(throws: StoreError.self) { try reconciler.match(of: matches[1].entryID) }
      #expect(corrupt?.code == .corrupted)
    }
  }

  @Test("a run cut short between its commits leaves a readable, incomplete report; the next run finishes the work")
  func runCutShort() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let today = WallClock.now().isoDate
      let now = WallClock.now()
      let count = Limits.statementEntriesPerCommit * 2 + 10
      // Three payments the statement does not book (unmatched: the last pass's commit).
      let payments = count + 3
      func endToEnd(_ i: Int) -> String { "E2E-CUT-" + String(i) }
      func minor(_ i: Int) -> Int64 { Int64(100_000 + i * 10_000) }
      try server.payments.store.withWriteTransaction { txn in
        for i in 0..<payments {
          let payment = Payment(
            id: "pay-cut-\(i)", instruction: Self.instruction(minor(i), creditor: "Creditor \(i)", purpose: "Invoice \(i)", date: today),
            status: .submitted, creator: "erp", idempotencyKey: "cut-\(i)", endToEndID: endToEnd(i), createdAt: now, updatedAt: now)
          try txn.put(Array(payment.id.utf8), payment.record, in: .payments)
          try txn.put(Array(endToEnd(i).utf8), Array(payment.id.utf8), in: .paymentsByEndToEnd)
        }
      }
      // And two debits naming no payment (left to the heuristic pass, which finds nothing).
      let file = Self.camt053(
        date: today,
        lines: (0..<count).map { Line(minor: minor($0), endToEnd: endToEnd($0), reference: "C-\($0)") } + [
          Line(minor: 777, reference: "FEE-1"), Line(minor: 778, reference: "FEE-2"),
        ])
      try await withTemporaryDirectory { directory in
        let path = directory.appending("cut.xml")
        try file.write(to: URL(fileURLWithPath: path))
        _ = try await server.server.reconciliation.statements.importFile(
          at: path, sha256: String(repeating: "ef", count: 32), bytes: Int64(file.count), fileName: "cut.xml", declared: nil, importedBy: "clerk")
      }
      struct CutShort: Error {}
      let store = server.payments.store
      let seen = Mutex<[ReconciliationReportHeader]>([])
      // What a kill -9 after the run's first commit would leave, read from the store there; the
      // second commit's hook cuts the run short.
      // After each commit of a run, the store holds the header as committed (incomplete) and
      // exactly the lines it counts.
      @Sendable func checkCommitted(_ committed: ReconciliationReportHeader) throws {
        let page = try #require(try Reconciler(store: store, now: WallClock.now).page(of: committed.sequence, from: 0, limit: 100_000))
        #expect(page.header == committed && !page.header.complete, "\(page.header)")
        #expect(page.items.count == committed.matched + committed.unmatchedEntries + committed.unmatchedPayments)
      }
      let interrupted = Reconciler(store: store, now: WallClock.now) { committed in
        try checkCommitted(committed)
        let commits = seen.withLock { $0.append(committed); return $0.count }
        if commits == 2 { throw CutShort() }
      }
      #expect(throws: CutShort.self) { try interrupted.reconcile(accountID: Self.account, fromDate: today, toDate: today, by: "clerk") }
      let first = try #require(seen.withLock { $0.first })
      #expect(first.matched == Limits.statementEntriesPerCommit)
      let cut = try #require(try interrupted.report(first.sequence))
      #expect(!cut.complete && cut.matched == Limits.statementEntriesPerCommit * 2, "\(cut)")
      let journal = try store.withReadTransaction { txn in try AuditJournal.entries(about: cut.id, limit: 10, in: txn) }
      #expect(journal.count == 1 && journal[0].payload.contains("incomplete"), "\(journal.map(\.payload))")

      // The next run matches what is left, and only that; each of its passes commits (reference,
      // heuristic, unmatched payments), each commit with its header.
      let restCommits = Mutex(0)
      let resumed = Reconciler(store: store, now: WallClock.now) { committed in
        try checkCommitted(committed)
        restCommits.withLock { $0 += 1 }
      }
      let rest = try resumed.reconcile(accountID: Self.account, fromDate: today, toDate: today, by: "clerk")
      #expect(rest.report.complete && rest.report.matched == 10, "\(rest.report)")
      #expect(rest.report.unmatchedEntries == 2 && rest.report.unmatchedPayments == 3, "\(rest.report)")
      // The reference pass reads the statement's 10,012 entries in three commits (matched ones
      // skipped), then one for the heuristic pass's two entries, one for the three payments.
      #expect(restCommits.withLock { $0 } == 5)
      #expect(try interrupted.report(rest.report.sequence)?.complete == true)
    }
  }

  @Test("a report header of format 1 (before the complete flag) reads as complete, unless its run's journal entry says incomplete")
  func headerFormatOne() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let store = server.payments.store
      let reconciler = Reconciler(store: store, now: WallClock.now)
      func formatOne(_ sequence: UInt64) -> [UInt8] {
        var header = ReconciliationReportHeader(
          sequence: sequence, createdAt: WallClock.now(), createdBy: "clerk", accountID: Self.account, fromDate: "", toDate: "")
        header.matched = 3
        // Format 2 is format 1 with a flag byte at the end.
        var bytes = ReconRecords.encode(header)
        bytes[0] = 1
        return Array(bytes.dropLast())
      }
      try store.withWriteTransaction { txn in
        try txn.put(StatementKeys.statement(901), formatOne(901), in: .reconReports)
        try txn.put(StatementKeys.statement(902), formatOne(902), in: .reconReports)
        _ = try AuditJournal.append(
          &txn, at: WallClock.now(), principal: "clerk", action: "reconciliation.run", object: ReconciliationIDs.report(901),
          details: ["matched": "3"])
        _ = try AuditJournal.append(
          &txn, at: WallClock.now(), principal: "clerk", action: "reconciliation.run", object: ReconciliationIDs.report(902),
          details: ["matched": "3", "incomplete": "the store is full"])
      }
      let finished = try #require(try reconciler.report(901))
      #expect(finished.complete && finished.matched == 3)
      #expect(try reconciler.report(902)?.complete == false)
      // Over the API: `incomplete` is set only for the run cut short.
      let answers = try await Self.as_(server, "clerk") { client in
        [try await client.getReconciliationReport(.with { $0.reportID = ReconciliationIDs.report(901) }),
         try await client.getReconciliationReport(.with { $0.reportID = ReconciliationIDs.report(902) })]
      }
      #expect(answers.map(\.incomplete) == [false, true])
    }
  }

  @Test("the amount index skips taken candidates and finds the first amount in reach")
  func candidateIndex() {
    var index = Reconciler.CandidateIndex()
    for (i, amount) in [500, 100, 300, 300, 200].enumerated() {
      index.candidates.append(
        Reconciler.Candidate(id: "p\(i)", amount: Int64(amount), executionDate: "", creditor: "", purpose: "", batchID: i < 2 ? "b" : ""))
    }
    index.seal()
    func alive(from amount: Int64) -> [String] {
      var found: [String] = []
      var place = index.alive(from: index.lowerBound(amount))
      while place < index.byAmount.count {
        found.append(index.candidates[Int(index.byAmount[place])].id)
        place = index.alive(from: place + 1)
      }
      return found
    }
    #expect(alive(from: 0) == ["p1", "p4", "p2", "p3", "p0"])
    #expect(alive(from: 250) == ["p2", "p3", "p0"])
    index.take(2)
    index.take(3)
    #expect(alive(from: 250) == ["p0"])
    #expect(alive(from: 0) == ["p1", "p4", "p0"])
    index.take(0)
    #expect(alive(from: 250).isEmpty)
    #expect(index.batchIDs == ["b"] && index.batches["b"] == [0, 1])
    var empty = Reconciler.CandidateIndex()
    #expect(empty.alive(from: 0) == 0 && empty.lowerBound(5) == 0)
  }

  @Test("name similarity ignores case, punctuation and legal forms; days between ISO dates; what an entry keeps is bounded")
  func helpers() {
    // A batch booking's remittance (thousands of details of 32 lines) is kept to 4 KiB, cut at
    // a character; the counterparty likewise.
    var entry = StatementEntry()
    var details = TransactionDetails()
    details.remittance = Array(repeating: "INV-1 江苏恒瑞 " + String(repeating: "x", count: 65_000), count: 32)
    entry.details = Array(repeating: details, count: 100)
    let kept = Reconciler.keptRemittance(entry)
    #expect(kept.utf8.count <= Reconciler.maxKeptRemittanceBytes && kept.hasPrefix("INV-1 江苏恒瑞 XXX"))
    #expect(FormatValues.clip("江苏恒瑞", maxBytes: 7) == "江苏" && FormatValues.clip("abc", maxBytes: 7) == "abc")
    #expect(Reconciler.nameSimilarity("ZHEJIANG LIANDA ELECTRONICS CO LTD", "Zhejiang Lianda Electronics Co., Ltd.") == 100)
    #expect(Reconciler.nameSimilarity("Lianda Electronics", "Hengrui Logistics") == 0)
    #expect(Reconciler.nameSimilarity("江苏恒瑞物流有限公司", "江苏恒瑞物流") == 100)
    // Plain ASCII names take a byte path; names with other characters the general one. Both
    // split at anything but letters and digits and ignore case: the same words either way.
    #expect(Reconciler.nameSimilarity("Supplier 12 Co., Ltd.", "supplier-12 trading") == 66)
    #expect(Reconciler.nameSimilarity("Supplier 12 Co., Ltd.", "Supplier 12 Co., Ltd. ·") == 100)
    #expect(Reconciler.nameSimilarity("Müller Supplier 12 GmbH", "MÜLLER supplier_13") == 50)
    #expect(Reconciler.nameSimilarity("Muller Supplier 12 GmbH", "MULLER supplier_13") == 50)
    #expect(Reconciler.nameSimilarity("the co ltd", "Acme") == 0)
    #expect(Reconciler.daysBetween("2026-12-31", "2027-01-02") == 2)
    #expect(Reconciler.daysBetween("2024-02-28", "2024-03-01") == 2)
    #expect(Reconciler.daysBetween("2026-13-01", "2026-12-01") == nil)
    // Journal entries name the method as earlier builds wrote it.
    for method in [MatchMethod.reference, .heuristic, .batch, .returned, .manual] { #expect(method.name == "\(method)") }
  }
}
