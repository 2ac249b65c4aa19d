import BankLinkDaemon
import BankLinkTestSupport
import Foundation
import Testing

/// The Prometheus endpoint of a real daemon, read by a real parser (Python prometheus_client,
/// Debian's python3-prometheus-client).
@Suite("Metrics")
struct MetricsTests {
  /// A port free on 127.0.0.1 now (the kernel's choice for port 0).
  static func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw POSIXError(.EADDRINUSE) }
    return Int(UInt16(bigEndian: address.sin_port))
  }

  static let parser = """
    import json, sys, urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
    print(json.dumps({f.name: {"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
                      for f in text_string_to_metric_families(text)}))
    """

  struct Family: Decodable {
    var type: String
    var samples: [Sample]
  }

  struct Sample: Decodable {
    var name: String
    var labels: [String: String]
    var value: Double

    init(from decoder: any Decoder) throws {
      var container = try decoder.unkeyedContainer()
      self.name = try container.decode(String.self)
      self.labels = try container.decode([String: String].self)
      self.value = try container.decode(Double.self)
    }
  }

  @Test("metrics.listen serves the Prometheus text format: RPCs by method and code with latencies, commits, LMDB, connections, memory")
  func scrape() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let admin = try pki.client(commonName: "admin")
      let viewer = try pki.client(commonName: "viewer")
      let erp = try pki.client(commonName: "erp")
      let metricsPort = try Self.freePort()
      let config = directory.appending("banklinkd.json")
      try Data("""
        {"listen": "127.0.0.1:0", "data_dir": "data", "connector": {"history_days": 1},
         "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
         "metrics": {"listen": "127.0.0.1:\(metricsPort)"},
         "principals": [{"identity": "admin", "roles": ["admin"]}, {"identity": "viewer", "roles": ["viewer"]},
                        {"identity": "erp", "roles": ["payer"]}]}
        """.utf8).write(to: URL(fileURLWithPath: config))
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let daemon = try await RunningDaemon.start(config: config, socket: socket, logLevel: "warning")
      defer { if daemon.process.isRunning { daemon.process.terminate() } }

      for _ in 0..<3 {
        let call = try await offPool { try runProgram(Binaries.cli, ["whoami"], environment: cliEnvironment(port: daemon.port, caPath: pki.caPath, identity: admin)) }
        #expect(call.status == 0, "\(call.stderr)")
      }
      // A small payment: created, cleared by risk, claimed and submitted to the bank.
      let paid = try await offPool {
        try runProgram(
          Binaries.cli,
          [
            "pay", "--from", "icbc-cny-001", "--to-name", "Shanghai Huaxin Trading Co., Ltd.", "--to-account", "3100 2011 0904 0012 345",
            "--to-bic", "CMBCCNBS", "--to-country", "CN", "--amount", "15.00", "--currency", "CNY", "--purpose", "INV-1",
            "--idempotency-key", "metrics-1",
          ], environment: cliEnvironment(port: daemon.port, caPath: pki.caPath, identity: erp))
      }
      #expect(paid.status == 0, "\(paid.stderr)")
      // A call authorization refuses is counted with its code.
      let denied = try await offPool {
        try runProgram(Binaries.cli, ["audit", "verify"], environment: cliEnvironment(port: daemon.port, caPath: pki.caPath, identity: viewer))
      }
      #expect(denied.status != 0)
      // A reload refused (the file no longer parses) raises a configuration_refused alert.
      try Data("{ not json".utf8).write(to: URL(fileURLWithPath: config))
      while socket.receive(timeoutSeconds: 0) != nil {}
      kill(daemon.process.processIdentifier, SIGHUP)
      var refusedStatus: String?
      while refusedStatus == nil, let message = await socket.next(timeoutSeconds: 30) {
        if message.contains("reload refused") { refusedStatus = message }
      }
      #expect(refusedStatus != nil, "the daemon did not report the refused reload")

      let scraped = try await offPool {
        try runProgram("/usr/bin/python3", ["-c", Self.parser, "http://127.0.0.1:\(metricsPort)/metrics"])
      }
      #expect(scraped.status == 0, "the exposition parses: \(scraped.stderr)")
      let families = try JSONDecoder().decode([String: Family].self, from: Data(scraped.stdout.utf8))

      let requests = try #require(families["banklink_rpc_requests"], "\(families.keys.sorted())")
      #expect(requests.type == "counter")
      let whoami = requests.samples.first { $0.labels["method"] == "banklink.v1.AdminService/WhoAmI" && $0.labels["code"] == "OK" }
      #expect((whoami?.value ?? 0) >= 3)
      #expect(requests.samples.contains { $0.labels["code"] == "PERMISSION_DENIED" && $0.value >= 1 }, "\(requests.samples.map(\.labels))")
      #expect(families["banklink_rpc_duration_seconds"]?.type == "histogram")
      #expect(families["banklink_store_commit_duration_seconds"]?.type == "histogram")
      #expect(families["banklink_store_commit_batch_size"]?.type == "histogram")
      for gauge in ["banklink_lmdb_map_used_bytes", "banklink_lmdb_map_size_bytes", "banklink_lmdb_readers_max", "banklink_process_resident_memory_bytes"] {
        #expect((families[gauge]?.samples.first?.value ?? 0) > 0, "\(gauge)")
      }
      #expect(families["banklink_open_connections"] != nil && families["banklink_outbox_depth"] != nil && families["banklink_alerts_raised"] != nil)
      // Payments by state change (counted once committed), from "new" on.
      let transitions = try #require(families["banklink_payment_transitions"], "\(families.keys.sorted())")
      #expect(transitions.type == "counter")
      #expect(transitions.samples.contains { $0.labels["from"] == "new" && $0.value >= 1 }, "\(transitions.samples.map(\.labels))")
      #expect(families["banklink_outbox_oldest_age_seconds"]?.type == "gauge")
      // Sync lag, per account and bank, for every account the simulator offers.
      let lag = try #require(families["banklink_sync_lag_seconds"])
      #expect(lag.samples.contains { $0.labels["account"] == "icbc-cny-001" && !($0.labels["bank"] ?? "").isEmpty && $0.value < 600 })
      let alerts = try #require(families["banklink_alerts"], "alerts by kind")
      #expect(alerts.samples.contains { $0.labels["kind"] == "configuration_refused" && $0.labels["severity"] == "critical" && $0.value == 1 })

      // The shipped dashboard and alerting rules use only names the daemon exports.
      let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs")
      for file in ["grafana-dashboard.json", "prometheus-alerts.yml"] {
        let text = try String(contentsOf: docs.appendingPathComponent(file), encoding: .utf8)
        let names = Set(text.matches(of: /banklink_[a-z0-9_]+/).map { String($0.output) })
        #expect(!names.isEmpty)
        for name in names {
          var family = name
          for suffix in ["_bucket", "_sum", "_count", "_total"] where family.hasSuffix(suffix) { family.removeLast(suffix.count) }
          #expect(families[family] != nil, "\(file) uses \(name), which the daemon does not export")
        }
      }

      let missing = try await offPool {
        try runProgram("/usr/bin/python3", ["-c", "import urllib.request,sys\ntry:\n urllib.request.urlopen(sys.argv[1])\nexcept Exception as e: print(e)", "http://127.0.0.1:\(metricsPort)/other"])
      }
      #expect(missing.stdout.contains("404"))
    }
  }
}
