import BankLinkProto
import BankLinkTestSupport
import Foundation
import SwiftProtobuf
import Testing

/// `banklink statements parse`: a bank's file checked locally, no daemon, as the README shows.
@Suite("Statement files with the banklink CLI")
struct StatementsCLITests {
  static let samples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("BankLinkFormatsTests/Samples")

  @Test("parse prints statements, balances, entries with their details and the totals; JSON lines; a refused file exits 65 with the line")
  func parse() throws {
    let mt940 = Self.samples.appendingPathComponent("mt940-two-messages.sta").path
    let text = try runProgram(Binaries.cli, ["statements", "parse", mt940])
    #expect(text.status == 0, "\(text.stderr)")
    #expect(text.stdout.contains("MT940 STMT-20261203  account 1001234567890001 (CNY)  no. 12/1"), "\(text.stdout)")
    #expect(text.stdout.contains("balance OPBD 2026-12-02  100000.00 CNY"))
    #expect(text.stdout.contains("-8000.00 CNY  ref ICBC-REF-0001  NTRF  Freight payment"))
    #expect(text.stdout.contains("e2e BL1796300000001  Jiangsu Hengrui Logistics  3201550104000087761  \"INV-2026-0107\""))
    #expect(text.stdout.contains("MT940: 2 statements, 4 entries, 0 continuity breaks"))

    let camt = Self.samples.appendingPathComponent("camt053-v08-cn.xml").path
    let json = try runProgram(Binaries.cli, ["statements", "parse", camt, "--json"])
    #expect(json.status == 0, "\(json.stderr)")
    let lines = json.stdout.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    #expect(lines.allSatisfy { $0 != nil }, "every line is a JSON object")
    #expect(lines.compactMap { $0?.keys.first }.sorted() == ["end", "entry", "statement", "summary"])

    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("statements-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let broken = directory.appendingPathComponent("broken.xml")
    try Data(String(decoding: try Data(contentsOf: URL(fileURLWithPath: camt)), as: UTF8.self)
      .replacingOccurrences(of: "8005.00", with: "8005.001").utf8).write(to: broken)
    let refused = try runProgram(Binaries.cli, ["statements", "parse", broken.path])
    #expect(refused.status == 65)
    #expect(refused.stderr.contains("refused: camt.053, line 15, Document/BkToCstmrStmt/Stmt/Ntry/Amt: '8005.001' is not an amount in CNY"), "\(refused.stderr)")

    // A break is printed, not fatal.
    let unbalanced = directory.appendingPathComponent("unbalanced.sta")
    try Data(":20:X\n:25:1001\n:60F:C261202CNY100,00\n:61:261203D10,00NTRFA//B\n:62F:C261203CNY95,00\n".utf8).write(to: unbalanced)
    let breaks = try runProgram(Binaries.cli, ["statements", "parse", unbalanced.path])
    #expect(breaks.status == 0)
    #expect(breaks.stdout.contains("BREAK  1001 statement X: opening 10000 + booked entries = 9000, but closing is 9500"), "\(breaks.stdout)")
  }

  /// An MT940 statement for icbc-cny-001 (the simulator's account, by its number).
  static func mt940(number: Int, opening: String, entries: [(reference: String, amount: String, debit: Bool)], closing: String) -> String {
    var text = """
      :20:ICBC\(number)
      :25:1001234509876543210
      :28C:\(number)/1
      :60F:C261203CNY\(opening)

      """
    for entry in entries {
      text += ":61:2612031203\(entry.debit ? "D" : "C")\(entry.amount)NTRFE2E-\(entry.reference)//\(entry.reference)\n"
      text += ":86:Invoice \(entry.reference)\n"
    }
    text += ":62F:C261203CNY\(closing)\n-\n"
    return text
  }

  @Test("import streams a file to the daemon; the same file again is recognised; list and show; a refused file exits 65")
  func importListShow() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let config = try writeTestDaemonConfig(in: directory, principals: [("clerk", ["reconciler"])])
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let daemon = try await RunningDaemon.start(config: config, socket: socket)
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      let environment = cliEnvironment(port: daemon.port, caPath: pki.caPath, identity: try pki.client(commonName: "clerk", file: "clerk"))
      func cli(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await offPool { try runProgram(Binaries.cli, arguments, environment: environment) }
      }

      let file = directory.appending("icbc-20261203.sta")
      try Data(Self.mt940(number: 12, opening: "1000,00", entries: [("A1", "100,00", true), ("A2", "25,50", false)], closing: "925,50").utf8)
        .write(to: URL(fileURLWithPath: file))
      let imported = try await cli(["statements", "import", file])
      #expect(imported.status == 0, "\(imported.stderr)")
      #expect(imported.stdout.contains("imported 2 entries in 1 statement(s); 0 already stored"), "\(imported.stdout)")
      #expect(imported.stdout.contains("icbc-cny-001  MT940  ICBC12  #12"), "\(imported.stdout)")
      #expect(imported.stdout.contains("receipt"))
      // Reconciliation followed the import: no payment explains either entry.
      #expect(imported.stdout.contains("reconciled  0 matched (settled 0, returned 0), 2 entries and 0 payments unmatched: banklink reconcile report rec-000000000001"), "\(imported.stdout)")
      let csv = try await cli(["reconcile", "report", "rec-000000000001", "--csv"])
      #expect(csv.status == 0, "\(csv.stderr)")
      let rows = csv.stdout.split(separator: "\n")
      #expect(rows.count == 3 && rows[0].hasPrefix("section,entry_id"), "\(csv.stdout)")
      #expect(rows.contains { $0.hasPrefix("unmatched_entry,stm-000000000001.000000,2026-12-03,,-100.00 CNY,unexplained") }, "\(csv.stdout)")
      #expect(rows.contains { $0.hasPrefix("unmatched_entry,stm-000000000001.000001,2026-12-03,,+25.50 CNY,collection") }, "\(csv.stdout)")
      let onDemand = try await cli(["reconcile", "icbc-cny-001", "--from", "2026-12-01", "--to", "2026-12-31"])
      #expect(onDemand.status == 0 && onDemand.stdout.contains("rec-000000000002"), "\(onDemand.stdout) \(onDemand.stderr)")
      let matchRefused = try await cli(["reconcile", "match", "stm-000000000001.000000", "pay-s000000000000999", "--note", "x"])
      #expect(matchRefused.status != 0 && matchRefused.stderr.contains("not found"), "\(matchRefused.stderr)")
      let again = try await cli(["statements", "import", file])
      #expect(again.status == 0 && again.stdout.hasPrefix("imported before"), "\(again.stdout)")

      let listed = try await cli(["statements", "list", "--account", "icbc-cny-001"])
      #expect(listed.status == 0 && listed.stdout.contains("stm-000000000001") && listed.stdout.contains("opening 1000.00 CNY"), "\(listed.stdout)")
      let shown = try await cli(["statements", "show", "stm-000000000001"])
      #expect(shown.status == 0, "\(shown.stderr)")
      #expect(shown.stdout.contains("E2E-A1") && shown.stdout.contains("Invoice A2") && shown.stdout.contains("stm-000000000001.000001"), "\(shown.stdout)")
      let json = try await cli(["statements", "show", "stm-000000000001", "--json"])
      let response = try Banklink_V1_GetStatementResponse(jsonString: json.stdout)
      #expect(response.entries.map(\.bankReference) == ["A1", "A2"])

      // The next statement skips number 13 and its sums do not add up: stored, both breaks shown.
      let next = directory.appending("icbc-20261205.sta")
      try Data(Self.mt940(number: 14, opening: "925,50", entries: [("B1", "10,00", true)], closing: "900,00").utf8)
        .write(to: URL(fileURLWithPath: next))
      let broken = try await cli(["statements", "import", next])
      #expect(broken.status == 0)
      #expect(broken.stdout.contains("BREAK entries_do_not_sum") && broken.stdout.contains("BREAK sequence_gap"), "\(broken.stdout)")

      // A file for an account the daemon does not know: refused, exit 65, nothing stored.
      let foreign = directory.appending("foreign.sta")
      try Data(Self.mt940(number: 1, opening: "0,00", entries: [], closing: "0,00").replacingOccurrences(of: "1001234509876543210", with: "4711").utf8)
        .write(to: URL(fileURLWithPath: foreign))
      let refused = try await cli(["statements", "import", foreign])
      #expect(refused.status == 65 && refused.stderr.contains("4711"), "\(refused.stderr)")
      let after = try await cli(["statements", "list"])
      #expect(after.stdout.split(separator: "\n").filter { $0.hasPrefix("stm-") }.count == 2, "\(after.stdout)")
      await daemon.stop()
    }
  }
}
