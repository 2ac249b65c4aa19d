import BankLinkCore
import BankLinkServer
import BankLinkStore
import Foundation
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// The daemon's metrics in the Prometheus text format, on a listener of their own
/// (`metrics.listen`; off unless configured): what swift-metrics recorded (RPCs, group commits)
/// plus gauges sampled at each scrape (LMDB map use and reader slots, outbox depth, open
/// connections, resident memory, alerts raised). docs/operations.md lists every name.
public final class MetricsExporter: Sendable {
  let registry: PrometheusCollectorRegistry
  let store: Store
  let server: GatewayServer
  let mapSize: Prometheus.Gauge
  let mapUsed: Prometheus.Gauge
  let readersUsed: Prometheus.Gauge
  let readersMax: Prometheus.Gauge
  let outboxDepth: Prometheus.Gauge
  let outboxOldestAge: Prometheus.Gauge
  let connections: Prometheus.Gauge
  let residentMemory: Prometheus.Gauge
  let fastPathAnswered: Prometheus.Gauge
  let alerts: Prometheus.Gauge

  /// Creates the registry and makes it swift-metrics' backend (once per process).
  public init(store: Store, server: GatewayServer) {
    let registry = PrometheusCollectorRegistry()
    var factory = PrometheusMetricsFactory(registry: registry)
    // RPC latency buckets from 100 µs to 10 s; group commit batch sizes up to the batch limit.
    factory.defaultDurationHistogramBuckets = [
      .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5),
      .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
      .seconds(1), .seconds(2.5), .seconds(10),
    ]
    factory.defaultValueHistogramBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    MetricsSystem.bootstrap(factory)
    self.registry = registry
    self.store = store
    self.server = server
    self.mapSize = registry.makeGauge(name: "banklink_lmdb_map_size_bytes", help: "LMDB map size (storage.map_size_mib)")
    self.mapUsed = registry.makeGauge(name: "banklink_lmdb_map_used_bytes", help: "LMDB pages in use, in bytes")
    self.readersUsed = registry.makeGauge(name: "banklink_lmdb_readers_used", help: "LMDB reader slots taken")
    self.readersMax = registry.makeGauge(name: "banklink_lmdb_readers_max", help: "LMDB reader slots in all")
    self.outboxDepth = registry.makeGauge(name: "banklink_outbox_depth", help: "Payment submissions waiting for the bank")
    self.outboxOldestAge = registry.makeGauge(
      name: "banklink_outbox_oldest_age_seconds", help: "Age of the oldest payment submission waiting for the bank (0 when none)")
    self.connections = registry.makeGauge(name: "banklink_open_connections", help: "Client connections open")
    self.residentMemory = registry.makeGauge(name: "banklink_process_resident_memory_bytes", help: "Resident set size")
    self.fastPathAnswered = registry.makeGauge(
      name: "banklink_rpc_fast_path_answered", help: "Calls the unary fast path answered since start (a running count)")
    self.alerts = registry.makeGauge(name: "banklink_alerts_raised", help: "Alerts raised since the data directory was created")
  }

  /// Samples the gauges, then renders everything.
  public func exposition() -> [UInt8] {
    let usage = self.store.usage()
    self.mapSize.set(Double(usage.mapSizeBytes))
    self.mapUsed.set(Double(usage.usedBytes))
    self.readersUsed.set(Double(usage.readersUsed))
    self.readersMax.set(Double(usage.readersMax))
    let now = WallClock.now()
    if let (depth, alerts, oldest) = try? self.store.withReadTransaction({ txn in
      (try txn.count(.outbox), try AlertLog.head(txn), try PaymentLedger.oldestOutboxEntryTime(in: txn))
    }) {
      self.outboxDepth.set(Double(depth))
      self.alerts.set(Double(alerts))
      self.outboxOldestAge.set(oldest.map { Self.seconds(from: $0, to: now) } ?? 0)
    }
    // Per account: how long since its balance was last heard from the bank.
    for account in (try? self.server.accountFreshness()) ?? [] {
      guard let syncedAt = account.syncedAt else { continue }
      self.registry.makeGauge(
        name: "banklink_sync_lag_seconds", labels: [("account", account.accountID), ("bank", account.bankBIC)],
        help: "Seconds since the account's balance was last synced from the bank"
      ).set(Self.seconds(from: syncedAt, to: now))
    }
    self.connections.set(Double(self.server.admission.openConnections))
    self.residentMemory.set(Double(Self.residentBytes()))
    self.fastPathAnswered.set(Double(self.server.fastPathAnswered))
    var buffer: [UInt8] = []
    buffer.reserveCapacity(16 * 1024)
    self.registry.emit(into: &buffer)
    return buffer
  }

  static func seconds(from start: Instant, to end: Instant) -> Double {
    Double(max(0, end.millisecondsSinceEpoch - start.millisecondsSinceEpoch)) / 1000
  }

  /// Resident set size from /proc/self/statm (pages × page size).
  static func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
  }
}

/// Serves `GET /metrics` over plain HTTP/1.1 on `metrics.listen` until graceful shutdown. Keep it
/// on loopback or a management network: it is not authenticated (it holds no payment data, but
/// method names and volumes).
public struct MetricsService: Service {
  let listen: ListenAddress
  let exporter: MetricsExporter
  let logger: Logger

  public init(listen: ListenAddress, exporter: MetricsExporter, logger: Logger) {
    self.listen = listen
    self.exporter = exporter
    self.logger = logger
  }

  public func run() async throws {
    let exporter = self.exporter
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        channel.pipeline.configureHTTPServerPipeline().flatMap {
          channel.pipeline.addHandler(MetricsHTTPHandler(exporter: exporter))
        }
      }
      .bind(host: self.listen.host, port: self.listen.port)
      .get()
    self.logger.info("metrics listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "-")"])
    try? await gracefulShutdown()
    try? await channel.close()
  }
}

final class MetricsHTTPHandler: ChannelInboundHandler, Sendable {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  let exporter: MetricsExporter

  init(exporter: MetricsExporter) { self.exporter = exporter }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard case .head(let request) = self.unwrapInboundIn(data) else { return }
    let found = request.method == .GET && (request.uri == "/metrics" || request.uri.hasPrefix("/metrics?"))
    let body: [UInt8] = found ? self.exporter.exposition() : Array("not found; the metrics are at /metrics\n".utf8)
    var headers = HTTPHeaders()
    headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8")
    headers.add(name: "Content-Length", value: String(body.count))
    headers.add(name: "Connection", value: "close")
    context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: found ? .ok : .notFound, headers: headers))), promise: nil)
    context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
    context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
  }
}
