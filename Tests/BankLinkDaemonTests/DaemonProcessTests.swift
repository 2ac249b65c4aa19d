import BankLinkDaemon
import BankLinkPKI
import BankLinkTestSupport
import Foundation
import SwiftASN1
import Testing
import X509

/// The real `banklinkd` and `banklink` executables, as an operator and systemd run them.
@Suite("banklinkd process")
struct DaemonProcessTests {
  @Test("sd_notify datagrams reach the socket named in NOTIFY_SOCKET")
  func notifier() async throws {
    try await withTemporaryDirectory { directory in
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let notifier = try #require(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": socket.path]))
      try notifier.notify("READY=1")
      #expect(socket.receive(timeoutSeconds: 5) == "READY=1")
      #expect(SystemdNotifier.fromEnvironment([:]) == nil)
    }
  }

  @Test("starts, reports READY=1, answers the CLI over mutual TLS, survives SIGHUP, drains on SIGTERM with exit 0")
  func lifecycle() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let admin = try pki.client(commonName: "admin")
      let config = directory.appending("banklinkd.json")
      try Data("""
        {"listen": "127.0.0.1:0", "data_dir": "data",
         "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
         "principals": [{"identity": "admin", "roles": ["admin"]}]}
        """.utf8).write(to: URL(fileURLWithPath: config))
      let socket = try NotifySocket(path: directory.appending("notify.sock"))

      let daemon = Process()
      daemon.executableURL = URL(fileURLWithPath: Binaries.daemon)
      daemon.arguments = ["--config", config, "--log-level", "warning"]
      var environment = ProcessInfo.processInfo.environment
      environment["NOTIFY_SOCKET"] = socket.path
      daemon.environment = environment
      try TestProcesses.launch(daemon)
      defer { if daemon.isRunning { daemon.terminate() } }

      // The first bank sync reports its own status line, before or after READY=1; the other
      // messages are read past it.
      var synced = false
      var starting = false
      func next(_ seconds: Int) async -> String? {
        while let message = await socket.next(timeoutSeconds: seconds) {
          if message.hasPrefix("STATUS=starting") {
            starting = true
            continue
          }
          guard message == ReadinessReporter.bankSyncedStatus else { return message }
          synced = true
        }
        return nil
      }
      let ready = try #require(await next(30), "banklinkd never sent READY=1")
      #expect(ready.hasPrefix("READY=1"))
      #expect(starting, "the status line says the daemon is starting before it is ready")
      if !synced {
        #expect(await socket.next(timeoutSeconds: 30) == ReadinessReporter.bankSyncedStatus, "banklinkd never reported its first bank sync")
        synced = true
      }
      // STATUS=serving on [ipv4]127.0.0.1:PORT
      let port = try #require(ready.split(separator: ":").last.flatMap { Int($0) })

      let environmentForCLI = cliEnvironment(port: port, caPath: pki.caPath, identity: admin)
      let whoami = try await offPool { try runProgram(Binaries.cli, ["whoami", "--json"], environment: environmentForCLI) }
      #expect(whoami.status == 0, "\(whoami.stderr)")
      #expect(whoami.stdout.contains(#""identity":"admin""#))
      #expect(whoami.stdout.contains("ROLE_ADMIN"))

      // SIGHUP (systemctl reload): the configuration file is read again. The new one adds a
      // principal and a CRL revoking a certificate; the handler answers on the notify socket.
      let viewer = try pki.client(commonName: "viewer")
      let revoked = try pki.client(commonName: "viewer", file: "viewer-revoked")
      let revokedSerial = try Certificate(pemEncoded: String(contentsOfFile: revoked.certificatePath, encoding: .utf8)).serialNumber
      try Data(try pki.authority.revocationList(revoking: [revokedSerial])).write(to: URL(fileURLWithPath: directory.appending("ca.crl")))
      func writeConfig(crl: String) throws {
        try Data("""
          {"listen": "127.0.0.1:0", "data_dir": "data",
           "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key", "crl_file": "\(crl)"},
           "principals": [{"identity": "admin", "roles": ["admin"]}, {"identity": "viewer", "roles": ["viewer"]}]}
          """.utf8).write(to: URL(fileURLWithPath: config))
      }
      try writeConfig(crl: "ca.crl")
      kill(daemon.processIdentifier, SIGHUP)
      let reloaded = try #require(await next(30), "banklinkd did not handle SIGHUP")
      #expect(reloaded.contains("reloaded (2 principals, 1 revoked serials in the CRL, 1 trusted CAs"), "\(reloaded)")
      #expect(daemon.isRunning)
      let asViewer = cliEnvironment(port: port, caPath: pki.caPath, identity: viewer)
      let viewerCall = try await offPool { try runProgram(Binaries.cli, ["whoami"], environment: asViewer) }
      #expect(viewerCall.status == 0 && viewerCall.stdout.contains("viewer"), "\(viewerCall.stderr)")
      let revokedCall = try await offPool {
        try runProgram(Binaries.cli, ["whoami"], environment: cliEnvironment(port: port, caPath: pki.caPath, identity: revoked))
      }
      #expect(revokedCall.status != 0, "a certificate the reloaded CRL lists is refused")

      // A CRL from another CA: the whole reload is refused, the running configuration stays,
      // and a configuration_refused alert is raised.
      let stranger = try CertificateAuthority.generate(commonName: "Stranger CA")
      try Data(try stranger.revocationList(revoking: [])).write(to: URL(fileURLWithPath: directory.appending("other.crl")))
      try writeConfig(crl: "other.crl")
      kill(daemon.processIdentifier, SIGHUP)
      let refused = try #require(await next(30), "banklinkd did not answer the second SIGHUP")
      #expect(refused.contains("reload refused, configuration unchanged") && refused.contains("tls.crl_file"), "\(refused)")
      let stillViewer = try await offPool { try runProgram(Binaries.cli, ["whoami"], environment: asViewer) }
      #expect(stillViewer.status == 0, "\(stillViewer.stderr)")
      let alerts = try await offPool {
        try runProgram(Binaries.cli, ["alerts", "list", "--kind", "configuration_refused", "--json"], environment: environmentForCLI)
      }
      #expect(alerts.status == 0 && alerts.stdout.contains("reload refused"), "\(alerts.stdout) \(alerts.stderr)")
      let health = try await offPool { try runProgram(Binaries.cli, ["health"], environment: environmentForCLI) }
      #expect(health.status == 0, "\(health.stderr)")
      #expect(health.stdout.contains("SERVING"))

      // A failing call exits non-zero with the gRPC status in the message (here: the server's
      // own certificate is not a client certificate, so the handshake fails).
      let denied = try await offPool {
        try runProgram(
          Binaries.cli, ["whoami", "--cert", pki.serverCertificatePath, "--key", pki.serverKeyPath], environment: environmentForCLI)
      }
      #expect(denied.status == 1)
      #expect(denied.stderr.contains("banklink: UNAVAILABLE:"), "\(denied.stderr)")

      // An online backup with the CLI, restored with banklinkd into a new data directory.
      let backupFile = directory.appending("backup.mdb")
      let backup = try await offPool { try runProgram(Binaries.cli, ["admin", "backup", backupFile], environment: environmentForCLI) }
      #expect(backup.status == 0 && backup.stdout.contains("sha256"), "\(backup.stdout) \(backup.stderr)")
      let restore = try await offPool {
        try runProgram(Binaries.daemon, ["--restore-from", backupFile, "--data-dir", directory.appending("restored")], environment: [:])
      }
      #expect(restore.status == 0 && restore.stdout.contains("audit journal verified"), "\(restore.stdout) \(restore.stderr)")
      let again = try await offPool {
        try runProgram(Binaries.daemon, ["--restore-from", backupFile, "--data-dir", directory.appending("restored")], environment: [:])
      }
      #expect(again.status != 0 && again.stderr.contains("already holds"), "\(again.stderr)")

      daemon.terminate()  // SIGTERM
      let stopping = await next(15)
      #expect(stopping?.hasPrefix("STOPPING=1") == true)
      _ = try await offPool { daemon.waitUntilExit() }
      #expect(daemon.terminationReason == .exit)
      #expect(daemon.terminationStatus == 0)
    }
  }

  @Test("banklink-load drives a real daemon with both drivers, paces at --rate and counts refused calls")
  func bench() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let viewer = try pki.client(commonName: "viewer")
      let erp = try pki.client(commonName: "erp")
      let config = directory.appending("banklinkd.json")
      try Data("""
        {"listen": "127.0.0.1:0", "data_dir": "data", "connector": {"history_days": 2},
         "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
         "principals": [{"identity": "viewer", "roles": ["viewer"]}, {"identity": "erp", "roles": ["payer"]}]}
        """.utf8).write(to: URL(fileURLWithPath: config))
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let daemon = try await RunningDaemon.start(config: config, socket: socket, logLevel: "warning")
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      let port = daemon.port

      func bench(_ identity: ClientIdentityFiles, _ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let environment = cliEnvironment(port: port, caPath: pki.caPath, identity: identity)
        return try await offPool {
          try runProgram(Binaries.load, ["--duration", "1", "--warmup", "0.2"] + arguments, environment: environment)
        }
      }
      func field(_ json: String, _ name: String) -> Double? {
        guard let range = json.range(of: "\"\(name)\":") else { return nil }
        return Double(json[range.upperBound...].prefix { "0123456789.".contains($0) })
      }

      // Paced low: this checks the driver, not the machine, and runs beside other suites.
      for (driver, scenario) in [("h2", "noop"), ("h2", "balance"), ("grpc-swift", "balance")] {
        let run = try await bench(
          viewer, ["--driver", driver, "--scenario", scenario, "--concurrency", "4", "--connections", "2", "--rate", "300", "--json"])
        #expect(run.status == 0, "\(driver) \(scenario): \(run.stderr)")
        #expect((field(run.stdout, "calls") ?? 0) > 0, "\(driver) \(scenario): \(run.stdout)")
        #expect(field(run.stdout, "errors") == 0, "\(driver) \(scenario): \(run.stdout)")
      }

      // Paced: never more calls than the schedule allows (200/s for 1 s, plus one per worker).
      let paced = try await bench(viewer, ["--scenario", "balance", "--concurrency", "4", "--rate", "200", "--json"])
      #expect(paced.status == 0, "\(paced.stderr)")
      let pacedCalls = try #require(field(paced.stdout, "calls"), "\(paced.stdout)")
      #expect(pacedCalls > 0 && pacedCalls <= 204, "\(paced.stdout)")

      // Durable writes as the payer.
      let pay = try await bench(erp, ["--scenario", "pay", "--concurrency", "8", "--rate", "300", "--json"])
      #expect(pay.status == 0, "\(pay.stderr)")
      #expect((field(pay.stdout, "calls") ?? 0) > 0 && field(pay.stdout, "errors") == 0, "\(pay.stdout)")

      // A viewer may not pay: every call fails, the report says why and the exit status is 1.
      let refused = try await bench(viewer, ["--scenario", "pay", "--concurrency", "2", "--rate", "200"])
      #expect(refused.status == 1)
      #expect(refused.stdout.contains("grpc-status 7"), "\(refused.stdout)")
      #expect(refused.stdout.contains("calls        0 ok"), "\(refused.stdout)")

      // The daemon shuts down mid-run: the driver stops cleanly and says why.
      async let interrupted = bench(viewer, ["--scenario", "balance", "--concurrency", "4", "--rate", "200", "--duration", "30"])
      try await Task.sleep(for: .seconds(2))
      await daemon.stop()
      let cut = try await interrupted
      #expect(cut.stdout.contains("first error"), "\(cut.stdout) \(cut.stderr)")
      // Depending on timing the shutdown shows as GOAWAY, a stream refused while it began, or
      // the connection closing; each ends the run with the reason.
      #expect(
        ["GOAWAY", "Refused Stream", "connection closed"].contains { cut.stdout.contains($0) }, "\(cut.stdout)")
    }
  }

  @Test("a configuration error names the key and exits 78 before listening")
  func configurationError() async throws {
    try await withTemporaryDirectory { directory in
      let config = directory.appending("bad.json")
      try Data(#"{"listen": "127.0.0.1:0", "data_dir": "d", "tls": {"ca": "x", "certificate": "y", "key": "z"}, "principals": [], "principles": []}"#.utf8)
        .write(to: URL(fileURLWithPath: config))
      let result = try await offPool { try runProgram(Binaries.daemon, ["--config", config]) }
      #expect(result.status == 78)
      #expect(result.stderr.contains("'principles'"), "\(result.stderr)")
    }
  }
}
