import BankLinkClient
import BankLinkPKI
import BankLinkProto
import BankLinkTestSupport
import Foundation
import GRPCCore
import SwiftProtobuf
import Synchronization
import Testing

/// Live reload of the daemon's own certificate and key and of the trusted CA bundle, through
/// `ReloadConfiguration` (as `banklink admin reload` calls it) on a real daemon, under load.
final class LoadCounters: Sendable {
  let stop = Atomic<Bool>(false)
  let calls = Atomic<Int>(0)
  let failures = Mutex<[String]>([])
}

@Suite("Configuration reload")
struct ReloadTests {
  static func config(ca: String, certificate: String, key: String) -> String {
    """
    {"listen": "127.0.0.1:0", "data_dir": "data", "connector": {"history_days": 1},
     "tls": {"ca": "\(ca)", "certificate": "\(certificate)", "key": "\(key)"},
     "principals": [{"identity": "admin", "roles": ["admin"]}, {"identity": "viewer", "roles": ["viewer"]}]}
    """
  }

  @Test("the server certificate and the CA bundle rotate without a restart; open connections keep working; a bad configuration is refused whole")
  func rotateCertificateAndAuthorities() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let admin = try pki.client(commonName: "admin")
      let viewer = try pki.client(commonName: "viewer")
      // A second CA: the rotated server certificate comes from it, and so does a new client's.
      let second = try CertificateAuthority.generate(commonName: "BankLink Test CA 2")
      try second.issued.write(certificateTo: directory.appending("ca2.pem"), keyTo: directory.appending("ca2.key"))
      try second.issue(.server, commonName: "banklinkd-rotated", dnsNames: ["localhost"], ipAddresses: [[127, 0, 0, 1]])
        .write(certificateTo: directory.appending("server2.pem"), keyTo: directory.appending("server2.key"))
      let secondAdmin = try pki.client(commonName: "admin", file: "admin-ca2", authority: second)
      let bundle =
        try String(contentsOfFile: pki.caPath, encoding: .utf8) + String(contentsOfFile: directory.appending("ca2.pem"), encoding: .utf8)
      try Data(bundle.utf8).write(to: URL(fileURLWithPath: directory.appending("bundle.pem")))

      let configPath = directory.appending("banklinkd.json")
      @Sendable func writeConfig(ca: String, certificate: String, key: String) throws {
        try Data(Self.config(ca: ca, certificate: certificate, key: key).utf8).write(to: URL(fileURLWithPath: configPath))
      }
      try writeConfig(ca: "ca.pem", certificate: "server.pem", key: "server.key")
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let daemon = try await RunningDaemon.start(config: configPath, socket: socket, logLevel: "warning")
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      let address = "127.0.0.1:\(daemon.port)"

      // Clients that trust only the first CA, connected before the rotation. If the daemon
      // dropped their connections, reconnecting would fail: the server now presents a
      // certificate of the second CA.
      let load = LoadCounters()
      try await withBankLinkClients(pki.clientConfiguration(address: address, identity: viewer), count: 2) { loaders in
        try await withBankLinkClient(pki.clientConfiguration(address: address, identity: admin)) { client in
          let adminService = Banklink_V1_AdminService.Client(wrapping: client)
          #expect(try await adminService.whoAmI(.init()).identity == "admin")

          try await withThrowingTaskGroup(of: Void.self) { group in
            for loader in loaders {
              group.addTask {
                let accounts = Banklink_V1_AccountService.Client(wrapping: loader)
                while !load.stop.load(ordering: .relaxed) {
                  do {
                    _ = try await accounts.listAccounts(.init())
                    load.calls.add(1, ordering: .relaxed)
                  } catch {
                    load.failures.withLock { $0.append("\(error)") }
                  }
                }
              }
            }
            try await Task.sleep(for: .milliseconds(300))

            // A viewer may not reload.
            let viewerDenied = await #expect(throws: RPCError.self) {
              try await withBankLinkClient(pki.clientConfiguration(address: address, identity: viewer)) {
                try await Banklink_V1_AdminService.Client(wrapping: $0).reloadConfiguration(.init())
              }
            }
            #expect(viewerDenied?.code == .permissionDenied)

            // The good configuration: the new server certificate, both CAs trusted.
            try writeConfig(ca: "bundle.pem", certificate: "server2.pem", key: "server2.key")
            let reloaded = try await adminService.reloadConfiguration(.init())
            #expect(reloaded.summary.contains("2 trusted CAs"), "\(reloaded.summary)")
            #expect(reloaded.needsRestart.isEmpty)
            #expect(reloaded.hasReceipt)
            // The same connection still answers.
            #expect(try await adminService.whoAmI(.init()).identity == "admin")

            // New connections meet the new certificate: a client trusting only the first CA is
            // refused, one trusting the second gets in, with a certificate of either CA.
            // Calls on new connections fail fast instead of waiting for a handshake that cannot
            // succeed.
            var failFast = CallOptions.defaults
            failFast.waitForReady = false
            failFast.timeout = .seconds(10)
            let untrusted = failFast
            let refused = await #expect(throws: RPCError.self) {
              try await withBankLinkClient(pki.clientConfiguration(address: address, identity: viewer)) {
                try await Banklink_V1_AdminService.Client(wrapping: $0).whoAmI(.init(), options: untrusted)
              }
            }
            #expect(refused?.code == .unavailable)
            let trustingSecond = { (identity: ClientIdentityFiles) in
              ClientConfiguration(
                address: address, caPath: directory.appending("ca2.pem"), certificatePath: identity.certificatePath, keyPath: identity.keyPath)
            }
            for identity in [secondAdmin, admin] {
              let me = try await withBankLinkClient(trustingSecond(identity)) {
                try await Banklink_V1_AdminService.Client(wrapping: $0).whoAmI(.init(), options: untrusted)
              }
              #expect(me.identity == "admin")
            }

            // Bad configurations are refused whole, naming the key; the running one serves on.
            try writeConfig(ca: "bundle.pem", certificate: "server2.pem", key: "server.key")
            let mismatch = await #expect(throws: RPCError.self) { try await adminService.reloadConfiguration(.init()) }
            #expect(mismatch?.code == .failedPrecondition)
            #expect(mismatch?.message.contains("tls.key") == true, "\(mismatch?.message ?? "")")
            try Data("not a certificate".utf8).write(to: URL(fileURLWithPath: directory.appending("broken.pem")))
            try writeConfig(ca: "broken.pem", certificate: "server2.pem", key: "server2.key")
            let brokenBundle = await #expect(throws: RPCError.self) { try await adminService.reloadConfiguration(.init()) }
            #expect(brokenBundle?.message.contains("tls.ca") == true, "\(brokenBundle?.message ?? "")")
            let me = try await withBankLinkClient(trustingSecond(secondAdmin)) {
              try await Banklink_V1_AdminService.Client(wrapping: $0).whoAmI(.init(), options: untrusted)
            }
            #expect(me.identity == "admin")
            #expect(try await adminService.whoAmI(.init()).identity == "admin")

            try await Task.sleep(for: .milliseconds(300))
            load.stop.store(true, ordering: .relaxed)
            try await group.waitForAll()
          }

          // Every reload is journaled, the good one with the rotation.
          let entries = try await adminService.listAuditEntries(.with { $0.pageSize = 500 }).entries
          let reloadedEntry = try #require(entries.first { $0.action == "daemon.reloaded" })
          #expect(reloadedEntry.principal == "admin")
          #expect(reloadedEntry.payload.contains("certificate_rotated_from"), "\(reloadedEntry.payload)")
          #expect(entries.filter { $0.action == "daemon.reload_refused" }.count == 2)
        }
      }
      #expect(load.calls.load(ordering: .relaxed) > 0)
      #expect(load.failures.withLock { $0 }.isEmpty, "calls failed during the reloads: \(load.failures.withLock { $0.prefix(3) })")
    }
  }

  @Test("a reload puts the policy and rule set files in force with its journal entry; a rule that does not compile refuses it whole")
  func policyAndRuleFiles() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let admin = try pki.client(commonName: "admin")
      let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
      let rules = repository.appendingPathComponent("docs/rules.example.json").path
      let policy = repository.appendingPathComponent("docs/examples/approval-policy.json").path
      let configPath = directory.appending("banklinkd.json")
      @Sendable func writeConfig(risk: String) throws {
        try Data("""
          {"listen": "127.0.0.1:0", "data_dir": "data", "connector": {"history_days": 1},
           "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
           \(risk)
           "principals": [{"identity": "admin", "roles": ["admin"]}]}
          """.utf8).write(to: URL(fileURLWithPath: configPath))
      }
      try writeConfig(risk: "")
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let daemon = try await RunningDaemon.start(config: configPath, socket: socket, logLevel: "warning")
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      try await withBankLinkClient(pki.clientConfiguration(address: "127.0.0.1:\(daemon.port)", identity: admin)) { client in
        let service = Banklink_V1_AdminService.Client(wrapping: client)
        #expect(try await service.getRuleSet(.init()).version == 0)
        #expect(try await service.getApprovalPolicy(.init()).version == 0)

        try writeConfig(risk: "\"risk\": {\"rule_set_file\": \"\(rules)\"}, \"payments\": {\"approval_policy_file\": \"\(policy)\"},")
        let reloaded = try await service.reloadConfiguration(.init())
        let ruleSet = try await service.getRuleSet(.init())
        #expect(ruleSet.version == 1 && !ruleSet.rules.isEmpty)
        #expect(try await service.getApprovalPolicy(.init()).version == 1)
        let entry = try #require(
          try await service.listAuditEntries(.with { $0.action = "daemon.reloaded"; $0.pageSize = 10 }).entries.last)
        #expect(entry.sequence == reloaded.receipt.journalSequence)
        #expect(entry.payload.contains("rule_set_version") && entry.payload.contains("approval_policy_version"), "\(entry.payload)")

        // The same files again: nothing new is put.
        _ = try await service.reloadConfiguration(.init())
        #expect(try await service.getRuleSet(.init()).version == 1)

        // A rule set that does not compile: refused whole, naming the key; version 1 stays.
        let broken = directory.appending("broken-rules.json")
        try Data(#"{"rules": [{"id": "r1", "when": "amount >>> 3", "action": "RISK_ACTION_BLOCK"}]}"#.utf8)
          .write(to: URL(fileURLWithPath: broken))
        try writeConfig(risk: "\"risk\": {\"rule_set_file\": \"\(broken)\"},")
        let refused = await #expect(throws: RPCError.self) { try await service.reloadConfiguration(.init()) }
        #expect(refused?.code == .failedPrecondition)
        #expect(refused?.message.contains("risk.rule_set_file") == true, "\(refused?.message ?? "")")
        #expect(try await service.getRuleSet(.init()).version == 1)
      }
    }
  }
}
