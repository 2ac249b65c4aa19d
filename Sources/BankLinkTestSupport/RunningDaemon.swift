import BankLinkDaemon
import Foundation

/// The real `banklinkd` started on a configuration, up once it has sent READY=1 (with its port)
/// to `socket`.
public final class RunningDaemon: @unchecked Sendable {
  public let process: Process
  public let port: Int

  private init(process: Process, port: Int) {
    self.process = process
    self.port = port
  }

  /// A daemon its test forgot (a test that threw before stopping it) is killed when the test
  /// lets go of it, rather than outliving the run.
  deinit {
    if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
  }

  /// Starts banklinkd and waits for READY=1 and, unless `waitForBankSync` is false, for the
  /// status line of its first complete bank sync (``ReadinessReporter/bankSyncedStatus``): a
  /// payment before it answers UNAVAILABLE, which a test should not have to retry around.
  public static func start(
    config: String, socket: NotifySocket, logLevel: String = "error", waitForBankSync: Bool = true
  ) async throws -> RunningDaemon {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: Binaries.daemon)
    // When the suite keeps the daemons' logs for the secret check, they log everything.
    let level = ProcessInfo.processInfo.environment[TestProcesses.logDirectoryVariable] == nil ? logLevel : "debug"
    process.arguments = ["--config", config, "--log-level", level]
    var environment = ProcessInfo.processInfo.environment
    environment["NOTIFY_SOCKET"] = socket.path
    process.environment = environment
    try TestProcesses.launch(process)
    // Messages left by an earlier daemon on the same socket (up to its STOPPING=1) are
    // skipped. The two awaited messages may come in either order.
    let deadline = ContinuousClock.now.advanced(by: .seconds(60))
    var ready: String?
    var synced = !waitForBankSync
    while ready == nil || !synced, ContinuousClock.now < deadline, let message = await socket.next(timeoutSeconds: 60) {
      if message.hasPrefix("STOPPING=1") {
        ready = nil
        synced = !waitForBankSync
      } else if message.hasPrefix("READY=1") {
        ready = message
      } else if message == ReadinessReporter.bankSyncedStatus {
        synced = true
      }
    }
    guard let ready, synced, let port = ready.split(separator: ":").last.flatMap({ Int($0) }) else {
      if process.isRunning { process.terminate() }
      throw CocoaError(
        .featureUnsupported,
        userInfo: [NSLocalizedDescriptionKey: ready == nil ? "banklinkd did not become ready" : "banklinkd never completed its first bank sync"])
    }
    return RunningDaemon(process: process, port: port)
  }

  public func kill9() async {
    guard self.process.isRunning else { return }
    kill(self.process.processIdentifier, SIGKILL)
    _ = try? await offPool { self.process.waitUntilExit() }
  }

  /// Resident set size of the daemon now (bytes), from `/proc/PID/status`.
  public var residentBytes: Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(self.process.processIdentifier)/status", encoding: .utf8),
      let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
      let kib = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
    else { return nil }
    return kib * 1024
  }

  /// How long ``stop()`` waits after SIGTERM before SIGKILL: past the daemon's own drain
  /// (``Limits/shutdownDrainSeconds``) with room to spare.
  public static let stopTimeoutSeconds = 30

  /// SIGTERM, then waits for the exit; SIGKILL if it has not exited in
  /// ``stopTimeoutSeconds`` (returns false then: the caller's test should fail).
  @discardableResult
  public func stop() async -> Bool {
    guard self.process.isRunning else { return true }
    self.process.terminate()
    let exited = (try? await offPool { () -> Bool in
      let deadline = Date().addingTimeInterval(TimeInterval(Self.stopTimeoutSeconds))
      while self.process.isRunning, Date() < deadline { usleep(20_000) }
      return !self.process.isRunning
    }) ?? false
    if !exited {
      kill(self.process.processIdentifier, SIGKILL)
      _ = try? await offPool { self.process.waitUntilExit() }
    }
    return exited
  }
}

/// The environment for running the `banklink` CLI against a daemon listening on `port` as
/// `identity` (certificate paths from the environment, as the README shows).
public func cliEnvironment(port: Int, caPath: String, identity: ClientIdentityFiles) -> [String: String] {
  var environment = ProcessInfo.processInfo.environment
  environment["BANKLINK_ADDRESS"] = "127.0.0.1:\(port)"
  environment["BANKLINK_CA"] = caPath
  environment["BANKLINK_CERT"] = identity.certificatePath
  environment["BANKLINK_KEY"] = identity.keyPath
  return environment
}

/// Writes `banklinkd.json` into `directory` for a test daemon: port 0, data in `data`, the test
/// PKI's files, a one-day simulator history, and `principals` (identity → roles). Returns its
/// path.
public func writeTestDaemonConfig(in directory: TemporaryDirectory, principals: [(identity: String, roles: [String])]) throws -> String {
  let config = directory.appending("banklinkd.json")
  let table = principals.map { principal in
    "{\"identity\": \"\(principal.identity)\", \"roles\": [\(principal.roles.map { "\"\($0)\"" }.joined(separator: ", "))]}"
  }.joined(separator: ", ")
  try Data("""
    {"listen": "127.0.0.1:0", "data_dir": "data", "connector": {"history_days": 1},
     "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
     "principals": [\(table)]}
    """.utf8).write(to: URL(fileURLWithPath: config))
  return config
}
