import BankLinkBanks
import BankLinkCore
import BankLinkDaemon
import BankLinkFormats
import BankLinkPKI
import BankLinkTestSupport
import Foundation
import BankLinkServer
import Logging
import Testing

@Suite("Daemon configuration")
struct ConfigurationTests {
  static let valid = """
    {
      "listen": "127.0.0.1:9443",
      "data_dir": "data",
      "tls": { "ca": "tls/ca.pem", "certificate": "/etc/banklink/server.pem", "key": "tls/server.key" },
      "storage": { "map_size_mib": 4096, "writer_cpus": [1, 0] },
      "log_level": "notice",
      "principals": [
        { "identity": "erp", "roles": ["payer"] },
        { "identity": "spiffe://corp.example/alice", "roles": ["approver", "viewer"] }
      ]
    }
    """

  static func parse(_ text: String) throws -> DaemonConfiguration {
    try DaemonConfiguration.parse(json: Data(text.utf8), baseDirectory: "/srv/banklink")
  }

  /// Parses `text` and returns the error, which must be a ConfigError.
  static func failure(_ text: String) -> ConfigError? {
    #expect(throws: ConfigError.self) { try parse(text) }
  }

  static func replacing(_ old: String, with new: String) -> String {
    precondition(valid.contains(old), "test fixture does not contain \(old)")
    return valid.replacingOccurrences(of: old, with: new)
  }

  @Test("a complete file parses, with relative paths resolved against its directory")
  func parsesValidFile() throws {
    let configuration = try Self.parse(Self.valid)
    #expect(configuration.listen.description == "127.0.0.1:9443")
    #expect(configuration.dataDirectory == "/srv/banklink/data")
    #expect(configuration.tls.caPath == "/srv/banklink/tls/ca.pem")
    #expect(configuration.tls.certificatePath == "/etc/banklink/server.pem")
    #expect(configuration.storage.mapSizeMiB == 4096)
    #expect(configuration.storage.writerCPUs == [1, 0])
    #expect(configuration.logLevel == .notice)
    #expect(configuration.principals.count == 2)
    #expect(configuration.principals[1].roles == [.approver, .viewer])
  }

  @Test("errors name the key at fault", arguments: [
    (#""listen": "127.0.0.1:9443""#, #""listen": "127.0.0.1:9443", "listn": "x""#, "listn"),
    (#""key": "tls/server.key""#, #""key": "tls/server.key", "cert": "x""#, "tls.cert"),
    (#""listen": "127.0.0.1:9443""#, #""listen": 9443"#, "listen"),
    (#""listen": "127.0.0.1:9443""#, #""listen": "banklink.example:9443""#, "listen"),
    (#""listen": "127.0.0.1:9443""#, #""listen": "127.0.0.1:70000""#, "listen"),
    (#""map_size_mib": 4096"#, #""map_size_mib": 0"#, "storage.map_size_mib"),
    (#""map_size_mib": 4096"#, #""map_size_mib": "big""#, "storage.map_size_mib"),
    (#""map_size_mib": 4096"#, #""map_size_mib": 1.5"#, "storage.map_size_mib"),
    (#""map_size_mib": 4096"#, #""map_size_mib": 4096, "group_commit": "yes""#, "storage.group_commit"),
    (#""writer_cpus": [1, 0]"#, #""writer_cpus": 1"#, "storage.writer_cpus"),
    (#""writer_cpus": [1, 0]"#, #""writer_cpus": [1, -1]"#, "storage.writer_cpus[1]"),
    (#""writer_cpus": [1, 0]"#, #""writer_cpus": [1024]"#, "storage.writer_cpus[0]"),
    (#""writer_cpus": [1, 0]"#, #""writer_cpus": [1, 1]"#, "storage.writer_cpus[1]"),
    (#""writer_cpus": [1, 0]"#, #""writer_cpus": ["1"]"#, "storage.writer_cpus[0]"),
    (#""log_level": "notice""#, #""log_level": "loud""#, "log_level"),
    (#""roles": ["approver", "viewer"]"#, #""roles": ["approver", "superuser"]"#, "principals[1].roles[1]"),
    (#""identity": "erp""#, #""identity": """#, "principals[0].identity"),
    (#""identity": "erp""#, #""identity": "spiffe://corp.example/alice""#, "principals[1].identity"),
    (#""data_dir": "data","#, "", "data_dir"),
  ])
  func namesTheKey(old: String, new: String, key: String) {
    let error = Self.failure(Self.replacing(old, with: new))
    #expect(error?.key == key, "\(String(describing: error))")
  }

  @Test("connector and sync settings parse, and their errors name the key", arguments: [
    (#""connector": {"type": "swift"}"#, "connector.type"),
    (#""connector": {"error_rate": 1.5}"#, "connector.error_rate"),
    (#""connector": {"timeout_rate": "often"}"#, "connector.timeout_rate"),
    (#""connector": {"outage": "yes"}"#, "connector.outage"),
    (#""connector": {"latency_ms": -1}"#, "connector.latency_ms"),
    (#""connector": {"history_days": 1000}"#, "connector.history_days"),
    (#""connector": {"speed": 1}"#, "connector.speed"),
    (#""sync": {"interval_ms": 10}"#, "sync.interval_ms"),
    (#""sync": {"interval_ms": 300000000}"#, "sync.interval_ms"),
    (#""connector": {"activity_interval_ms": 86400001}"#, "connector.activity_interval_ms"),
    (#""payments": {"submit_interval_ms": 300000000}"#, "payments.submit_interval_ms"),
    (#""payments": {"approval_threshold_minor": 100}"#, "payments.approval_threshold_minor"),
    (#""payments": {"approval_threshold_major": -1}"#, "payments.approval_threshold_major"),
    (#""payments": {"submit_interval_ms": 1}"#, "payments.submit_interval_ms"),
    (#""payments": {"auto_approve": true}"#, "payments.auto_approve"),
    (#""connections": {"max_total": 0}"#, "connections.max_total"),
    (#""connections": {"max_total": 10, "max_per_address": 11}"#, "connections.max_per_address"),
    (#""connections": {"handshake_timeout_ms": 0}"#, "connections.handshake_timeout_ms"),
    (#""connections": {"max_buffered_bytes": 1024}"#, "connections.max_buffered_bytes"),
    (#""connections": {"drain_timeout_ms": 60000}"#, "connections.drain_timeout_ms"),
    (#""connections": {"max_streams": 10}"#, "connections.max_streams"),
    (#""reconciliation": {"fee_tolerance_minor": -1}"#, "reconciliation.fee_tolerance_minor"),
    (#""reconciliation": {"date_window_days": 400}"#, "reconciliation.date_window_days"),
    (#""reconciliation": {"minimum_score": 0}"#, "reconciliation.minimum_score"),
    (#""reconciliation": {"fee_tolerance": 10}"#, "reconciliation.fee_tolerance"),
  ])
  func connectorErrors(fragment: String, key: String) {
    let error = Self.failure(Self.replacing(#""log_level": "notice""#, with: #""log_level": "notice", "# + fragment))
    #expect(error?.key == key, "\(String(describing: error))")
  }

  @Test("connector.type files: directories, accounts and the simulated bank are read; mistakes name their key")
  func filesConnector() throws {
    let files = try #require(
      try Self.parse(Self.replacing(#""log_level": "notice""#, with: #""log_level": "notice", "connector": {"type": "files", "files": {"outbox": "h2h/out", "inbox": "/var/h2h/in", "settle_ms": 0, "pain_version": "pain.001.001.09", "accounts": [{"id": "acme-cny-001", "number": "4402 1234 5678", "currency": "CNY", "bic": "ICBKCNBJ"}]}}"#)).connector.files)
    #expect(files.outbox == "/srv/banklink/h2h/out" && files.inbox == "/var/h2h/in")
    #expect(files.settleMilliseconds == 0 && files.pollIntervalMilliseconds == 1_000 && files.painVersion == .v09)
    #expect(files.accounts.map(\.id) == ["acme-cny-001"] && files.accounts.first?.currency.code == "CNY")
    #expect(!files.simulateBank)
    #expect(try Self.parse(Self.valid).connector.files == nil)

    func refusal(_ connector: String) -> String? {
      Self.failure(Self.replacing(#""log_level": "notice""#, with: #""log_level": "notice", "connector": \#(connector)"#))?.key
    }
    #expect(refusal(#"{"type": "files"}"#) == "connector.files")
    #expect(refusal(#"{"type": "ftp"}"#) == "connector.type")
    #expect(refusal(#"{"files": {"outbox": "a", "inbox": "b", "simulate_bank": true}}"#) == "connector.files")
    #expect(refusal(#"{"type": "files", "files": {"outbox": "a", "inbox": "b"}}"#) == "connector.files.accounts")
    #expect(refusal(#"{"type": "files", "files": {"outbox": "a", "inbox": "a", "simulate_bank": true}}"#) == "connector.files.inbox")
    #expect(refusal(#"{"type": "files", "files": {"outbox": "a", "inbox": "b", "simulate_bank": true, "pain_version": "pain.001.001.02"}}"#) == "connector.files.pain_version")
    #expect(refusal(#"{"type": "files", "files": {"outbox": "a", "inbox": "b", "simulate_bank": true, "poll_ms": 5}}"#) == "connector.files.poll_ms")
    #expect(refusal(#"{"type": "files", "files": {"outbox": "a", "inbox": "b", "accounts": [{"id": "x", "currency": "CNY"}]}}"#) == "connector.files.accounts[0]")
  }

  @Test("the README's file-connector configuration (docs/examples/banklinkd-files.json) is valid")
  func filesExample() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    let configuration = try DaemonConfiguration.load(file: root + "/docs/examples/banklinkd-files.json")
    let files = try #require(configuration.connector.files)
    #expect(files.simulateBank && files.accounts.isEmpty)
    #expect(files.inbox.hasSuffix("var-files/h2h/inbox"))
  }

  @Test("reconciliation settings are read from the file; defaults otherwise")
  func reconciliationSettings() throws {
    let defaults = try Self.parse(Self.replacing(#""log_level": "notice""#, with: #""log_level": "notice""#))
    #expect(defaults.reconciliation == ReconciliationSettings())
    let configuration = try Self.parse(Self.replacing(#""log_level": "notice""#, with: """
      "log_level": "notice", "reconciliation": {"fee_tolerance_minor": 2500, "date_window_days": 5, "minimum_score": 700, "ambiguity_margin": 50}
      """))
    #expect(configuration.reconciliation.feeToleranceMinor == 2500)
    #expect(configuration.reconciliation.dateWindowDays == 5)
    #expect(configuration.reconciliation.minimumScore == 700)
    #expect(configuration.reconciliation.ambiguityMargin == 50)
  }

  @Test("connection limits and the TLS policy are read from the file")
  func connectionSettings() throws {
    let configuration = try Self.parse(Self.replacing(#""log_level": "notice""#, with: """
      "log_level": "notice", "connections": {"max_total": 50, "max_per_address": 5, "handshake_timeout_ms": 2000,
        "idle_timeout_ms": 60000, "max_buffered_bytes": 33554432, "message_timeout_ms": 5000, "drain_timeout_ms": 3000}
      """).replacingOccurrences(of: #""key": "tls/server.key""#, with: #""key": "tls/server.key", "trust_domain": "corp.example", "minimum_version": "1.3""#))
    #expect(configuration.connections.maxConnections == 50)
    #expect(configuration.connections.maxConnectionsPerAddress == 5)
    #expect(configuration.connections.handshakeTimeoutMilliseconds == 2000)
    #expect(configuration.connections.idleTimeoutMilliseconds == 60000)
    #expect(configuration.connections.maxBufferedBytesPerConnection == 33_554_432)
    #expect(configuration.connections.messageReceiveTimeoutMilliseconds == 5000)
    #expect(configuration.connections.drainTimeoutMilliseconds == 3000)
    #expect(configuration.tls.trustDomain == "corp.example")
    #expect(configuration.tls.minimumVersion == .tls13)
    // Defaults: SPEC.md's TLS 1.2 minimum, no trust domain, the Limits.swift values.
    let defaults = try Self.parse(Self.valid)
    #expect(defaults.tls.minimumVersion == .tls12)
    #expect(defaults.tls.trustDomain == nil)
    #expect(defaults.connections == .standard)
  }

  static let examplePolicy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("docs/examples/approval-policy.json").path

  @Test("an approval policy file is read and checked at start; its problems name the key and the field")
  func approvalPolicyFile() async throws {
    let configuration = try Self.parse(Self.replacing(
      #""log_level": "notice""#, with: #""log_level": "notice", "payments": {"approval_policy_file": "\#(Self.examplePolicy)"}"#))
    let policy = try #require(configuration.payments.approvalPolicy)
    #expect(policy.rules.map(\.id) == ["large-cny", "medium"])
    #expect(policy.rules[0].requirement.levels[1].principals == ["bob"])

    try await withTemporaryDirectory { directory in
      let bad = directory.appending("policy.json")
      try Data(#"{"rules": [{"id": "x", "match": {}, "requirement": {"levels": [{"required_approvals": 0, "roles": ["ROLE_APPROVER"]}], "approval_window_seconds": "3600"}}]}"#.utf8)
        .write(to: URL(fileURLWithPath: bad))
      let error = Self.failure(Self.replacing(
        #""log_level": "notice""#, with: #""log_level": "notice", "payments": {"approval_policy_file": "\#(bad)"}"#))
      #expect(error?.key == "payments.approval_policy_file")
      #expect(error?.message.contains("policy.rules[0].requirement.levels[0].required_approvals") == true, "\(String(describing: error))")
      try Data("not json".utf8).write(to: URL(fileURLWithPath: bad))
      let notJSON = Self.failure(Self.replacing(
        #""log_level": "notice""#, with: #""log_level": "notice", "payments": {"approval_policy_file": "\#(bad)"}"#))
      #expect(notJSON?.key == "payments.approval_policy_file")
    }
  }

  @Test("TLS policy errors name the key", arguments: [
    (#""trust_domain": "Corp.Example""#, "tls.trust_domain"),
    (#""trust_domain": """#, "tls.trust_domain"),
    (#""minimum_version": "1.1""#, "tls.minimum_version"),
    (#""minimum_version": 1.3"#, "tls.minimum_version"),
    (#""crl_file": """#, "tls.crl_file"),
    (#""crl_file": 7"#, "tls.crl_file"),
  ])
  func tlsPolicyErrors(fragment: String, key: String) {
    let error = Self.failure(Self.replacing(#""key": "tls/server.key""#, with: #""key": "tls/server.key", "# + fragment))
    #expect(error?.key == key, "\(String(describing: error))")
  }

  @Test("simulator faults and sync interval are read from the file")
  func connectorSettings() throws {
    let configuration = try Self.parse(Self.replacing(
      #""log_level": "notice""#,
      with: #""log_level": "notice", "connector": {"type": "simulator", "seed": 9, "history_days": 7, "latency_ms": 20, "jitter_ms": 5, "error_rate": 0.1, "timeout_rate": 0.05, "outage": true, "activity_interval_ms": 0}, "sync": {"interval_ms": 250}"#
    ))
    let simulator = configuration.connector.simulator
    #expect(simulator.seed == 9)
    #expect(simulator.historyDays == 7)
    #expect(simulator.activityIntervalMilliseconds == 0)
    #expect(simulator.faults == .init(latencyMilliseconds: 20, jitterMilliseconds: 5, errorRate: 0.1, timeoutRate: 0.05, outage: true))
    #expect(configuration.sync.intervalMilliseconds == 250)
  }

  @Test("a file that is not a JSON object is refused")
  func notJSON() {
    #expect(Self.failure("listen = 1")?.key == "(file)")
    #expect(Self.failure("[1, 2]")?.key == "(file)")
  }

  @Test("TLS files are checked at start, naming the key")
  func checksTLSFiles() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let file = directory.appending("banklinkd.json")
      func write(ca: String) throws {
        let text = """
          {"listen": "127.0.0.1:0", "data_dir": "data",
           "tls": {"ca": "\(ca)", "certificate": "server.pem", "key": "server.key"},
           "principals": []}
          """
        try Data(text.utf8).write(to: URL(fileURLWithPath: file))
      }
      try write(ca: "ca.pem")
      let configuration = try DaemonConfiguration.resolve(file: file, environment: [:])
      #expect(configuration.tls.caPath == pki.caPath)

      try write(ca: "missing.pem")
      let missing = #expect(throws: ConfigError.self) { try DaemonConfiguration.resolve(file: file, environment: [:]) }
      #expect(missing?.key == "tls.ca")

      try write(ca: "server.key")
      let wrongKind = #expect(throws: ConfigError.self) { try DaemonConfiguration.resolve(file: file, environment: [:]) }
      #expect(wrongKind?.key == "tls.ca")
      #expect(wrongKind?.message.contains("BEGIN CERTIFICATE") == true)
    }
  }

  @Test("environment overrides the file and flags override the environment")
  func overrides() async throws {
    try await withTemporaryDirectory { directory in
      _ = try TestPKI(directory: directory)
      let file = directory.appending("banklinkd.json")
      try Data("""
        {"listen": "127.0.0.1:1", "data_dir": "data",
         "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"}, "principals": []}
        """.utf8).write(to: URL(fileURLWithPath: file))
      let environment = ["BANKLINK_LISTEN": "[::1]:2", "BANKLINK_DATA_DIR": "/tmp/env-data"]

      let fromEnvironment = try DaemonConfiguration.resolve(file: file, environment: environment)
      #expect(fromEnvironment.listen.description == "[::1]:2")
      #expect(fromEnvironment.dataDirectory == "/tmp/env-data")

      let fromFlags = try DaemonConfiguration.resolve(
        file: file,
        environment: environment,
        overrides: .init(listen: "127.0.0.1:3", dataDirectory: "/tmp/flag-data")
      )
      #expect(fromFlags.listen.description == "127.0.0.1:3")
      #expect(fromFlags.dataDirectory == "/tmp/flag-data")

      let badEnvironment = #expect(throws: ConfigError.self) {
        try DaemonConfiguration.resolve(file: file, environment: ["BANKLINK_LISTEN": "nowhere"])
      }
      #expect(badEnvironment?.key == "BANKLINK_LISTEN")
    }
  }

  @Test("development mode uses the development PKI and says how to create it when missing")
  func developmentMode() async throws {
    try await withTemporaryDirectory { directory in
      let missing = #expect(throws: ConfigError.self) {
        try DaemonConfiguration.resolve(file: nil, environment: [:], developmentRoot: directory.path)
      }
      #expect(missing?.key == "tls.ca")
      #expect(missing?.message.contains("make certs") == true)

      try DevelopmentPKI.write(to: directory.appending("certs/dev"))
      let configuration = try DaemonConfiguration.resolve(file: nil, environment: [:], developmentRoot: directory.path)
      #expect(configuration.listen.description == "127.0.0.1:7443")
      #expect(configuration.dataDirectory == directory.appending("var"))
      #expect(Set(configuration.principals.map(\.identity)) == ["admin", "erp", "alice", "bob", "viewer", "auditor", "clerk"])
    }
  }
}

@Suite("Shipped configuration")
struct ShippedConfigurationTests {
  @Test("systemd/banklinkd.example.json parses")
  func exampleParses() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent()
    let data = try Data(contentsOf: root.appendingPathComponent("systemd/banklinkd.example.json"))
    let configuration = try DaemonConfiguration.parse(json: data, baseDirectory: "/etc/banklink")
    #expect(configuration.dataDirectory == "/var/lib/banklink")
    #expect(configuration.principals.contains { $0.identity == "treasury-admin" && $0.roles == [.admin] })
  }
}
