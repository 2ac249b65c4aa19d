import BankLinkBanks
import BankLinkCore
import BankLinkPKI
import BankLinkServer
import BankLinkJournal
import BankLinkStore
import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// The composition root of banklinkd: opens the store, builds the gRPC server and runs them in
/// a ServiceGroup that drains on SIGTERM/SIGINT within ``Limits/shutdownDrainSeconds``.
public enum Daemon {
  /// Runs until SIGTERM or SIGINT, then drains and returns (the process exits 0). Throws when
  /// the store cannot be opened or the server cannot listen.
  /// - Parameter reloadConfiguration: reads the configuration again for a reload (SIGHUP); nil
  ///   when it did not come from a file.
  public static func run(
    configuration: DaemonConfiguration,
    notifier: SystemdNotifier? = SystemdNotifier.fromEnvironment(ProcessInfo.processInfo.environment),
    reloadConfiguration: (@Sendable () throws -> DaemonConfiguration)? = nil,
    logger: Logger
  ) async throws {
    ReadinessReporter.send("STATUS=starting: opening the store", notifier: notifier, logger: logger)
    let store = try Store(
      configuration: .init(
        directory: configuration.dataDirectory,
        mapSizeMiB: configuration.storage.mapSizeMiB,
        writerCPUs: configuration.storage.writerCPUs,
        migrations: [PaymentLedger.schemaMigration(now: WallClock.now)]
      )
    )
    if let from = store.migratedFrom {
      logger.notice("data directory migrated", metadata: ["from_schema": "\(from)", "to_schema": "\(Store.schemaVersion)"])
    }
    Self.raiseFileLimit(connections: configuration.connections.maxConnections, logger: logger)
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
    // The simulator is the bank behind the in-process connector, and behind the file
    // connector's directories when `simulate_bank` is set.
    let files = configuration.connector.files
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
    let connector: any BankConnector
    var hostToHost: HostToHostConnector?
    if let files {
      let h2h: HostToHostConnector
      do {
        h2h = try HostToHostConnector(
          configuration: .init(
            outbox: files.outbox, inbox: files.inbox, stateDirectory: configuration.dataDirectory + "/connector-files",
            accounts: files.accounts.isEmpty ? BankSimulator.catalogueAccounts : files.accounts, painVersion: files.painVersion,
            initiatingPartyName: files.initiatingPartyName, settleMilliseconds: files.settleMilliseconds,
            // The connector's store holds every entry the bank sent, like the cache: it gets the
            // same map size (storage.map_size_mib), not a smaller fixed one.
            mapSizeMiB: configuration.storage.mapSizeMiB),
          clock: WallClock.now)
      } catch let problem as HostToHostConnector.FolderProblem {
        throw ConfigError(
          key: "connector.files.\(problem.key)",
          message: "\(problem.description) (under systemd, list it in ReadWritePaths=: docs/operations.md)")
      }
      hostToHost = h2h
      connector = h2h
      logger.info("host-to-host file connector", metadata: ["outbox": "\(files.outbox)", "inbox": "\(files.inbox)", "simulated_bank": "\(files.simulateBank)"])
    } else {
      connector = simulator
    }
    let cache = AccountCache(store: store)
    let writer = GroupCommitWriter(store: store, configuration: .init(groupCommit: configuration.storage.groupCommit))
    let payments = PaymentLedger(
      writer: writer,
      configuration: .init(
        approvalThresholdMajorUnits: configuration.payments.approvalThresholdMajorUnits, riskTimeZone: configuration.risk.timeZone,
        accountTimeZones: configuration.risk.accountTimeZones),
      now: WallClock.now
    )
    if let ruleSet = configuration.risk.ruleSet, let version = try await payments.adoptConfiguredRuleSet(ruleSet) {
      logger.notice("risk rule set from the configuration put in force", metadata: ["version": "\(version)"])
    }
    if let policy = configuration.payments.approvalPolicy, let version = try await payments.adoptConfiguredPolicy(policy) {
      logger.notice("approval policy from the configuration put in force", metadata: ["version": "\(version)"])
    }
    // OTP secrets are sealed under a key outside the store. Without security.otp_key_file it is
    // <data_dir>/otp.key, created on first start (docs/configuration.md says why to move it).
    let otpVault: OTPVault
    do {
      otpVault = try OTPVault.load(
        path: configuration.otpKeyPath ?? configuration.dataDirectory + "/otp.key", create: configuration.otpKeyPath == nil)
    } catch let error as VaultError {
      throw ConfigError(key: "security.otp_key_file", message: error.description)
    }
    var serverConfiguration = GatewayServer.Configuration(
      listen: configuration.listen,
      caPath: configuration.tls.caPath,
      certificatePath: configuration.tls.certificatePath,
      keyPath: configuration.tls.keyPath,
      identityPolicy: PeerIdentity.Policy(trustDomain: configuration.tls.trustDomain),
      connections: configuration.connections.with { $0.minimumTLSVersion = configuration.tls.minimumVersion }
    )
    serverConfiguration.reconciliation = configuration.reconciliation
    serverConfiguration.crlPath = configuration.tls.crlPath
    // For comparison only (make bench-grpc): every call through gRPC Swift; grpc-swift-nio-transport.
    serverConfiguration.unaryFastPath = ProcessInfo.processInfo.environment["BANKLINK_UNARY_FAST_PATH"] != "off"
    if let transport = ProcessInfo.processInfo.environment["BANKLINK_TRANSPORT"] {
      guard let chosen = GatewayServer.Transport(rawValue: transport) else {
        let known = GatewayServer.Transport.allCases.map(\.rawValue).joined(separator: ", ")
        throw ConfigError(key: "BANKLINK_TRANSPORT", message: "must be one of \(known), not \(transport)")
      }
      serverConfiguration.transport = chosen
    }
    let server: GatewayServer
    do {
      server = try GatewayServer(
        configuration: serverConfiguration,
        principals: PrincipalDirectory(PrincipalTable(configuration.principals)),
        accountCache: cache,
        connector: connector,
        payments: payments,
        otpVault: otpVault,
        logger: logger
      )
    } catch let problem as CertificateRevocationList.Problem {
      throw ConfigError(key: "tls.crl_file", message: problem.description)
    } catch let problem as ServerCertificate.Problem {
      throw ConfigError(key: problem.key, message: problem.message)
    }
    let sync = AccountSyncService(
      connector: connector,
      cache: cache,
      configuration: .init(intervalMilliseconds: configuration.sync.intervalMilliseconds, balanceFloors: configuration.balanceFloors),
      logger: logger,
      now: WallClock.now,
      onFirstCompleteRound: { accounts in
        logger.info("first bank sync complete", metadata: ["accounts": "\(accounts)"])
        ReadinessReporter.send(ReadinessReporter.bankSyncedStatus, notifier: notifier, logger: logger)
      }
    )
    let submitter = PaymentSubmitter(
      ledger: payments,
      connector: connector,
      intervalMilliseconds: configuration.payments.submitIntervalMilliseconds,
      logger: logger
    )
    let activity = SimulatorActivityService(
      simulator: simulator,
      intervalMilliseconds: configuration.connector.simulator.activityIntervalMilliseconds,
      logger: logger,
      now: WallClock.now
    )
    // Checkpoints are signed with the daemon's own TLS key (checked at start: a key that does not
    // match its certificate, or of a kind that cannot sign them, stops the daemon above), the
    // one in force after a reload.
    let checkpoints = JournalCheckpointService(writer: writer, certificate: server.certificate, logger: logger, now: WallClock.now)
    var connectorServices: [ServiceGroupConfiguration.ServiceConfiguration] = []
    if let files, let hostToHost {
      if let mismatch = try HostToHostInboxService.checkPositions(connector: hostToHost, store: store) {
        throw ConfigError(
          key: "connector.files",
          message:
            "\(configuration.dataDirectory)/connector-files is behind the daemon's store (\(mismatch)); started on it, the daemon "
            + "would skip what the connector numbers anew. A backup holds data.mdb only: restore connector-files taken after it "
            + "(docs/operations.md, Backup and restore); or this data directory was used with another connector before: start the "
            + "files connector on a new data directory")
      }
      connectorServices.append(
        .init(
          service: HostToHostInboxService(
            connector: hostToHost, server: server, store: store, intervalMilliseconds: files.pollIntervalMilliseconds, logger: logger,
            now: WallClock.now)))
      if files.simulateBank {
        let bank = try SimulatorFileBank(
          simulator: simulator, outbox: files.outbox, inbox: files.inbox, statementIntervalMilliseconds: files.statementIntervalMilliseconds)
        connectorServices.append(
          .init(
            service: SimulatorFileBankService(bank: bank, intervalMilliseconds: files.pollIntervalMilliseconds, logger: logger, now: WallClock.now)))
      }
    }
    let readiness = ReadinessReporter(server: server, notifier: notifier, logger: logger)
    var metrics: [ServiceGroupConfiguration.ServiceConfiguration] = []
    if let listen = configuration.metricsListen {
      metrics.append(.init(service: MetricsService(listen: listen, exporter: MetricsExporter(store: store, server: server), logger: logger)))
    }
    var watchdog: [ServiceGroupConfiguration.ServiceConfiguration] = []
    if let notifier, let interval = WatchdogService.pingInterval(environment: ProcessInfo.processInfo.environment) {
      logger.info("systemd watchdog enabled", metadata: ["ping_interval": "\(interval)"])
      watchdog.append(
        .init(
          service: WatchdogService(
            interval: interval, notifier: notifier, writer: payments.writer, eventLoops: MultiThreadedEventLoopGroup.singleton, logger: logger)))
    }
    let reloader = ConfigurationReloader(
      logger: logger, server: server, payments: payments, running: configuration, readConfiguration: reloadConfiguration)
    server.reloadHook.install { requestedBy in await reloader.reload(requestedBy: requestedBy) }
    let reload = ReloadListener(notifier: notifier, logger: logger, reloader: reloader)

    var groupConfiguration = ServiceGroupConfiguration(
      services: [
        // First in the list, so it is told of shutdown last: its final checkpoint covers what
        // the drain let finish.
        .init(service: checkpoints),
        .init(service: server),
        .init(service: sync),
        .init(service: submitter),
        .init(service: ApprovalExpiryService(ledger: payments, logger: logger)),
        .init(service: activity, successTerminationBehavior: .ignore),
        .init(service: HeapTrimService(callsStarted: { server.callsStarted })),
      ] + connectorServices + watchdog + metrics + [
        .init(service: reload, successTerminationBehavior: .gracefullyShutdownGroup),
        // Last in the list, so it is told of shutdown first and reports STOPPING=1 before the
        // server drains.
        .init(service: readiness, successTerminationBehavior: .gracefullyShutdownGroup),
      ],
      gracefulShutdownSignals: [.sigterm, .sigint],
      logger: logger
    )
    groupConfiguration.maximumGracefulShutdownDuration = .seconds(Limits.shutdownDrainSeconds)
    // After the drain, cancelled services get this long to return; then the group stops
    // waiting for them, so SIGTERM always ends the process (systemd's TimeoutStopSec is not
    // the only backstop).
    groupConfiguration.maximumCancellationDuration = .seconds(Limits.shutdownCancellationSeconds)
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
public struct ReadinessReporter: Service {
  /// Sent once the first sync round brought every account and balance from the bank: payments
  /// can be reserved from then on (`systemctl status` shows it; tests wait for it).
  public static let bankSyncedStatus = "STATUS=serving; accounts and balances synced from the bank"

  let server: GatewayServer
  let notifier: SystemdNotifier?
  let logger: Logger

  public func run() async throws {
    let address = try await self.server.listeningAddress
    self.logger.info("listening", metadata: ["address": "\(address)", "tls": "mutual"])
    Self.send("READY=1\nSTATUS=serving on \(address)", notifier: self.notifier, logger: self.logger)
    try? await gracefulShutdown()
    Self.send("STOPPING=1\nSTATUS=draining", notifier: self.notifier, logger: self.logger)
  }

  static func send(_ state: String, notifier: SystemdNotifier?, logger: Logger) {
    guard let notifier else { return }
    do {
      try notifier.notify(state)
    } catch {
      logger.warning("systemd notification failed", metadata: ["error": "\(error)"])
    }
  }
}

/// Reloads on SIGHUP (`systemctl reload banklinkd`) and on `ReloadConfiguration` (`banklink
/// admin reload`): the principals table, the CRL file (`tls.crl_file`), the server's certificate
/// and key, the trusted CA bundle, and the approval policy and rule set files. The new
/// configuration is read and validated whole first; if any of it fails, nothing is applied, the
/// old configuration keeps serving, and the reason is logged, journaled and raised as a
/// `configuration_refused` alert. Every reload is journaled (`daemon.reloaded`, with the policy
/// and rule set versions it put in the same transaction). Settings that need a restart (listen
/// address, data directory, storage, connection limits, metrics listener) are left as they are
/// and named when they differ. Reloads run one at a time.
actor ConfigurationReloader {
  let logger: Logger
  let server: GatewayServer
  let payments: PaymentLedger
  /// The configuration the daemon started with (what needs a restart is compared with it).
  let running: DaemonConfiguration
  let readConfiguration: (@Sendable () throws -> DaemonConfiguration)?

  init(
    logger: Logger, server: GatewayServer, payments: PaymentLedger, running: DaemonConfiguration,
    readConfiguration: (@Sendable () throws -> DaemonConfiguration)?
  ) {
    self.logger = logger
    self.server = server
    self.payments = payments
    self.running = running
    self.readConfiguration = readConfiguration
  }

  /// One reload, on behalf of `requestedBy` ("signal" for SIGHUP, else the caller's identity).
  func reload(requestedBy: String) async -> Result<ReloadOutcome, ReloadRefusal> {
    let time = WallClock.now()
    do {
      // Read and validate everything before applying anything.
      let next: DaemonConfiguration
      do {
        next = try self.readConfiguration?() ?? self.running
      } catch let error as ConfigError {
        throw ReloadRefusal(key: error.key, reason: error.description)
      }
      let authorities = try TrustedAuthorities.loadForReload(next.tls.caPath)
      var list: CertificateRevocationList?
      if let path = next.tls.crlPath {
        do {
          list = try self.server.readRevocationList(at: path, authorities: authorities)
        } catch let problem as CertificateRevocationList.Problem {
          throw ReloadRefusal(key: "tls.crl_file", reason: "tls.crl_file: \(problem.description)")
        }
      }
      let material: ServerCertificate.Material
      do {
        material = try ServerCertificate.Material.load(certificatePath: next.tls.certificatePath, keyPath: next.tls.keyPath, now: Date())
      } catch let problem as ServerCertificate.Problem {
        throw ReloadRefusal(key: problem.key, reason: problem.description)
      }
      let restartOnly = self.restartOnlyChanges(next)
      let previous = self.server.certificate.current
      var details: AuditPayload = [
        "requested_by": requestedBy,
        "principals": String(next.principals.count),
        "crl_serials": String(list?.revokedSerials.count ?? 0),
        "ca_certificates": String(authorities.count),
        "certificate_serial": material.serialHex,
      ]
      if material.serialHex != previous.serialHex { details["certificate_rotated_from"] = previous.serialHex }
      if !restartOnly.isEmpty { details["needs_restart"] = restartOnly.joined(separator: ", ") }
      // The stored parts (policy and rule set versions) and the journal entry: one transaction.
      let payments = self.payments
      let base = details
      let revocationList = list
      let (receipt, journaled) = try await payments.writer.write { txn in
        var details = base
        if let policy = next.payments.approvalPolicy, let version = try payments.adoptConfiguredPolicy(policy, at: time, txn: &txn) {
          details["approval_policy_version"] = String(version)
        }
        if let rules = next.risk.ruleSet, let version = try payments.adoptConfiguredRuleSet(rules, at: time, txn: &txn) {
          details["rule_set_version"] = String(version)
        }
        if let revocationList {
          do {
            try CertificateRevocations.recordInForce(revocationList, txn: &txn)
          } catch let problem as CertificateRevocationList.Problem {
            throw ReloadRefusal(key: "tls.crl_file", reason: "tls.crl_file: \(problem.description)")
          }
        }
        let receipt = try AuditJournal.append(
          &txn, at: time, principal: requestedBy == "signal" ? "banklinkd" : requestedBy, action: "daemon.reloaded", object: "daemon",
          details: details)
        return (receipt, details)
      }
      // In memory, together, after everything validated and the record committed. A handshake
      // that began before this line uses the old certificate and CA bundle; one after, the new.
      self.server.principals.replace(with: PrincipalTable(next.principals))
      self.server.revocations.replaceListed(list?.revokedSerials ?? [])
      self.server.trust.replace(with: authorities)
      // A TLS session resumed after this carries a certificate verified under the old bundle.
      self.server.peers.forgetVerifiedLeaves()
      self.server.certificate.replace(with: material)
      self.server.observeOwnCertificate()
      self.logger.notice("configuration reloaded", metadata: journaled.fields.mapValues { Logger.MetadataValue.string($0) })
      if !restartOnly.isEmpty {
        self.logger.warning("changed settings that take effect only after a restart", metadata: ["keys": "\(restartOnly.joined(separator: ", "))"])
      }
      let summary =
        "reloaded (\(next.principals.count) principals, \(list?.revokedSerials.count ?? 0) revoked serials in the CRL, "
        + "\(authorities.count) trusted CAs, server certificate \(material.serialHex))"
      return .success(ReloadOutcome(summary: summary, needsRestart: restartOnly, receipt: receipt))
    } catch {
      let refusal =
        (error as? ReloadRefusal)
        ?? ReloadRefusal(key: "(daemon)", reason: LogText.prefix("\(error)", maxBytes: Limits.maxLoggedReasonBytes))
      let reason = LogText.prefix(refusal.reason, maxBytes: Limits.maxLoggedReasonBytes)
      self.logger.error("reload refused; the running configuration is unchanged", metadata: ["reason": "\(reason)", "key": "\(refusal.key)"])
      do {
        _ = try await self.payments.writer.write { txn in
          try AuditJournal.append(
            &txn, at: time, principal: requestedBy == "signal" ? "banklinkd" : requestedBy, action: "daemon.reload_refused", object: "daemon",
            details: ["reason": reason, "key": refusal.key, "requested_by": requestedBy])
          _ = try AlertLog.raise(
            &txn, at: time, severity: .critical, kind: .configurationRefused,
            message: "reload refused, the running configuration is unchanged: \(reason)", details: ["reason": reason, "key": refusal.key])
        }
      } catch {
        self.logger.error("the refused reload could not be journaled", metadata: ["error": "\(error)"])
      }
      return .failure(ReloadRefusal(key: refusal.key, reason: reason))
    }
  }

  /// Keys whose new value takes effect only after a restart.
  func restartOnlyChanges(_ next: DaemonConfiguration) -> [String] {
    var keys: [String] = []
    if next.listen != self.running.listen { keys.append("listen") }
    if next.dataDirectory != self.running.dataDirectory { keys.append("data_dir") }
    if next.storage != self.running.storage { keys.append("storage") }
    if next.connections != self.running.connections { keys.append("connections") }
    if next.metricsListen != self.running.metricsListen { keys.append("metrics.listen") }
    if next.tls.minimumVersion != self.running.tls.minimumVersion { keys.append("tls.minimum_version") }
    return keys
  }
}

/// Runs a reload on each SIGHUP and reports how it went on the systemd status line.
struct ReloadListener: Service {
  let notifier: SystemdNotifier?
  let logger: Logger
  let reloader: ConfigurationReloader

  func run() async throws {
    let signals = await UnixSignalsSequence(trapping: .sighup)
    for await _ in signals.cancelOnGracefulShutdown() {
      let status: String
      switch await self.reloader.reload(requestedBy: "signal") {
      case .success(let outcome): status = "serving; " + outcome.summary
      case .failure(let refusal): status = "serving; reload refused, configuration unchanged: \(refusal.reason)"
      }
      do {
        try self.notifier?.notify("STATUS=" + status)
      } catch {
        self.logger.warning("systemd notification failed", metadata: ["error": "\(error)"])
      }
    }
  }
}

extension Daemon {
  /// Raises the soft limit on open files so that `connections` clients plus the daemon's own
  /// files (LMDB, logs, event loops: ``Limits/reservedFileDescriptors``) fit, up to the hard
  /// limit; warns when the hard limit is too low, since clients would then be refused by the
  /// kernel before the daemon's own connection limits apply.
  static func raiseFileLimit(connections: Int, logger: Logger) {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    let needed = rlim_t(connections + Limits.reservedFileDescriptors)
    if limit.rlim_cur < needed {
      limit.rlim_cur = min(needed, limit.rlim_max)
      _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    if limit.rlim_cur < needed {
      logger.warning(
        "the open-file limit is below connections.max_total plus the daemon's own files; raise LimitNOFILE",
        metadata: ["limit": "\(limit.rlim_cur)", "needed": "\(needed)"])
    }
  }
}
