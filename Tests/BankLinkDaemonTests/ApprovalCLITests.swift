import BankLinkTestSupport
import Foundation
import Testing

/// The approval walk-through of the README, with the real daemon and the real CLI: the shipped
/// example policy, OTP enrolment, two levels signed with the approvers' own keys.
@Suite("Approvals with the banklink CLI")
struct ApprovalCLITests {
  static let examplePolicy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("docs/examples/approval-policy.json").path

  @Test("policy put from docs/examples, otp enroll, pay, approvals list, approve at two levels with OTP codes, released")
  func walkThrough() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let config = directory.appending("banklinkd.json")
      try Data("""
        {"listen": "127.0.0.1:0", "data_dir": "data", "connector": {"history_days": 1},
         "security": {"otp_key_file": "otp.key"},
         "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
         "principals": [{"identity": "erp", "roles": ["payer"]}, {"identity": "alice", "roles": ["approver"]},
                        {"identity": "bob", "roles": ["approver"]}, {"identity": "admin", "roles": ["admin"]}]}
        """.utf8).write(to: URL(fileURLWithPath: config))
      // The OTP key is provisioned by the operator, mode 0600.
      let key = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
      FileManager.default.createFile(atPath: directory.appending("otp.key"), contents: Data((key + "\n").utf8), attributes: [.posixPermissions: 0o600])
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let daemon = try await RunningDaemon.start(config: config, socket: socket)
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      func cli(_ who: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let identity = try pki.client(commonName: who, file: who)
        return try runProgram(Binaries.cli, arguments, environment: cliEnvironment(port: daemon.port, caPath: pki.caPath, identity: identity))
      }
      func field(_ output: String, _ name: String) -> String? {
        output.split(separator: "\n").first { $0.hasPrefix(name + " ") }.map { String($0.dropFirst(name.count)).trimmingCharacters(in: .whitespaces) }
      }

      let put = try cli("admin", ["policy", "put", Self.examplePolicy])
      #expect(put.status == 0, "\(put.stderr)")
      #expect(field(put.stdout, "version") == "1", "\(put.stdout)")
      var secrets: [String: String] = [:]
      for approver in ["alice", "bob"] {
        let enrolled = try cli("admin", ["otp", "enroll", approver])
        #expect(enrolled.status == 0, "\(enrolled.stderr)")
        secrets[approver] = try #require(field(enrolled.stdout, "secret"), "\(enrolled.stdout)")
      }

      let paid = try cli("erp", [
        "pay", "--from", "icbc-cny-001", "--to-name", "Shanghai Huaxin Trading Co., Ltd.", "--to-account", "3100 2011 0904 0012 345",
        "--to-bic", "CMBCCNBS", "--to-country", "CN", "--amount", "150000.00", "--currency", "CNY", "--purpose", "INV-2026-0099",
        "--idempotency-key", "walk-1",
      ])
      #expect(paid.status == 0, "\(paid.stderr)")
      let paymentID = try #require(field(paid.stdout, "payment"), "\(paid.stdout)")
      #expect(field(paid.stdout, "status") == "pending_approval", "\(paid.stdout)")

      let queue = try cli("alice", ["approvals"])
      #expect(queue.stdout.contains(paymentID), "\(queue.stdout) \(queue.stderr)")
      // bob is named at level 2, but holds the approver role: the queue shows it to him too.
      let code = { (who: String) throws -> String in
        let result = try cli(who, ["otp", "code", "--secret", secrets[who]!])
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
      }
      let first = try cli("alice", ["approve", paymentID, "--otp", try code("alice"), "--comment", "invoice checked"])
      #expect(first.status == 0, "\(first.stderr)")
      #expect(field(first.stdout, "status") == "pending_approval", "\(first.stdout)")
      // Without a code, bob is refused; with his, the payment is released.
      let noCode = try cli("bob", ["approve", paymentID])
      #expect(noCode.status == 1 && noCode.stderr.contains("otp_code"), "\(noCode.stderr)")
      let second = try cli("bob", ["approve", paymentID, "--otp", try code("bob")])
      #expect(second.status == 0, "\(second.stderr)")
      #expect(field(second.stdout, "status") == "approved", "\(second.stdout)")
      #expect(second.stdout.contains("receipt"), "\(second.stdout)")

      let journal = try cli("admin", ["audit", "list", "--object", paymentID, "--json"])
      #expect(journal.stdout.components(separatedBy: #""payment.approval""#).count - 1 == 2, "\(journal.stdout) \(journal.stderr)")

      // Principals at run time: carol (not in the file) becomes an approver with a limit; admin
      // cannot grant themselves a role. The change survives a restart.
      let carolSet = try cli("admin", ["principals", "set", "carol", "--role", "approver", "--limit", "CNY:50000.00"])
      #expect(carolSet.status == 0, "\(carolSet.stderr)")
      #expect(field(carolSet.stdout, "approval limits") == "50000.00 CNY", "\(carolSet.stdout)")
      let selfGrant = try cli("admin", ["principals", "set", "admin", "--role", "admin", "--role", "approver"])
      #expect(selfGrant.status == 1 && selfGrant.stderr.contains("grant themselves"), "\(selfGrant.stderr)")
      await daemon.stop()

      let restarted = try await RunningDaemon.start(config: config, socket: socket)
      defer { if restarted.process.isRunning { restarted.process.terminate() } }
      let identity = try pki.client(commonName: "carol", file: "carol")
      let whoami = try runProgram(
        Binaries.cli, ["whoami"], environment: cliEnvironment(port: restarted.port, caPath: pki.caPath, identity: identity))
      #expect(whoami.status == 0 && whoami.stdout.contains("approver"), "\(whoami.stdout) \(whoami.stderr)")
      let listed = try runProgram(
        Binaries.cli, ["principals", "list"],
        environment: cliEnvironment(port: restarted.port, caPath: pki.caPath, identity: try pki.client(commonName: "admin", file: "admin")))
      let carolRow = listed.stdout.split(separator: "\n").first { $0.hasPrefix("carol ") }
      #expect(carolRow?.contains("approver") == true && carolRow?.contains("50000.00 CNY") == true, "\(listed.stdout) \(listed.stderr)")
      let aliceRow = listed.stdout.split(separator: "\n").first { $0.hasPrefix("alice ") }
      #expect(aliceRow?.contains("enrolled") == true, "\(listed.stdout)")
      await restarted.stop()
    }
  }
}
