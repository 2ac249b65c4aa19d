import BankLinkBanks
import BankLinkClient
import BankLinkCore
import BankLinkProto
import BankLinkTestSupport
import Foundation
import GRPCCore
import SwiftProtobuf
import Testing

/// banklinkd with `connector.type = "files"`: the whole flow through the two directories, with
/// the embedded simulator playing the bank; and kill -9 while an inbox file is processed.
@Suite("Host-to-host files on the real daemon", .serialized)
struct FileConnectorDaemonTests {
  static func poll<T>(seconds: Int, _ body: () async throws -> T?) async throws -> T? {
    let deadline = ContinuousClock.now.advanced(by: .seconds(seconds))
    while ContinuousClock.now < deadline {
      if let value = try await body() { return value }
      try await Task.sleep(for: .milliseconds(200))
    }
    return nil
  }

  /// The first bank-file alert `matching`, asked for as `admin` until one is there (30 s).
  static func fileAlert(
    pki: TestPKI, address: String, admin: ClientIdentityFiles, matching: @escaping @Sendable (Banklink_V1_Alert) -> Bool
  ) async throws -> Banklink_V1_Alert? {
    try await Self.poll(seconds: 30) { () -> Banklink_V1_Alert? in
      try await withBankLinkClient(pki.clientConfiguration(address: address, identity: admin)) { grpc in
        try await Banklink_V1_MonitoringService.Client(wrapping: grpc).listAlerts(.with {
          $0.pageSize = 1_000
          $0.kinds = [.bankFileQuarantined]
        }).alerts.first(where: matching)
      }
    }
  }

  static func names(_ path: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
  }

  @Test("a payment leaves as pain.001, settles by pain.002, its debit arrives in a camt.054 that is stored and reconciled; a bad file is quarantined with an alert")
  func wholeFlow() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let config = directory.appending("banklinkd.json")
      let metricsPort = try MetricsTests.freePort()
      try Data("""
        {"listen": "127.0.0.1:0", "data_dir": "data",
         "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
         "metrics": {"listen": "127.0.0.1:\(metricsPort)"},
         "connector": {"type": "files", "history_days": 1,
                       "files": {"outbox": "h2h/outbox", "inbox": "h2h/inbox", "poll_interval_ms": 200, "settle_ms": 0,
                                 "simulate_bank": true}},
         "payments": {"submit_interval_ms": 100},
         "principals": [{"identity": "erp", "roles": ["payer"]}, {"identity": "clerk", "roles": ["reconciler"]},
                        {"identity": "admin", "roles": ["admin"]}]}
        """.utf8).write(to: URL(fileURLWithPath: config))
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let erp = try pki.client(commonName: "erp", file: "erp")
      let clerk = try pki.client(commonName: "clerk", file: "clerk")
      let admin = try pki.client(commonName: "admin", file: "admin")
      // Balances come from the bank's first camt.053 through the inbox: the daemon reports its
      // first complete sync only once they have.
      let daemon = try await RunningDaemon.start(config: config, socket: socket)
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      let address = "127.0.0.1:\(daemon.port)"
      let inbox = directory.appending("h2h/inbox")

      let created = try await withBankLinkClient(pki.clientConfiguration(address: address, identity: erp)) { grpc in
        try await Banklink_V1_PaymentService.Client(wrapping: grpc).createPayment(.with {
          $0.idempotencyKey = "h2h-1"
          $0.instruction = AlertDaemonTests.instruction(7)
        })
      }
      let payment = created.payment
      let settled = try await Self.poll(seconds: 60) { () -> Banklink_V1_Payment? in
        let current = try await withBankLinkClient(pki.clientConfiguration(address: address, identity: erp)) { grpc in
          try await Banklink_V1_PaymentService.Client(wrapping: grpc).getPayment(.with { $0.paymentID = payment.paymentID })
        }
        return current.status == .settled ? current : nil
      }
      #expect(settled != nil, "the payment never settled through the files")
      // The outbox is empty (the bank took the file); the inbox's files are archived.
      #expect(Self.names(directory.appending("h2h/outbox")).filter { $0.hasSuffix(".xml") }.isEmpty)
      #expect(Self.names(inbox + "/archive").contains { $0.contains("pain002") })

      // The debit's camt.054 was stored as a statement and reconciled by its EndToEndId.
      let match = try await Self.poll(seconds: 60) { () -> Banklink_V1_Match? in
        try await withBankLinkClient(pki.clientConfiguration(address: address, identity: clerk)) { grpc in
          let service = Banklink_V1_ReconciliationService.Client(wrapping: grpc)
          var sequence = 1
          while true {
            let report: Banklink_V1_ReconciliationReport
            do {
              report = try await service.getReconciliationReport(.with {
                $0.reportID = "rec-" + String(repeating: "0", count: 12 - String(sequence).count) + String(sequence)
                $0.pageSize = 1_000
              })
            } catch let error as RPCError where error.code == .notFound {
              return nil
            }
            if let found = report.matches.first(where: { $0.paymentIds.contains(payment.paymentID) }) { return found }
            sequence += 1
          }
        }
      }
      #expect(match?.method == .reference, "\(String(describing: match))")
      #expect(match?.matchedBy == "auto")
      let statements = try await withBankLinkClient(pki.clientConfiguration(address: address, identity: clerk)) { grpc in
        try await Banklink_V1_ReconciliationService.Client(wrapping: grpc).listStatements(.with { $0.pageSize = 1_000 }).statements
      }
      #expect(statements.count >= BankSimulator.catalogueAccounts.count)

      // A file the connector cannot read: quarantined with its reason, and one alert.
      try Data("<Document><Nonsense/></Document>".utf8).write(to: URL(fileURLWithPath: inbox + "/broken.xml"))
      let alert = try await Self.fileAlert(pki: pki, address: address, admin: admin) { _ in true }
      #expect(alert?.message.contains("broken.xml") == true, "\(String(describing: alert))")
      #expect(Self.names(inbox + "/quarantine").contains("broken.xml"))
      #expect(Self.names(inbox + "/quarantine").contains("broken.xml.reason"))

      // The metrics show the quarantined file as a connector error, and the payment's way to
      // settled as state changes.
      let scraped = try await offPool {
        try runProgram("/usr/bin/python3", ["-c", MetricsTests.parser, "http://127.0.0.1:\(metricsPort)/metrics"])
      }
      #expect(scraped.status == 0, "\(scraped.stderr)")
      let families = try JSONDecoder().decode([String: MetricsTests.Family].self, from: Data(scraped.stdout.utf8))
      let errors = try #require(families["banklink_connector_errors"], "\(families.keys.sorted())")
      #expect(
        errors.samples.contains { $0.labels["operation"] == "inbox_quarantined" && $0.labels["kind"] == "malformed" && $0.value == 1 },
        "\(errors.samples.map(\.labels))")
      let transitions = try #require(families["banklink_payment_transitions"])
      #expect(transitions.samples.contains { $0.labels["to"] == "settled" && $0.value >= 1 }, "\(transitions.samples.map(\.labels))")

      // A file that cannot be moved (`quarantine/` gone): after three polls an alert names it,
      // and the polls go on meanwhile.
      try FileManager.default.removeItem(atPath: inbox + "/quarantine")
      try FileManager.default.createSymbolicLink(atPath: inbox + "/quarantine", withDestinationPath: directory.appending("nowhere"))
      try Data("<Document><Nonsense/></Document>".utf8).write(to: URL(fileURLWithPath: inbox + "/stuck.xml"))
      let stuck = try await Self.fileAlert(pki: pki, address: address, admin: admin) {
        $0.message.contains("stuck.xml") && $0.message.contains("could not be processed")
      }
      #expect(stuck != nil)
      #expect(await daemon.stop())
    }
  }

  /// A camt.053 large enough that processing it spans several hundred milliseconds.
  static let entries = 25_000

  static func bigStatement() -> Data {
    var xml = """
      <?xml version="1.0" encoding="UTF-8"?>
      <Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt>
      <GrpHdr><MsgId>INBOX-CRASH</MsgId><CreDtTm>2026-12-03T23:00:00</CreDtTm></GrpHdr>
      <Stmt><Id>INBOX-CRASH</Id><ElctrncSeqNb>1</ElctrncSeqNb>
      <Acct><Id><Othr><Id>4402 1234 5678</Id></Othr></Id><Ccy>CNY</Ccy></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">0.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-12-03</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">\(Self.entries).00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-12-03</Dt></Dt></Bal>

      """
    for index in 0..<Self.entries {
      xml += """
        <Ntry><Amt Ccy="CNY">1.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts><BookgDt><Dt>2026-12-03</Dt></BookgDt>
        <AcctSvcrRef>IN-\(index)</AcctSvcrRef><NtryDtls><TxDtls><RmtInf><Ustrd>Collection \(index)</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>

        """
    }
    return Data((xml + "</Stmt></BkToCstmrStmt></Document>\n").utf8)
  }

  @Test("kill -9 while an inbox file is processed: after restart it is processed exactly once")
  func killDuringInbox() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let config = directory.appending("banklinkd.json")
      // A real bank's account list, no simulated bank: the file in the inbox is all there is.
      try Data("""
        {"listen": "127.0.0.1:0", "data_dir": "data",
         "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
         "connector": {"type": "files",
                       "files": {"outbox": "h2h/outbox", "inbox": "h2h/inbox", "poll_interval_ms": 100, "settle_ms": 0,
                                 "accounts": [{"id": "acme-cny-001", "number": "440212345678", "currency": "CNY", "bic": "ICBKCNBJ"}]}},
         "principals": [{"identity": "clerk", "roles": ["reconciler"]}]}
        """.utf8).write(to: URL(fileURLWithPath: config))
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let clerk = try pki.client(commonName: "clerk", file: "clerk")
      let inbox = directory.appending("h2h/inbox")
      let file = Self.bigStatement()
      let name = "0001-camt053-acme.xml"

      func statements(_ port: Int) async throws -> [Banklink_V1_StatementSummary] {
        try await withBankLinkClient(pki.clientConfiguration(address: "127.0.0.1:\(port)", identity: clerk)) { grpc in
          try await Banklink_V1_ReconciliationService.Client(wrapping: grpc).listStatements(.with { $0.pageSize = 100 }).statements
        }
      }
      // How long the whole intake takes here (archived and stored as a statement), to spread the
      // kills over it.
      try FileManager.default.createDirectory(atPath: inbox, withIntermediateDirectories: true)
      try file.write(to: URL(fileURLWithPath: inbox + "/" + name))
      var daemon = try await RunningDaemon.start(config: config, socket: socket, waitForBankSync: false)
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      let started = ContinuousClock.now
      let port = daemon.port
      let whole = try await Self.poll(seconds: 120) { () -> Duration? in
        try await statements(port).first?.entries == Int64(Self.entries) ? ContinuousClock.now - started : nil
      }
      let measured = try #require(whole, "the inbox file was never stored")
      await daemon.kill9()
      try FileManager.default.removeItem(atPath: directory.appending("data"))
      try FileManager.default.removeItem(atPath: inbox)

      for fraction in [0.1, 0.3, 0.5, 0.7, 0.9] {
        try FileManager.default.createDirectory(atPath: inbox, withIntermediateDirectories: true)
        if !FileManager.default.fileExists(atPath: inbox + "/archive/" + name) {
          try file.write(to: URL(fileURLWithPath: inbox + "/" + name))
        }
        daemon = try await RunningDaemon.start(config: config, socket: socket, waitForBankSync: false)
        try await Task.sleep(for: measured * fraction)
        await daemon.kill9()
      }
      // Whatever the kills interrupted, the file ends archived, its statement stored once.
      daemon = try await RunningDaemon.start(config: config, socket: socket, waitForBankSync: false)
      let port2 = daemon.port
      let stored = try await Self.poll(seconds: 120) { () -> [Banklink_V1_StatementSummary]? in
        let listed = try await statements(port2)
        return listed.first?.entries == Int64(Self.entries) ? listed : nil
      }
      #expect(stored?.count == 1, "\(String(describing: stored))")
      #expect(Self.names(inbox).filter { $0.hasSuffix(".xml") }.isEmpty)
      #expect(Self.names(inbox + "/archive") == [name])
      #expect(await daemon.stop())

      // The connector's own record: one statement event for the file, every entry once, and
      // the closing balance.
      let connector = try HostToHostConnector(
        configuration: .init(
          outbox: directory.appending("h2h/outbox"), inbox: inbox, stateDirectory: directory.appending("data/connector-files"),
          accounts: [Account(id: "acme-cny-001", number: "440212345678", displayName: "", bankBIC: "ICBKCNBJ", bankName: "", currency: CurrencyCode("CNY")!)],
          mapSizeMiB: 64),
        clock: { Instant(millisecondsSinceEpoch: 0) })
      let events = try connector.events(after: 0, limit: 100)
      #expect(events.count == 1, "\(events)")
      var count = 0
      var cursor: String?
      while true {
        let page = try await connector.fetchTransactions(accountID: "acme-cny-001", after: cursor, limit: 10_000, deadline: .now.advanced(by: .seconds(10)))
        count += page.transactions.count
        cursor = page.nextCursor
        if !page.hasMore { break }
      }
      #expect(count == Self.entries)
      let balance = try await connector.fetchBalance(accountID: "acme-cny-001", deadline: .now.advanced(by: .seconds(10)))
      #expect(balance.ledger.minorUnits == Int64(Self.entries) * 100)
      print("inbox crash test: intake takes \(measured); 5 kill -9 rounds")
    }
  }
}
