import BankLinkDaemon
import BankLinkTestSupport
import Foundation
import Logging
import Testing

/// Structured logs: JSON lines with the call's request id, identity and method, and no secrets.
@Suite("Logs")
struct LogTests {
  @Test("the JSON handler writes one object per line, escapes what would break a line, and sorts metadata")
  func jsonLines() throws {
    let lines = LinesBox()
    var handler = JSONLogHandler(label: "banklinkd") { lines.append($0) }
    handler.logLevel = .debug
    handler[metadataKey: "identity"] = "erp"
    let logger = Logger(label: "banklinkd", factory: { _ in handler })
    logger.warning("call refused\nFAKE {\"level\":\"critical\"}", metadata: ["reason": "\u{1b}[31mred\u{2028}", "method": "X/Y"])
    let line = try #require(lines.all.first)
    #expect(line.hasSuffix("}\n") && line.dropLast().contains("\n") == false)
    let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
    #expect(object["level"] == "warning" && object["logger"] == "banklinkd" && object["identity"] == "erp" && object["method"] == "X/Y")
    #expect(object["message"] == "call refused\nFAKE {\"level\":\"critical\"}")
    #expect(object["reason"] == "\u{1b}[31mred\u{2028}")
    let time = try #require(object["time"])
    #expect(time.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/) != nil, "\(time)")
  }

  final class LinesBox: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { self.lock.withLock { self.lines.append(line) } }
    var all: [String] { self.lock.withLock { self.lines } }
  }

  @Test("a debug-level JSON log of a daemon's working day holds request ids on call lines and no secrets")
  func noSecrets() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let admin = try pki.client(commonName: "admin")
      let erp = try pki.client(commonName: "erp")
      let config = directory.appending("banklinkd.json")
      try Data("""
        {"listen": "127.0.0.1:0", "data_dir": "data", "connector": {"history_days": 1}, "log_format": "json",
         "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
         "principals": [{"identity": "admin", "roles": ["admin"]}, {"identity": "erp", "roles": ["payer"]},
                        {"identity": "boss", "roles": ["approver"]}]}
        """.utf8).write(to: URL(fileURLWithPath: config))
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let daemon = Process()
      daemon.executableURL = URL(fileURLWithPath: Binaries.daemon)
      daemon.arguments = ["--config", config, "--log-level", "debug"]
      var environment = ProcessInfo.processInfo.environment
      environment["NOTIFY_SOCKET"] = socket.path
      daemon.environment = environment
      let logPath = try #require(try TestProcesses.launch(daemon))
      defer { if daemon.isRunning { daemon.terminate() } }
      var port: Int?
      while port == nil, let message = await socket.next(timeoutSeconds: 60) {
        if message.hasPrefix("READY=1") { port = message.split(separator: ":").last.flatMap { Int($0) } }
      }
      let daemonPort = try #require(port)
      try await Task.sleep(for: .seconds(1))

      let asAdmin = cliEnvironment(port: daemonPort, caPath: pki.caPath, identity: admin)
      let asERP = cliEnvironment(port: daemonPort, caPath: pki.caPath, identity: erp)
      let enrolled = try await offPool { try runProgram(Binaries.cli, ["otp", "enroll", "boss", "--json"], environment: asAdmin) }
      #expect(enrolled.status == 0, "\(enrolled.stderr)")
      let fields = try JSONSerialization.jsonObject(with: Data(enrolled.stdout.utf8)) as? [String: Any]
      let secret = try #require((fields?["secretBase32"] ?? fields?["secret_base32"]) as? String, "\(enrolled.stdout)")
      let account = "6222021234567890123"
      let paid = try await offPool {
        try runProgram(
          Binaries.cli,
          ["pay", "--from", "icbc-cny-001", "--to-name", "Shanghai Huaxin Trading Co., Ltd.", "--to-account", account, "--to-bic", "CMBCCNBS",
           "--to-country", "CN", "--amount", "12.34", "--currency", "CNY", "--purpose", "INV-1"],
          environment: asERP)
      }
      #expect(paid.status == 0, "\(paid.stderr)")
      let denied = try await offPool { try runProgram(Binaries.cli, ["principals"], environment: asERP) }
      #expect(denied.status != 0)
      daemon.terminate()
      _ = try await offPool { daemon.waitUntilExit() }

      let log = try String(contentsOfFile: logPath, encoding: .utf8)
      let lines = log.split(separator: "\n")
      #expect(lines.count > 5)
      var objects: [[String: Any]] = []
      for line in lines {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
          Issue.record("not a JSON line: \(line)")
          continue
        }
        objects.append(object)
      }
      // The refused call's line names the request, the caller and the method.
      let refusal = objects.first { ($0["message"] as? String) == "call refused" }
      #expect(refusal?["request_id"] != nil && refusal?["identity"] as? String == "erp", "\(String(describing: refusal))")
      #expect((refusal?["method"] as? String)?.contains("ListPrincipals") == true)
      // No secrets: the OTP secret, key material, the full creditor account number.
      #expect(!log.contains(secret), "the OTP secret is in the log")
      #expect(!log.contains("PRIVATE KEY"))
      #expect(!log.contains(account), "a full account number is in the log")
    }
  }
}
