import BankLinkTestSupport
import Foundation
import Testing

/// The risk-rule walk-through of the README, with the real daemon and the real CLI: the shipped
/// example rule set from `risk.rule_set_file`, a payment blocked with its explanation, the
/// playground, validation of a bad file, and a configuration error naming the key.
@Suite("Risk rules with the banklink CLI")
struct RulesCLITests {
  static let exampleRules = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("docs/rules.example.json").path

  static func configuration(rulesFile: String) -> String {
    """
    {"listen": "127.0.0.1:0", "data_dir": "data", "connector": {"history_days": 1},
     "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
     "risk": {"rule_set_file": "\(rulesFile)", "time_zone": "Asia/Shanghai"},
     "principals": [{"identity": "erp", "roles": ["payer"]}, {"identity": "admin", "roles": ["admin"]}]}
    """
  }

  @Test("rule_set_file in force at start; show, pay blocked with its explanation, eval, validate, backtest")
  func walkThrough() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let config = directory.appending("banklinkd.json")
      try Data(Self.configuration(rulesFile: Self.exampleRules).utf8).write(to: URL(fileURLWithPath: config))
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let daemon = try await RunningDaemon.start(config: config, socket: socket)
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      func cli(_ who: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let identity = try pki.client(commonName: who, file: who)
        return try runProgram(Binaries.cli, arguments, environment: cliEnvironment(port: daemon.port, caPath: pki.caPath, identity: identity))
      }

      let shown = try cli("admin", ["rules", "show"])
      #expect(shown.status == 0, "\(shown.stderr)")
      #expect(shown.stdout.contains(#""updated_by":"configuration""#) && shown.stdout.contains("sanctioned-country"), "\(shown.stdout)")

      let blocked = try cli("erp", [
        "pay", "--from", "icbc-cny-001", "--to-name", "Korea Kwangson Trading Corp.", "--to-account", "1234 5678 9012",
        "--to-bic", "KKBCKPPY", "--to-country", "KP", "--amount", "100.00", "--currency", "CNY", "--purpose", "INV-2026-0107",
      ])
      #expect(blocked.status == 0, "\(blocked.stderr)")
      #expect(blocked.stdout.contains("blocked (blocked by risk rules: sanctioned-country"), "\(blocked.stdout)")
      #expect(blocked.stdout.contains(#"sanctioned-country → block: payment.creditor.country ("KP") in lists.sanctioned_countries"#))

      let vars = directory.appending("vars.json")
      try Data(#"{"amount": 150, "country": "KP"}"#.utf8).write(to: URL(fileURLWithPath: vars))
      let eval = try cli("admin", ["rules", "eval", #"amount > 100 && country in ["KP", "IR"]"#, "--vars", vars])
      #expect(eval.status == 0 && eval.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "true  (bool)", "\(eval.stdout) \(eval.stderr)")
      let failing = try cli("admin", ["rules", "eval", "amount / 0 > 1", "--vars", vars])
      #expect(failing.status == 1 && failing.stdout.contains("error: division by zero"), "\(failing.stdout)")

      let bad = directory.appending("bad-rules.json")
      try Data(#"{"rules": [{"id": "x", "expression": "payment.amount >", "action": "RULE_ACTION_BLOCK"}]}"#.utf8)
        .write(to: URL(fileURLWithPath: bad))
      let validation = try cli("admin", ["rules", "validate", bad])
      #expect(validation.status == 1 && validation.stdout.contains("rules[0].expression: 1:17: syntax error"), "\(validation.stdout)")

      // A shadow set beside the example set: the next payment is compared, not blocked.
      let shadow = directory.appending("shadow-rules.json")
      try Data(#"{"rules": [{"id": "over-50", "expression": "payment.amount > 5000", "action": "RULE_ACTION_BLOCK"}]}"#.utf8)
        .write(to: URL(fileURLWithPath: shadow))
      let putShadow = try cli("admin", ["rules", "put", shadow, "--shadow"])
      #expect(putShadow.status == 0 && putShadow.stdout.contains("shadow version"), "\(putShadow.stdout) \(putShadow.stderr)")
      let paid = try cli("erp", [
        "pay", "--from", "icbc-cny-001", "--to-name", "Jiangsu Hengrui Logistics Co., Ltd.", "--to-account", "3201 5501 0400 0087 761",
        "--to-bic", "PCBCCNBJ", "--to-country", "CN", "--amount", "80.00", "--currency", "CNY", "--purpose", "Freight INV-78",
      ])
      #expect(paid.status == 0 && !paid.stdout.contains("blocked"), "\(paid.stdout) \(paid.stderr)")
      let report = try cli("admin", ["rules", "shadow-report"])
      #expect(report.status == 0, "\(report.stderr)")
      #expect(report.stdout.contains("(running)") && report.stdout.contains("shadow would block"), "\(report.stdout)")
      #expect(report.stdout.contains("over-50 → block: payment.amount (8000) > 5000"), "\(report.stdout)")
      let stopped = try cli("admin", ["rules", "shadow-stop"])
      #expect(stopped.status == 0 && stopped.stdout.contains("shadow version"), "\(stopped.stdout) \(stopped.stderr)")

      let backtest = try cli("admin", ["rules", "backtest"])
      #expect(backtest.status == 0 && backtest.stdout.contains("sanctioned-country"), "\(backtest.stdout) \(backtest.stderr)")
    }
  }

  @Test("a rule set file that does not compile stops the daemon at start, naming the key, the rule and the position")
  func badFileRefused() async throws {
    try await withTemporaryDirectory { directory in
      _ = try TestPKI(directory: directory)
      let rules = directory.appending("rules.json")
      try Data(#"{"rules": [{"id": "x", "expression": "payment.nope == 1", "action": "RULE_ACTION_BLOCK"}]}"#.utf8)
        .write(to: URL(fileURLWithPath: rules))
      let config = directory.appending("banklinkd.json")
      try Data(Self.configuration(rulesFile: rules).utf8).write(to: URL(fileURLWithPath: config))
      let result = try runProgram(Binaries.daemon, ["--config", config])
      #expect(result.status == 78, "\(result.stderr)")
      #expect(result.stderr.contains("risk.rule_set_file") && result.stderr.contains("rules[0].expression: 1:1: undefined field 'nope'"), "\(result.stderr)")
    }
  }
}
