import BankLinkBanks
import BankLinkCore
import BankLinkServer
import BankLinkStore
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// The composition root of banklinkd: opens the store, builds the gRPC server and runs them in
/// a ServiceGroup that drains on SIGTERM/SIGINT within ``Limits/shutdownDrainSeconds``.
public enum Daemon {
  /// Runs until SIGTERM or SIGINT, then drains and returns (the process exits 0). Throws when
  /// the store cannot be opened or the server cannot listen.
  public static func run(
    configuration: DaemonConfiguration,
    notifier: SystemdNotifier? = SystemdNotifier.fromEnvironment(ProcessInfo.processInfo.environment),
    logger: Logger
  ) async throws {
    let store = try Store(
      configuration: .init(
        directory: configuration.dataDirectory,
        mapSizeMiB: configuration.storage.mapSizeMiB,
        writerCPUs: configuration.storage.writerCPUs
      )
    )
    if configuration.developmentMode {
      logger.warning(
        "DEVELOPMENT MODE: no --config given; trusting the development CA in certs/dev and granting admin to CN 'admin'. Never run this way in production.")
    }
    logger.info(
      "store opened",
      metadata: [
        "data_dir": "\(configuration.dataDirectory)",
        "map_size_mib": "\(configuration.storage.mapSizeMiB)",
        "schema_version": "\(Store.schemaVersion)",
        "writer_cpus": "\(configuration.storage.writerCPUs.isEmpty ? "any" : configuration.storage.writerCPUs.map(String.init).joined(separator: ","))",
      ]
    )
    let simulator = try BankSimulator(
      configuration: .init(
        directory: configuration.dataDirectory + "/simulator",
        seed: configuration.connector.simulator.seed,
        historyDays: configuration.connector.simulator.historyDays,
        faults: configuration.connector.simulator.faults,
        writerCPUs: configuration.storage.writerCPUs
      ),
      clock: WallClock.now
    )
    let cache = AccountCache(store: store)
    let writer = GroupCommitWriter(store: store, configuration: .init(groupCommit: configuration.storage.groupCommit))
    let payments = PaymentLedger(
      writer: writer,
      configuration: .init(approvalThresholdMajorUnits: configuration.payments.approvalThresholdMajorUnits),
      now: WallClock.now
    )
    let server = GatewayServer(
      configuration: .init(
        listen: configuration.listen,
        caPath: configuration.tls.caPath,
        certificatePath: configuration.tls.certificatePath,
        keyPath: configuration.tls.keyPath
      ),
      principals: PrincipalDirectory(PrincipalTable(configuration.principals)),
      accountCache: cache,
      connector: simulator,
      payments: payments,
      logger: logger
    )
    let sync = AccountSyncService(
      connector: simulator,
      cache: cache,
      configuration: .init(intervalMilliseconds: configuration.sync.intervalMilliseconds),
      logger: logger,
      now: WallClock.now
    )
    let submitter = PaymentSubmitter(
      ledger: payments,
      connector: simulator,
      intervalMilliseconds: configuration.payments.submitIntervalMilliseconds,
      logger: logger
    )
    let activity = SimulatorActivityService(
      simulator: simulator,
      intervalMilliseconds: configuration.connector.simulator.activityIntervalMilliseconds,
      logger: logger,
      now: WallClock.now
    )
    let readiness = ReadinessReporter(server: server, notifier: notifier, logger: logger)
    let reload = ReloadListener(logger: logger)

    var groupConfiguration = ServiceGroupConfiguration(
      services: [
        .init(service: server),
        .init(service: sync),
        .init(service: submitter),
        .init(service: activity, successTerminationBehavior: .ignore),
        .init(service: reload, successTerminationBehavior: .gracefullyShutdownGroup),
        // Last in the list, so it is told of shutdown first and reports STOPPING=1 before the
        // server drains.
        .init(service: readiness, successTerminationBehavior: .gracefullyShutdownGroup),
      ],
      gracefulShutdownSignals: [.sigterm, .sigint],
      logger: logger
    )
    groupConfiguration.maximumGracefulShutdownDuration = .seconds(Limits.shutdownDrainSeconds)
    let group = ServiceGroup(configuration: groupConfiguration)
    try await group.run()
    let statistics = writer.statistics
    logger.info(
      "stopped",
      metadata: [
        "group_commit_writes": "\(statistics.writes)",
        "group_commit_commits": "\(statistics.commits)",
        "group_commit_largest_batch": "\(statistics.largestBatch)",
      ]
    )
  }
}

/// Reports readiness once the server listens (log line and systemd `READY=1`) and `STOPPING=1`
/// when graceful shutdown begins.
struct ReadinessReporter: Service {
  let server: GatewayServer
  let notifier: SystemdNotifier?
  let logger: Logger

  func run() async throws {
    let address = try await self.server.listeningAddress
    self.logger.info("listening", metadata: ["address": "\(address)", "tls": "mutual"])
    self.send("READY=1\nSTATUS=serving on \(address)")
    try? await gracefulShutdown()
    self.send("STOPPING=1\nSTATUS=draining")
  }

  private func send(_ state: String) {
    guard let notifier = self.notifier else { return }
    do {
      try notifier.notify(state)
    } catch {
      self.logger.warning("systemd notification failed", metadata: ["error": "\(error)"])
    }
  }
}

/// Traps SIGHUP so that `systemctl reload` (ExecReload=) never terminates the daemon — the
/// default action of SIGHUP. Reloading certificates, rules and policy is not built yet: the
/// signal is logged and nothing changes.
struct ReloadListener: Service {
  let logger: Logger

  func run() async throws {
    let signals = await UnixSignalsSequence(trapping: .sighup)
    for await _ in signals.cancelOnGracefulShutdown() {
      self.logger.notice("SIGHUP received: reload is not supported yet; configuration unchanged")
    }
  }
}
