import BankLinkTestSupport
import Foundation
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
}
