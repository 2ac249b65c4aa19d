import BankLinkBanks
import BankLinkCore
import BankLinkFormats
import BankLinkPKI
import BankLinkServer
import Foundation
import Logging

/// A configuration error: which key is wrong and why. banklinkd prints it and exits with
/// `EX_CONFIG` (78) before listening.
public struct ConfigError: Error, Sendable, CustomStringConvertible, Equatable {
  /// Dotted path of the offending key, e.g. `tls.ca` or `principals[2].roles[0]`.
  public var key: String
  public var message: String

  public init(key: String, message: String) {
    self.key = key
    self.message = message
  }

  public var description: String { "configuration error at '\(self.key)': \(self.message)" }
}

/// Everything banklinkd needs to start. Built from embedded development defaults, then a
/// config file (JSON, see docs/configuration.md), then environment variables, then command-line
/// flags, each overriding the one before.
public struct DaemonConfiguration: Sendable {
  public var listen: ListenAddress
  public var dataDirectory: String
  public var tls: TLS
  public var storage: Storage
  public var logLevel: Logger.Level
  /// `log_format`: plain text lines for a terminal, or one JSON object per line.
  public var logFormat: LogFormat = .text

  public enum LogFormat: String, Sendable, Equatable {
    case text, json
  }
  public var principals: [Principal]
  public var connector: Connector
  public var sync: Sync
  public var payments = Payments()
  /// `alerts.balance_floors`: account id → available balance (minor units) that raises an alert
  /// when crossed downwards.
  public var balanceFloors: [String: Int64] = [:]
  /// `risk`: the rule set file and the time zones of the features.
  public var risk = Risk()
  /// The key that seals OTP secrets at rest (`security.otp_key_file`); nil: `<data_dir>/otp.key`,
  /// created with a new key on first start.
  public var otpKeyPath: String?
  /// Connection, buffering and drain limits (`connections`).
  public var connections = ConnectionLimits()
  /// How statement entries are matched to payments (`reconciliation`, docs/reconciliation.md).
  public var reconciliation = ReconciliationSettings()
  /// Where Prometheus scrapes `/metrics` (`metrics.listen`); nil: no metrics listener.
  public var metricsListen: ListenAddress?
  /// True when no configuration file was given: the development PKI and demo principals
  /// (CN `admin` is an admin). Logged loudly at start; refused under systemd unless
  /// `BANKLINK_ALLOW_DEVELOPMENT_MODE=1`.
  public var developmentMode = false

  /// Which bank connector the daemon uses: the embedded simulator, called in process
  /// (`simulator`), or host-to-host files (`files`).
  public struct Connector: Sendable {
    public var simulator: Simulator
    /// Set for `connector.type = "files"`.
    public var files: Files? = nil

    /// The host-to-host file connector (`connector.files`).
    public struct Files: Sendable {
      public var outbox: String
      public var inbox: String
      public var pollIntervalMilliseconds: Int64
      public var settleMilliseconds: Int64
      public var painVersion: CreditTransferMessage.Version
      public var initiatingPartyName: String
      /// The accounts held at the bank; empty with `simulate_bank` (the simulator's accounts).
      public var accounts: [Account]
      /// The embedded simulator plays the bank on the other side of the two directories.
      public var simulateBank: Bool
      /// How often the simulated bank writes a camt.053 statement per account.
      public var statementIntervalMilliseconds: Int64
    }

    public struct Simulator: Sendable {
      public var seed: UInt64
      public var historyDays: Int
      /// How often the simulated banks book new entries; 0 freezes them.
      public var activityIntervalMilliseconds: Int64
      public var faults: BankSimulator.Faults
    }

    public static let defaultSimulator = Connector(
      simulator: Simulator(seed: 20_261_127, historyDays: 60, activityIntervalMilliseconds: 1_000, faults: .none)
    )
  }

  public struct Sync: Sendable {
    /// Pause between background sync rounds with the bank.
    public var intervalMilliseconds: Int64
  }

  public struct TLS: Sendable, Equatable {
    public var caPath: String
    public var certificatePath: String
    public var keyPath: String
    /// When set, URI SAN identities must be `scheme://<trust domain>/…` (`tls.trust_domain`).
    public var trustDomain: String? = nil
    /// The oldest TLS version a client may negotiate (`tls.minimum_version`, "1.2" or "1.3").
    public var minimumVersion: MinimumTLSVersion = .tls12
    /// An X.509 CRL (PEM or DER) signed by a CA of `tls.ca` (`tls.crl_file`): its serials are
    /// refused. Re-read on reload.
    public var crlPath: String? = nil
  }

  public struct Storage: Sendable, Equatable {
    public var mapSizeMiB: Int
    /// Batch concurrent mutations into one synced commit (off: one synced commit per call).
    public var groupCommit: Bool = true
    /// CPUs for the store's writer thread (synced commits); empty: any the process may use.
    public var writerCPUs: [Int] = []
  }

  public struct Payments: Sendable, Equatable {
    /// Payments of at least this many major units of their currency wait for approval (until
    /// approval policy exists); converted per currency by its ISO 4217 exponent.
    public var approvalThresholdMajorUnits: Int64 = 1_000_000
    /// Pause between passes that deliver the outbox to the bank and read its status reports.
    public var submitIntervalMilliseconds: Int64 = 500
    /// The approval policy of `payments.approval_policy_file`, checked at start; put as a new
    /// version when its rules differ from the policy in force.
    public var approvalPolicy: ApprovalPolicy?
  }

  public struct Risk: Sendable {
    /// The rule set of `risk.rule_set_file`, checked at start; put as a new version when its
    /// rules or lists differ from the set in force.
    public var ruleSet: CompiledRuleSet?
    /// `risk.time_zone` (IANA name): hour and weekday features; default Asia/Shanghai.
    public var timeZone = TimeZone(identifier: "Asia/Shanghai") ?? .gmt
    /// `risk.account_time_zones`: per-account exceptions.
    public var accountTimeZones: [String: TimeZone] = [:]
  }

  /// Environment variables that override the file (documented in docs/configuration.md).
  public enum EnvironmentKey {
    public static let listen = "BANKLINK_LISTEN"
    public static let dataDirectory = "BANKLINK_DATA_DIR"
    public static let logLevel = "BANKLINK_LOG_LEVEL"
    /// `1` lets development mode (no `--config`) start under systemd.
    public static let allowDevelopmentMode = "BANKLINK_ALLOW_DEVELOPMENT_MODE"
  }

  /// Development mode: loopback on port 7443, data under `./var/`, the development PKI from
  /// `certs/dev/` and the demo principals. Paths are relative to `root`.
  public static func development(root: String = FileManager.default.currentDirectoryPath) -> DaemonConfiguration {
    let certs = root + "/" + DevelopmentPKI.defaultDirectory
    var configuration = DaemonConfiguration(
      listen: ListenAddress("127.0.0.1:7443")!,
      dataDirectory: root + "/var",
      tls: TLS(caPath: certs + "/ca.pem", certificatePath: certs + "/server.pem", keyPath: certs + "/server.key"),
      storage: Storage(mapSizeMiB: Limits.defaultMapSizeMiB),
      logLevel: .info,
      principals: DevelopmentPKI.principals,
      connector: .defaultSimulator,
      sync: Sync(intervalMilliseconds: 1_000)
    )
    // The example rule set of the checkout (a test keeps it valid), so that the README's tour
    // shows rules at work.
    if let data = FileManager.default.contents(atPath: root + "/" + Self.exampleRuleSetPath),
      case .success(let compiled) = CompiledRuleSet.parse(json: String(decoding: data, as: UTF8.self))
    {
      configuration.risk.ruleSet = compiled
    }
    return configuration
  }

  /// The example rule set development mode loads, relative to the working directory.
  public static let exampleRuleSetPath = "docs/rules.example.json"

  /// Command-line overrides.
  public struct Overrides: Sendable {
    public var listen: String?
    public var dataDirectory: String?
    public var logLevel: String?

    public init(listen: String? = nil, dataDirectory: String? = nil, logLevel: String? = nil) {
      self.listen = listen
      self.dataDirectory = dataDirectory
      self.logLevel = logLevel
    }
  }

  /// Resolves the configuration the daemon runs with and validates it, including that the TLS
  /// files can be read. Throws ``ConfigError`` naming the key at fault.
  public static func resolve(
    file: String?,
    environment: [String: String] = ProcessInfo.processInfo.environment,
    overrides: Overrides = Overrides(),
    developmentRoot: String = FileManager.default.currentDirectoryPath
  ) throws -> DaemonConfiguration {
    var configuration: DaemonConfiguration
    if let file {
      configuration = try DaemonConfiguration.load(file: file)
    } else {
      // systemd sets INVOCATION_ID for every unit it starts (and NOTIFY_SOCKET for Type=notify):
      // a production host must never fall back to the development PKI and its CN `admin`.
      let underSystemd = environment["INVOCATION_ID"] != nil || environment["NOTIFY_SOCKET"] != nil
      if underSystemd && environment[EnvironmentKey.allowDevelopmentMode] != "1" {
        throw ConfigError(
          key: "--config",
          message: "no configuration file given under systemd: development mode (the development PKI in certs/dev, CN 'admin' is an admin) is refused; pass --config, or set \(EnvironmentKey.allowDevelopmentMode)=1 to run it anyway")
      }
      configuration = .development(root: developmentRoot)
      configuration.developmentMode = true
    }
    if let value = environment[EnvironmentKey.listen] {
      configuration.listen = try parseListen(value, key: EnvironmentKey.listen)
    }
    if let value = environment[EnvironmentKey.dataDirectory] {
      configuration.dataDirectory = try nonEmpty(value, key: EnvironmentKey.dataDirectory)
    }
    if let value = environment[EnvironmentKey.logLevel] {
      configuration.logLevel = try parseLogLevel(value, key: EnvironmentKey.logLevel)
    }
    if let value = overrides.listen {
      configuration.listen = try parseListen(value, key: "--listen")
    }
    if let value = overrides.dataDirectory {
      configuration.dataDirectory = try nonEmpty(value, key: "--data-dir")
    }
    if let value = overrides.logLevel {
      configuration.logLevel = try parseLogLevel(value, key: "--log-level")
    }
    try configuration.checkFiles(developmentMode: file == nil)
    return configuration
  }

  /// Parses a JSON config file. Relative paths in it are resolved against the file's directory.
  public static func load(file: String) throws -> DaemonConfiguration {
    guard let handle = FileHandle(forReadingAtPath: file) else {
      throw ConfigError(key: "--config", message: "cannot read \(file)")
    }
    defer { try? handle.close() }
    let data = (try? handle.read(upToCount: Limits.maxConfigFileBytes + 1)) ?? Data()
    guard data.count <= Limits.maxConfigFileBytes else {
      throw ConfigError(key: "--config", message: "\(file) is larger than \(Limits.maxConfigFileBytes) bytes")
    }
    let base = (file as NSString).deletingLastPathComponent
    return try parse(json: data, baseDirectory: base.isEmpty ? "." : base)
  }

  /// Parses the JSON text of a config file; see docs/configuration.md for the keys.
  public static func parse(json data: Data, baseDirectory: String) throws -> DaemonConfiguration {
    let root: Any
    do {
      root = try JSONSerialization.jsonObject(with: data)
    } catch {
      throw ConfigError(key: "(file)", message: "not valid JSON: \(error.localizedDescription)")
    }
    var reader = try ObjectReader(root, path: "")
    func path(_ value: String) -> String {
      value.hasPrefix("/") ? value : baseDirectory + "/" + value
    }

    let listen = try parseListen(try reader.string("listen"), key: "listen")
    let dataDirectory = path(try nonEmpty(try reader.string("data_dir"), key: "data_dir"))

    var tlsReader = try reader.object("tls")
    var tls = TLS(
      caPath: path(try nonEmpty(try tlsReader.string("ca"), key: "tls.ca")),
      certificatePath: path(try nonEmpty(try tlsReader.string("certificate"), key: "tls.certificate")),
      keyPath: path(try nonEmpty(try tlsReader.string("key"), key: "tls.key"))
    )
    if let domain = try tlsReader.optionalString("trust_domain") {
      let allowed = domain.utf8.allSatisfy {
        ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
          || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-")
      }
      guard !domain.isEmpty, domain.utf8.count <= Limits.maxTrustDomainBytes, allowed else {
        throw ConfigError(
          key: "tls.trust_domain",
          message: "must be a lower-case domain name (a-z, 0-9, '.', '-') of at most \(Limits.maxTrustDomainBytes) bytes")
      }
      tls.trustDomain = domain
    }
    if let crl = try tlsReader.optionalString("crl_file") {
      tls.crlPath = path(try nonEmpty(crl, key: "tls.crl_file"))
    }
    if let version = try tlsReader.optionalString("minimum_version") {
      guard let minimum = MinimumTLSVersion(rawValue: version) else {
        throw ConfigError(key: "tls.minimum_version", message: "must be \"1.2\" or \"1.3\"")
      }
      tls.minimumVersion = minimum
    }
    try tlsReader.finish()

    var metricsListen: ListenAddress?
    if var metricsReader = try reader.optionalObject("metrics") {
      if let listen = try metricsReader.optionalString("listen") { metricsListen = try parseListen(listen, key: "metrics.listen") }
      try metricsReader.finish()
    }

    var storage = Storage(mapSizeMiB: Limits.defaultMapSizeMiB)
    if var storageReader = try reader.optionalObject("storage") {
      if let size = try storageReader.optionalInt("map_size_mib") {
        guard (Limits.minMapSizeMiB...Limits.maxMapSizeMiB).contains(size) else {
          throw ConfigError(
            key: "storage.map_size_mib",
            message: "must be between \(Limits.minMapSizeMiB) and \(Limits.maxMapSizeMiB), got \(size)"
          )
        }
        storage.mapSizeMiB = size
      }
      if let groupCommit = try storageReader.optionalBool("group_commit") {
        storage.groupCommit = groupCommit
      }
      if let cpus = try storageReader.optionalArray("writer_cpus") {
        for (index, value) in cpus.enumerated() {
          let key = "storage.writer_cpus[\(index)]"
          guard let number = value as? NSNumber, String(cString: number.objCType) != "c",
            let cpu = Int(exactly: number.doubleValue), (0...Limits.maxCPUIndex).contains(cpu)
          else {
            throw ConfigError(key: key, message: "must be a CPU number between 0 and \(Limits.maxCPUIndex)")
          }
          guard !storage.writerCPUs.contains(cpu) else { throw ConfigError(key: key, message: "CPU \(cpu) is listed twice") }
          storage.writerCPUs.append(cpu)
        }
      }
      try storageReader.finish()
    }

    var logLevel = Logger.Level.info
    var logFormat = LogFormat.text
    if let format = try reader.optionalString("log_format") {
      guard let parsed = LogFormat(rawValue: format) else { throw ConfigError(key: "log_format", message: "must be \"text\" or \"json\"") }
      logFormat = parsed
    }
    if let level = try reader.optionalString("log_level") {
      logLevel = try parseLogLevel(level, key: "log_level")
    }

    var connector = Connector.defaultSimulator
    if var connectorReader = try reader.optionalObject("connector") {
      let type = try connectorReader.optionalString("type") ?? "simulator"
      guard type == "simulator" || type == "files" else {
        throw ConfigError(key: "connector.type", message: "unknown connector '\(type)'; available: simulator, files")
      }
      if var filesReader = try connectorReader.optionalObject("files") {
        guard type == "files" else { throw ConfigError(key: "connector.files", message: "only with connector.type \"files\"") }
        connector.files = try parseFilesConnector(&filesReader, path: path)
      } else if type == "files" {
        throw ConfigError(key: "connector.files", message: "is required with connector.type \"files\" (outbox and inbox)")
      }
      var simulator = connector.simulator
      if let seed = try connectorReader.optionalInt("seed") {
        guard seed >= 0 else { throw ConfigError(key: "connector.seed", message: "must not be negative") }
        simulator.seed = UInt64(seed)
      }
      if let days = try connectorReader.optionalInt("history_days") {
        guard (0...Limits.maxSimulatorHistoryDays).contains(days) else {
          throw ConfigError(key: "connector.history_days", message: "must be between 0 and \(Limits.maxSimulatorHistoryDays)")
        }
        simulator.historyDays = days
      }
      if let interval = try connectorReader.optionalInt("activity_interval_ms") {
        guard (0...Limits.maxIntervalMilliseconds).contains(interval) else {
          throw ConfigError(key: "connector.activity_interval_ms", message: "must be between 0 and \(Limits.maxIntervalMilliseconds)")
        }
        simulator.activityIntervalMilliseconds = Int64(interval)
      }
      if let latency = try connectorReader.optionalInt("latency_ms") {
        guard (0...Limits.maxSimulatedLatencyMilliseconds).contains(latency) else {
          throw ConfigError(key: "connector.latency_ms", message: "must be between 0 and \(Limits.maxSimulatedLatencyMilliseconds)")
        }
        simulator.faults.latencyMilliseconds = latency
      }
      if let jitter = try connectorReader.optionalInt("jitter_ms") {
        guard (0...Limits.maxSimulatedLatencyMilliseconds).contains(jitter) else {
          throw ConfigError(key: "connector.jitter_ms", message: "must be between 0 and \(Limits.maxSimulatedLatencyMilliseconds)")
        }
        simulator.faults.jitterMilliseconds = jitter
      }
      for (key, path) in [
        ("error_rate", \BankSimulator.Faults.errorRate), ("timeout_rate", \BankSimulator.Faults.timeoutRate),
        ("rejection_rate", \BankSimulator.Faults.rejectionRate),
      ] {
        if let rate = try connectorReader.optionalDouble(key) {
          guard (0...1).contains(rate) else { throw ConfigError(key: "connector.\(key)", message: "must be between 0 and 1") }
          simulator.faults[keyPath: path] = rate
        }
      }
      if let outage = try connectorReader.optionalBool("outage") {
        simulator.faults.outage = outage
      }
      try connectorReader.finish()
      connector.simulator = simulator
    }

    var sync = Sync(intervalMilliseconds: 1_000)
    if var syncReader = try reader.optionalObject("sync") {
      if let interval = try syncReader.optionalInt("interval_ms") {
        guard (Limits.minSyncIntervalMilliseconds...Limits.maxIntervalMilliseconds).contains(interval) else {
          throw ConfigError(
            key: "sync.interval_ms", message: "must be between \(Limits.minSyncIntervalMilliseconds) and \(Limits.maxIntervalMilliseconds)")
        }
        sync.intervalMilliseconds = Int64(interval)
      }
      try syncReader.finish()
    }

    var balanceFloors: [String: Int64] = [:]
    if var alertsReader = try reader.optionalObject("alerts") {
      if var floorsReader = try alertsReader.optionalObject("balance_floors") {
        let accounts = floorsReader.keys
        guard accounts.count <= Limits.maxBalanceFloors else {
          throw ConfigError(key: "alerts.balance_floors", message: "at most \(Limits.maxBalanceFloors) accounts, got \(accounts.count)")
        }
        for account in accounts {
          let key = "alerts.balance_floors.\(account)"
          guard PaymentValidation.isAccountID(account) else {
            throw ConfigError(key: key, message: "is not an account id (\(PaymentValidation.accountIDRule))")
          }
          guard let floor = try floorsReader.optionalInt(account), floor >= 0 else {
            throw ConfigError(key: key, message: "must be an amount in minor units of the account's currency, 0 or more")
          }
          balanceFloors[account] = Int64(floor)
        }
        try floorsReader.finish()
      }
      try alertsReader.finish()
    }

    var risk = Risk()
    var timeZoneConfigured = false
    if var riskReader = try reader.optionalObject("risk") {
      if let file = try riskReader.optionalString("rule_set_file") {
        let rulesPath = path(try nonEmpty(file, key: "risk.rule_set_file"))
        guard let data = FileManager.default.contents(atPath: rulesPath), data.count <= Limits.maxConfigFileBytes else {
          throw ConfigError(key: "risk.rule_set_file", message: "cannot read \(rulesPath) (at most \(Limits.maxConfigFileBytes) bytes)")
        }
        switch CompiledRuleSet.parse(json: String(decoding: data, as: UTF8.self)) {
        case .success(let compiled): risk.ruleSet = compiled
        case .failure(let failure):
          throw ConfigError(
            key: "risk.rule_set_file",
            message: failure.issues.prefix(Limits.maxReportedViolations).map(\.description).joined(separator: "; "))
        }
      }
      func zone(_ name: String, key: String) throws -> TimeZone {
        guard name.utf8.count <= 64, let zone = TimeZone(identifier: name) else {
          throw ConfigError(key: key, message: "is not a time zone name such as Asia/Shanghai")
        }
        return zone
      }
      if let name = try riskReader.optionalString("time_zone") {
        risk.timeZone = try zone(name, key: "risk.time_zone")
        timeZoneConfigured = true
      }
      if var zonesReader = try riskReader.optionalObject("account_time_zones") {
        for account in zonesReader.keys {
          let key = "risk.account_time_zones.\(account)"
          guard PaymentValidation.isAccountID(account) else {
            throw ConfigError(key: key, message: "is not an account id (\(PaymentValidation.accountIDRule))")
          }
          guard let name = try zonesReader.optionalString(account) else { throw ConfigError(key: key, message: "must be a time zone name") }
          risk.accountTimeZones[account] = try zone(name, key: key)
        }
        try zonesReader.finish()
      }
      try riskReader.finish()
    }
    if !timeZoneConfigured && TimeZone(identifier: "Asia/Shanghai") == nil {
      // Rules on `features.hour` would run 8 hours off without saying so.
      throw ConfigError(
        key: "risk.time_zone", message: "the default Asia/Shanghai is not in this system's time zone database (install tzdata), set it")
    }

    var payments = Payments()
    if var paymentsReader = try reader.optionalObject("payments") {
      if try paymentsReader.optionalInt("approval_threshold_minor") != nil {
        // Minor units meant different amounts in different currencies (100 JPY vs 1 USD).
        throw ConfigError(
          key: "payments.approval_threshold_minor",
          message: "was replaced by payments.approval_threshold_major: the threshold in major units of each payment's currency")
      }
      if let threshold = try paymentsReader.optionalInt("approval_threshold_major") {
        guard threshold >= 0 else {
          throw ConfigError(key: "payments.approval_threshold_major", message: "must not be negative")
        }
        payments.approvalThresholdMajorUnits = Int64(threshold)
      }
      if let interval = try paymentsReader.optionalInt("submit_interval_ms") {
        guard (Limits.minSyncIntervalMilliseconds...Limits.maxIntervalMilliseconds).contains(interval) else {
          throw ConfigError(
            key: "payments.submit_interval_ms",
            message: "must be between \(Limits.minSyncIntervalMilliseconds) and \(Limits.maxIntervalMilliseconds)")
        }
        payments.submitIntervalMilliseconds = Int64(interval)
      }
      if let file = try paymentsReader.optionalString("approval_policy_file") {
        let policyPath = path(try nonEmpty(file, key: "payments.approval_policy_file"))
        guard let data = FileManager.default.contents(atPath: policyPath), data.count <= Limits.maxConfigFileBytes else {
          throw ConfigError(key: "payments.approval_policy_file", message: "cannot read \(policyPath) (at most \(Limits.maxConfigFileBytes) bytes)")
        }
        switch ApprovalPolicy.parse(json: String(decoding: data, as: UTF8.self)) {
        case .success(let policy): payments.approvalPolicy = policy
        case .failure(let problems):
          throw ConfigError(
            key: "payments.approval_policy_file",
            message: problems.violations.prefix(Limits.maxReportedViolations).map { "\($0.field): \($0.description)" }.joined(separator: "; "))
        }
      }
      try paymentsReader.finish()
    }

    var connections = ConnectionLimits()
    if var connectionsReader = try reader.optionalObject("connections") {
      let counts: [(String, WritableKeyPath<ConnectionLimits, Int>, ClosedRange<Int>)] = [
        ("max_total", \.maxConnections, Limits.connectionLimitRange),
        ("max_per_address", \.maxConnectionsPerAddress, Limits.connectionLimitRange),
        ("handshake_timeout_ms", \.handshakeTimeoutMilliseconds, Limits.connectionTimeoutRangeMilliseconds),
        ("idle_timeout_ms", \.idleTimeoutMilliseconds, Limits.connectionTimeoutRangeMilliseconds),
        ("max_buffered_bytes", \.maxBufferedBytesPerConnection, Limits.maxRequestMessageBytes...Int(Int32.max)),
        ("message_timeout_ms", \.messageReceiveTimeoutMilliseconds, Limits.connectionTimeoutRangeMilliseconds),
        ("drain_timeout_ms", \.drainTimeoutMilliseconds, 0...(Limits.shutdownDrainSeconds * 1000 - 1000)),
      ]
      for (key, path, range) in counts {
        guard let value = try connectionsReader.optionalInt(key) else { continue }
        guard range.contains(value) else {
          throw ConfigError(key: "connections.\(key)", message: "must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
        }
        connections[keyPath: path] = value
      }
      guard connections.maxConnectionsPerAddress <= connections.maxConnections else {
        throw ConfigError(key: "connections.max_per_address", message: "must not exceed connections.max_total")
      }
      try connectionsReader.finish()
    }

    var reconciliation = ReconciliationSettings()
    if var reconciliationReader = try reader.optionalObject("reconciliation") {
      if let value = try reconciliationReader.optionalInt("fee_tolerance_minor") {
        guard (0...Limits.maxFeeToleranceMinor).contains(Int64(value)) else {
          throw ConfigError(
            key: "reconciliation.fee_tolerance_minor", message: "must be between 0 and \(Limits.maxFeeToleranceMinor), got \(value)")
        }
        reconciliation.feeToleranceMinor = Int64(value)
      }
      let numbers: [(String, WritableKeyPath<ReconciliationSettings, Int>, ClosedRange<Int>)] = [
        ("date_window_days", \.dateWindowDays, 0...Limits.maxReconciliationDateWindowDays),
        ("minimum_score", \.minimumScore, 1...1000),
        ("ambiguity_margin", \.ambiguityMargin, 0...1000),
      ]
      for (key, path, range) in numbers {
        guard let value = try reconciliationReader.optionalInt(key) else { continue }
        guard range.contains(value) else {
          throw ConfigError(key: "reconciliation.\(key)", message: "must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
        }
        reconciliation[keyPath: path] = value
      }
      try reconciliationReader.finish()
    }

    var principals: [Principal] = []
    var seen: Set<String> = []
    let entries = try reader.array("principals")
    guard entries.count <= Limits.maxPrincipals else {
      throw ConfigError(key: "principals", message: "at most \(Limits.maxPrincipals) principals, got \(entries.count)")
    }
    for (index, entry) in entries.enumerated() {
      let key = "principals[\(index)]"
      var principalReader = try ObjectReader(entry, path: key)
      let identity = try nonEmpty(try principalReader.string("identity"), key: key + ".identity")
      switch IdentityRules.check(identity) {
      case .failure(let problem):
        throw ConfigError(key: key + ".identity", message: "\(problem)")
      case .success(.uri(_, let authority)):
        if let domain = tls.trustDomain, authority != domain {
          throw ConfigError(
            key: key + ".identity",
            message: "is outside tls.trust_domain '\(domain)': no certificate could present it")
        }
      case .success(.name):
        break
      }
      guard seen.insert(identity).inserted else {
        throw ConfigError(key: key + ".identity", message: "'\(identity)' is listed twice")
      }
      var roles: Set<Role> = []
      for (roleIndex, value) in try principalReader.array("roles").enumerated() {
        let roleKey = "\(key).roles[\(roleIndex)]"
        guard let name = value as? String else {
          throw ConfigError(key: roleKey, message: "must be a string")
        }
        guard let role = Role(rawValue: name) else {
          throw ConfigError(
            key: roleKey,
            message: "unknown role '\(name)'; roles are \(Role.allCases.map(\.rawValue).joined(separator: ", "))"
          )
        }
        roles.insert(role)
      }
      // Per-currency approval limits in minor units: {"CNY": 5000000} (50,000.00 CNY).
      var limits: [CurrencyCode: Int64] = [:]
      if var limitsReader = try principalReader.optionalObject("approval_limits") {
        let codes = limitsReader.keys
        guard codes.count <= Limits.maxApprovalLimitsPerPrincipal else {
          throw ConfigError(
            key: key + ".approval_limits", message: "at most \(Limits.maxApprovalLimitsPerPrincipal) currencies, got \(codes.count)")
        }
        for code in codes {
          let limitKey = "\(key).approval_limits.\(code)"
          guard let currency = CurrencyCode(code) else {
            throw ConfigError(key: limitKey, message: "is not a currency code (three upper-case letters, ISO 4217)")
          }
          guard let limit = try limitsReader.optionalInt(code), limit > 0, Int64(limit) <= Limits.maxBankAmountMinorUnits else {
            throw ConfigError(
              key: limitKey, message: "must be an amount in minor units between 1 and \(Limits.maxBankAmountMinorUnits)")
          }
          limits[currency] = Int64(limit)
        }
        try limitsReader.finish()
      }
      try principalReader.finish()
      principals.append(Principal(identity: identity, roles: roles, approvalLimits: limits))
    }
    var otpKeyPath: String?
    if var securityReader = try reader.optionalObject("security") {
      if let file = try securityReader.optionalString("otp_key_file") {
        otpKeyPath = path(try nonEmpty(file, key: "security.otp_key_file"))
      }
      try securityReader.finish()
    }
    try reader.finish()

    var configuration = DaemonConfiguration(
      listen: listen,
      dataDirectory: dataDirectory,
      tls: tls,
      storage: storage,
      logLevel: logLevel,
      principals: principals,
      connector: connector,
      sync: sync
    )
    configuration.payments = payments
    configuration.balanceFloors = balanceFloors
    configuration.risk = risk
    configuration.otpKeyPath = otpKeyPath
    configuration.connections = connections
    configuration.reconciliation = reconciliation
    configuration.metricsListen = metricsListen
    configuration.logFormat = logFormat
    return configuration
  }

  /// Checks that the TLS files exist and hold PEM of the right kind, so a typo fails at start
  /// with the key's name instead of as a handshake error later.
  func checkFiles(developmentMode: Bool) throws {
    let hint = developmentMode ? " (development mode: run `make certs` to create the development PKI)" : ""
    for (key, path, marker) in [
      ("tls.ca", self.tls.caPath, "BEGIN CERTIFICATE"),
      ("tls.certificate", self.tls.certificatePath, "BEGIN CERTIFICATE"),
      ("tls.key", self.tls.keyPath, "PRIVATE KEY"),
    ] {
      guard let data = FileManager.default.contents(atPath: path) else {
        throw ConfigError(key: key, message: "cannot read \(path)\(hint)")
      }
      guard String(decoding: data, as: UTF8.self).contains(marker) else {
        throw ConfigError(key: key, message: "\(path) is not a PEM file containing '\(marker)'")
      }
    }
    if let crl = self.tls.crlPath, !FileManager.default.isReadableFile(atPath: crl) {
      throw ConfigError(key: "tls.crl_file", message: "cannot read \(crl)")
    }
    // The private key must not be readable by others (group read is allowed, for a
    // deployment that shares it with a dedicated group: mode 0640 at most).
    if let mode = ServerCertificate.permissions(ofFile: self.tls.keyPath), mode & 0o037 != 0 {
      throw ConfigError(
        key: "tls.key",
        message: "\(self.tls.keyPath) has mode \(String(mode & 0o777, radix: 8)): a private key must not be writable by its group nor accessible to others (chmod 600 or 640)")
    }
  }
}

private func parseListen(_ value: String, key: String) throws -> ListenAddress {
  guard let address = ListenAddress(value) else {
    throw ConfigError(
      key: key,
      message: "'\(value)' is not HOST:PORT with an IPv4 or [IPv6] literal (or localhost) and a port 0-65535"
    )
  }
  return address
}

private func parseLogLevel(_ value: String, key: String) throws -> Logger.Level {
  guard let level = Logger.Level(rawValue: value) else {
    throw ConfigError(
      key: key,
      message: "unknown log level '\(value)'; use one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))"
    )
  }
  return level
}

private func nonEmpty(_ value: String, key: String) throws -> String {
  guard !value.isEmpty else { throw ConfigError(key: key, message: "must not be empty") }
  return value
}

/// `connector.files`: see docs/configuration.md.
private func parseFilesConnector(_ reader: inout ObjectReader, path: (String) -> String) throws -> DaemonConfiguration.Connector.Files {
  let outbox = path(try nonEmpty(try reader.string("outbox"), key: "connector.files.outbox"))
  let inbox = path(try nonEmpty(try reader.string("inbox"), key: "connector.files.inbox"))
  guard outbox != inbox else { throw ConfigError(key: "connector.files.inbox", message: "must not be the outbox") }
  func interval(_ key: String, _ defaultValue: Int64, minimum: Int64) throws -> Int64 {
    guard let value = try reader.optionalInt(key) else { return defaultValue }
    guard Int64(value) >= minimum, value <= Limits.maxIntervalMilliseconds else {
      throw ConfigError(key: "connector.files.\(key)", message: "must be between \(minimum) and \(Limits.maxIntervalMilliseconds)")
    }
    return Int64(value)
  }
  let poll = try interval("poll_interval_ms", 1_000, minimum: Int64(Limits.minSyncIntervalMilliseconds))
  let settle = try interval("settle_ms", 1_000, minimum: 0)
  let statements = try interval("statement_interval_ms", 60_000, minimum: 1_000)
  var version = CreditTransferMessage.Version.v03
  if let name = try reader.optionalString("pain_version") {
    guard let parsed = CreditTransferMessage.Version(rawValue: name) else {
      throw ConfigError(
        key: "connector.files.pain_version", message: "'\(name)' is not written; use \(CreditTransferMessage.Version.allCases.map(\.rawValue).joined(separator: " or "))")
    }
    version = parsed
  }
  let party = try reader.optionalString("initiating_party") ?? "BankLink"
  let simulate = try reader.optionalBool("simulate_bank") ?? false
  var accounts: [Account] = []
  for (index, entry) in (try reader.optionalArray("accounts") ?? []).enumerated() {
    let key = "connector.files.accounts[\(index)]"
    var accountReader = try ObjectReader(entry, path: key)
    let id = try nonEmpty(try accountReader.string("id"), key: key + ".id")
    let number = try accountReader.optionalString("number") ?? ""
    let iban = try accountReader.optionalString("iban") ?? ""
    guard !number.isEmpty || !iban.isEmpty else { throw ConfigError(key: key, message: "needs a number or an iban") }
    let code = try accountReader.string("currency")
    guard let currency = CurrencyCode(code) else { throw ConfigError(key: key + ".currency", message: "'\(code)' is not an ISO 4217 code") }
    let account = Account(
      id: id, number: number.isEmpty ? iban : number, iban: iban, displayName: try accountReader.optionalString("name") ?? id,
      bankBIC: try accountReader.optionalString("bic") ?? "", bankName: try accountReader.optionalString("bank_name") ?? "",
      currency: currency)
    try accountReader.finish()
    // The cache refuses such an account from any connector; refused here, by name.
    if let problem = BankDataLimits.accountProblem(account) { throw ConfigError(key: key, message: problem) }
    guard !accounts.contains(where: { $0.id == id }) else { throw ConfigError(key: key + ".id", message: "'\(id)' appears twice") }
    accounts.append(account)
  }
  guard simulate || !accounts.isEmpty else {
    throw ConfigError(key: "connector.files.accounts", message: "list the accounts held at the bank (or set simulate_bank)")
  }
  try reader.finish()
  return .init(
    outbox: outbox, inbox: inbox, pollIntervalMilliseconds: poll, settleMilliseconds: settle, painVersion: version,
    initiatingPartyName: party, accounts: accounts, simulateBank: simulate, statementIntervalMilliseconds: statements)
}

/// Reads keys of one JSON object, reporting wrong types and unknown keys by their full path.
private struct ObjectReader {
  private let object: [String: Any]
  private let path: String
  private var consumed: Set<String> = []

  init(_ value: Any, path: String) throws {
    guard let object = value as? [String: Any] else {
      throw ConfigError(key: path.isEmpty ? "(file)" : path, message: "must be a JSON object")
    }
    self.object = object
    self.path = path
  }

  /// The keys of the object, sorted (for maps keyed by data, such as currency codes).
  var keys: [String] { self.object.keys.sorted() }

  private func key(_ name: String) -> String { self.path.isEmpty ? name : "\(self.path).\(name)" }

  private mutating func value(_ name: String) throws -> Any {
    guard let value = try self.optionalValue(name) else {
      throw ConfigError(key: self.key(name), message: "is required")
    }
    return value
  }

  private mutating func optionalValue(_ name: String) throws -> Any? {
    self.consumed.insert(name)
    guard let value = self.object[name], !(value is NSNull) else { return nil }
    return value
  }

  mutating func string(_ name: String) throws -> String {
    guard let value = try self.value(name) as? String else {
      throw ConfigError(key: self.key(name), message: "must be a string")
    }
    return value
  }

  mutating func optionalString(_ name: String) throws -> String? {
    guard let value = try self.optionalValue(name) else { return nil }
    guard let string = value as? String else { throw ConfigError(key: self.key(name), message: "must be a string") }
    return string
  }

  mutating func optionalInt(_ name: String) throws -> Int? {
    guard let value = try self.optionalValue(name) else { return nil }
    // JSONSerialization gives NSNumber; refuse booleans and fractions.
    guard let number = value as? NSNumber, String(cString: number.objCType) != "c",
      let integer = Int(exactly: number.doubleValue), Double(integer) == number.doubleValue
    else {
      throw ConfigError(key: self.key(name), message: "must be an integer")
    }
    return integer
  }

  mutating func optionalDouble(_ name: String) throws -> Double? {
    guard let value = try self.optionalValue(name) else { return nil }
    guard let number = value as? NSNumber, String(cString: number.objCType) != "c" else {
      throw ConfigError(key: self.key(name), message: "must be a number")
    }
    return number.doubleValue
  }

  mutating func optionalBool(_ name: String) throws -> Bool? {
    guard let value = try self.optionalValue(name) else { return nil }
    guard let number = value as? NSNumber, String(cString: number.objCType) == "c" else {
      throw ConfigError(key: self.key(name), message: "must be true or false")
    }
    return number.boolValue
  }

  mutating func object(_ name: String) throws -> ObjectReader {
    try ObjectReader(try self.value(name), path: self.key(name))
  }

  mutating func optionalObject(_ name: String) throws -> ObjectReader? {
    guard let value = try self.optionalValue(name) else { return nil }
    return try ObjectReader(value, path: self.key(name))
  }

  mutating func optionalArray(_ name: String) throws -> [Any]? {
    guard let value = try self.optionalValue(name) else { return nil }
    guard let array = value as? [Any] else { throw ConfigError(key: self.key(name), message: "must be a JSON array") }
    return array
  }

  mutating func array(_ name: String) throws -> [Any] {
    guard let value = try self.value(name) as? [Any] else {
      throw ConfigError(key: self.key(name), message: "must be a JSON array")
    }
    return value
  }

  /// Fails on the first key that was never read: a misspelt key must not be silently ignored.
  func finish() throws {
    let unknown = Set(self.object.keys).subtracting(self.consumed).sorted()
    if let first = unknown.first {
      let known = self.consumed.sorted().joined(separator: ", ")
      throw ConfigError(key: self.key(first), message: "unknown key (known keys here: \(known))")
    }
  }
}
