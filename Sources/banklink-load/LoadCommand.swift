import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkPKI
import BankLinkProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf
import Synchronization
import X509

/// `banklink-load`: a closed-loop load generator over mutual TLS, kept apart from the admin CLI
/// (`banklink`) so that the admin tool carries no load-testing code.
struct LoadCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "banklink-load",
    abstract: "Drive the daemon with concurrent calls and report throughput and latency percentiles.",
    discussion: """
      Scenarios: noop (WhoAmI: authorization and transport only, the ceiling), balance
      (GetBalance over random accounts, from the cache), pay (CreatePayment of 1.00 CNY from
      icbc-cny-001 with a fresh idempotency key per call: a durable write; needs a payer
      certificate), approve (ApprovePayment, each call on its own payment: --prepare payments are
      created first as the payer of --payer-cert/--payer-key, then approved with a signature by
      the connection's key; needs an approver certificate and a policy that holds the payments
      for one approver; grpc-swift driver only), alerts (alert fan-out: --subscribers live
      SubscribeAlerts streams and --stalled ones that never read, as the connection's principal,
      while the payer of --payer-cert/--payer-key creates --rate payments per second that the
      daemon's rules turn into one alert each; reports the time from each alert's timestamp to
      its arrival at every live subscriber; grpc-swift driver only). Each of --concurrency workers issues
      calls back to back over one of --connections connections for --duration seconds after a
      warm-up. Run it against a release build (make bench) for figures worth recording.
      Connection settings as for banklink (flags, else BANKLINK_* variables, else certs/dev).

      Drivers: h2 (default) writes each call as raw HTTP/2 frames from an event-loop handler, so
      the generator costs little CPU per call and the latency measured is the daemon's;
      grpc-swift uses the full gRPC client (as an application would), for comparison.
      """
  )

  enum Scenario: String, ExpressibleByArgument, CaseIterable {
    case noop, balance, pay, approve, alerts
  }

  enum Driver: String, ExpressibleByArgument, CaseIterable {
    case h2
    case grpcSwift = "grpc-swift"
  }

  @OptionGroup var connection: ConnectionOptions

  @Option(help: "noop, balance, pay, approve or alerts.")
  var scenario: Scenario = .noop

  @Option(help: "h2 (lean HTTP/2 frames) or grpc-swift (the full gRPC client).")
  var driver: Driver = .h2

  @Option(help: "Measured seconds.")
  var duration = 10.0

  @Option(help: "Unmeasured seconds before measuring.")
  var warmup = 2.0

  @Option(help: "Concurrent calls in flight.")
  var concurrency = 32

  @Option(help: "Client connections the calls are spread over.")
  var connections = 2

  @Option(help: "Stop each worker after this many calls per second in total (0: as fast as possible).")
  var rate = 0.0

  @Option(help: "approve: payments to create before measuring (the run stops early if they run out).")
  var prepare = 20_000

  @Option(help: "alerts: live subscriptions.")
  var subscribers = 1_000

  @Option(help: "alerts: subscriptions that never read after catching up.")
  var stalled = 0

  @Option(help: "alerts: the daemon's process id, to report its CPU per delivery over the measured window (Linux).")
  var serverPID: Int32?

  @Option(help: "approve, alerts: certificate (PEM) of the payer who creates the payments.")
  var payerCert: String?

  @Option(help: "approve, alerts: private key (PEM) of the payer who creates the payments.")
  var payerKey: String?

  func validate() throws {
    guard self.duration > 0, self.duration <= 3600 else { throw ValidationError("--duration must be in (0, 3600]") }
    guard self.warmup >= 0 else { throw ValidationError("--warmup must not be negative") }
    guard (1...4096).contains(self.concurrency) else { throw ValidationError("--concurrency must be 1...4096") }
    guard (1...64).contains(self.connections) else { throw ValidationError("--connections must be 1...64") }
    guard self.rate >= 0 else { throw ValidationError("--rate must not be negative") }
    if self.scenario == .approve {
      guard self.driver == .grpcSwift else { throw ValidationError("--scenario approve needs --driver grpc-swift") }
      guard self.payerCert != nil, self.payerKey != nil else { throw ValidationError("--scenario approve needs --payer-cert and --payer-key") }
      guard (1...1_000_000).contains(self.prepare) else { throw ValidationError("--prepare must be 1...1000000") }
    }
    if self.scenario == .alerts {
      guard self.driver == .grpcSwift else { throw ValidationError("--scenario alerts needs --driver grpc-swift") }
      guard self.payerCert != nil, self.payerKey != nil else { throw ValidationError("--scenario alerts needs --payer-cert and --payer-key") }
      guard self.rate > 0 else { throw ValidationError("--scenario alerts needs --rate (alerts per second)") }
      guard (1...4_096).contains(self.subscribers), (0...1_024).contains(self.stalled) else {
        throw ValidationError("--subscribers must be 1...4096 and --stalled 0...1024")
      }
    }
  }

  func run() async throws {
    if self.scenario == .alerts {
      try await self.runAlerts()
      return
    }
    let result = try await reportingFailures {
      switch self.driver {
      case .grpcSwift:
        let prepared = self.scenario == .approve ? try await self.preparePayments() : []
        return try await withBankLinkClients(self.connection.client, count: self.connections) { clients in
          let accounts = try await self.accountIDs(clients[0])
          let call = try self.makeCall(accounts: accounts, prepared: prepared)
          return try await LoadRun(clients: clients, shape: self.shape, call: call).run()
        }
      case .h2:
        // noop needs no account: no client is opened (one closed before it ran its connections
        // would fail with clientIsStopped).
        let accounts = self.scenario == .noop ? [] : try await withBankLinkClient(self.connection.client) { try await self.accountIDs($0) }
        return try await H2LoadDriver(
          configuration: self.connection.client, connections: self.connections, shape: self.shape,
          nextRequest: try self.makeRequest(accounts: accounts)
        ).run()
      }
    }
    let report = BenchReport(
      scenario: self.scenario.rawValue, concurrency: self.concurrency, connections: self.connections,
      durationSeconds: result.elapsedSeconds, calls: result.latenciesNanoseconds.count, errors: result.errors,
      latenciesNanoseconds: result.latenciesNanoseconds, firstError: result.firstError
    )
    if self.connection.json {
      print(report.json)
    } else {
      print(report.text)
    }
    if report.calls == 0 { throw ExitCode.failure }
  }

  private func runAlerts() async throws {
    var payer = self.connection.client
    payer.certificatePath = self.payerCert ?? payer.certificatePath
    payer.keyPath = self.payerKey ?? payer.keyPath
    let result = try await reportingFailures {
      try await AlertFanout(
        subscriber: self.connection.client, payer: payer, subscribers: self.subscribers, stalled: self.stalled,
        connections: self.connections, shape: self.shape, serverPID: self.serverPID
      ).run()
    }
    let report = BenchReport(
      scenario: "alerts", concurrency: self.subscribers, connections: self.connections, durationSeconds: result.elapsedSeconds,
      calls: result.latenciesNanoseconds.count, errors: result.payErrors + result.subscriberErrors,
      latenciesNanoseconds: result.latenciesNanoseconds, firstError: result.firstError)
    let extra: [(String, String)] = [
      ("stalled", "\(self.stalled)"), ("alerts_raised", "\(result.alertsRaised)"),
      ("alerts_per_s", String(format: "%.1f", Double(result.alertsRaised) / result.elapsedSeconds)),
      ("deliveries_expected", "\(result.deliveriesExpected)"), ("deliveries_missing", "\(result.deliveriesMissing)"),
    ] + [("server_cpu_s", result.serverCPUSeconds), ("client_cpu_s", result.clientCPUSeconds)].compactMap { name, value in
      value.map { (name, String(format: "%.2f", $0)) }
    } + [("server_cpu_s", result.serverCPUSeconds), ("client_cpu_s", result.clientCPUSeconds)].compactMap { name, value in
      // CPU per delivery, µs: what each side pays for one alert reaching one subscriber.
      guard let value, !result.latenciesNanoseconds.isEmpty else { return nil }
      return (name.replacingOccurrences(of: "_cpu_s", with: "_us_per_delivery"), String(format: "%.1f", value * 1e6 / Double(result.latenciesNanoseconds.count)))
    }
    if self.connection.json {
      print(String(report.json.dropLast()) + "," + extra.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}")
    } else {
      print(report.text.replacingOccurrences(of: "concurrency", with: "subscribers"))
      print("alerts       \(result.alertsRaised) raised (\(extra[2].1)/s), \(self.stalled) stalled subscribers")
      print("deliveries   \(result.latenciesNanoseconds.count) of \(result.deliveriesExpected) (\(result.deliveriesMissing) missing); latency is alert time to arrival")
      for (name, value) in extra.dropFirst(5) { print("\(name.padding(toLength: 24, withPad: " ", startingAt: 0)) \(value)") }
    }
    if result.latenciesNanoseconds.isEmpty { throw ExitCode.failure }
  }

  private var shape: LoadShape {
    LoadShape(concurrency: self.concurrency, warmup: self.warmup, duration: self.duration, rate: self.rate)
  }

  private func accountIDs(_ client: GRPCClient<HTTP2ClientTransport.Posix>) async throws -> [String] {
    guard self.scenario != .noop else { return [] }
    let service = Banklink_V1_AccountService.Client(wrapping: client)
    // A freshly started daemon may not have synced yet: wait (bounded) for accounts and balances.
    for _ in 0..<120 {
      let accounts = try await service.listAccounts(.with { $0.pageSize = 1000 }).accounts.map(\.accountID)
      if let first = accounts.first,
        (try? await service.getBalance(.with { $0.accountID = first })) != nil
      {
        return accounts
      }
      try await Task.sleep(for: .milliseconds(250))
    }
    throw ValidationError("the daemon has no synced accounts after 30 s")
  }

  /// The scenario's calls as the h2 driver sends them (the same requests as ``makeCall``).
  private func makeRequest(accounts: [String]) throws -> @Sendable () -> UnaryRequest {
    func path(_ method: MethodDescriptor) -> String { "/" + method.fullyQualifiedMethod }
    switch self.scenario {
    case .noop:
      let request = UnaryRequest(
        path: path(Banklink_V1_AdminService.Method.WhoAmI.descriptor),
        message: try Banklink_V1_WhoAmIRequest().serializedBytes()
      )
      return { request }
    case .balance:
      let getBalance = path(Banklink_V1_AccountService.Method.GetBalance.descriptor)
      let requests = try accounts.map { account in
        UnaryRequest(path: getBalance, message: try Banklink_V1_GetBalanceRequest.with { $0.accountID = account }.serializedBytes())
      }
      return { requests.randomElement()! }
    case .approve, .alerts:
      throw ValidationError("--scenario \(self.scenario.rawValue) needs --driver grpc-swift")
    case .pay:
      let createPayment = path(Banklink_V1_PaymentService.Method.CreatePayment.descriptor)
      let run = UInt64.random(in: 0...UInt64.max)
      return {
        let request = Self.payment(idempotencyKey: "bench-\(run)-\(UInt64.random(in: 0...UInt64.max))")
        // Serializing a message with only valid fields cannot fail.
        return UnaryRequest(path: createPayment, message: (try? request.serializedBytes()) ?? [])
      }
    }
  }

  /// The pay scenario's request: 1.00 CNY from icbc-cny-001, a fresh key per call.
  static func payment(idempotencyKey: String) -> Banklink_V1_CreatePaymentRequest {
    .with {
      $0.idempotencyKey = idempotencyKey
      $0.instruction = .with {
        $0.debtorAccountID = "icbc-cny-001"
        $0.creditor = .with {
          $0.name = "Shanghai Huaxin Trading Co., Ltd."
          $0.accountNumber = "3100 2011 0904 0012 345"
          $0.bic = "CMBCCNBS"
          $0.country = "CN"
        }
        $0.amount = .with { $0.minorUnits = 100; $0.currencyCode = "CNY" }
        $0.purpose = "benchmark"
        $0.type = .domestic
      }
    }
  }

  /// approve: creates `--prepare` payments as the payer, concurrently, and returns each id with
  /// the digest its first approver signs. Unmeasured.
  private func preparePayments() async throws -> [(id: String, digest: [UInt8])] {
    var payer = self.connection.client
    payer.certificatePath = self.payerCert ?? payer.certificatePath
    payer.keyPath = self.payerKey ?? payer.keyPath
    let run = UInt64.random(in: 0...UInt64.max)
    let total = self.prepare
    let workers = min(self.concurrency, 32)
    return try await withBankLinkClient(payer) { client in
      let service = Banklink_V1_PaymentService.Client(wrapping: client)
      return try await withThrowingTaskGroup(of: [(id: String, digest: [UInt8])].self) { group in
        for worker in 0..<workers {
          group.addTask {
            var created: [(id: String, digest: [UInt8])] = []
            for index in stride(from: worker, to: total, by: workers) {
              let payment = try await service.createPayment(Self.payment(idempotencyKey: "bench-approve-\(run)-\(index)")).payment
              guard payment.status == .pendingApproval, !payment.approvalDigest.isEmpty else {
                throw ValidationError("payment \(payment.paymentID) is \(payment.status), not waiting for approval: the daemon's policy must hold the bench's payments for one approver")
              }
              created.append((payment.paymentID, Array(payment.approvalDigest)))
            }
            return created
          }
        }
        var all: [(id: String, digest: [UInt8])] = []
        for try await part in group { all += part }
        return all
      }
    }
  }

  private func makeCall(
    accounts: [String], prepared: [(id: String, digest: [UInt8])] = []
  ) throws -> @Sendable (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Void {
    switch self.scenario {
    case .alerts:
      throw ValidationError("--scenario alerts runs its own calls")
    case .approve:
      let key = try Certificate.PrivateKey(pemEncoded: String(contentsOfFile: self.connection.client.keyPath, encoding: .utf8))
      let queue = Mutex(prepared[...])
      return { client in
        guard let payment = queue.withLock({ $0.popFirst() }) else {
          throw ValidationError("the prepared payments ran out; raise --prepare")
        }
        let signature = try CertificateSignatures.sign(payment.digest, with: key)
        _ = try await Banklink_V1_PaymentService.Client(wrapping: client).approvePayment(.with {
          $0.paymentID = payment.id
          $0.signature = Data(signature)
        })
      }
    case .noop:
      return { client in
        _ = try await Banklink_V1_AdminService.Client(wrapping: client).whoAmI(.init())
      }
    case .balance:
      return { client in
        let account = accounts.randomElement()!
        _ = try await Banklink_V1_AccountService.Client(wrapping: client).getBalance(.with { $0.accountID = account })
      }
    case .pay:
      let run = UInt64.random(in: 0...UInt64.max)
      return { client in
        _ = try await Banklink_V1_PaymentService.Client(wrapping: client).createPayment(
          Self.payment(idempotencyKey: "bench-\(run)-\(UInt64.random(in: 0...UInt64.max))")
        )
      }
    }
  }
}

/// The shape of a run, shared by both drivers so that they load the daemon the same way.
struct LoadShape: Sendable {
  var concurrency: Int
  /// Unmeasured seconds first.
  var warmup: Double
  /// Measured seconds.
  var duration: Double
  /// Calls per second in total; 0: every worker starts its next call when the last returns.
  var rate: Double

  var warmupNanoseconds: Int64 { Int64(self.warmup * 1e9) }
  var durationNanoseconds: Int64 { Int64(self.duration * 1e9) }
  /// Paced: each worker starts one call per interval (open pacing at a fixed load); nil when not.
  var intervalNanoseconds: Int64? { self.rate > 0 ? Int64(1e9 * Double(self.concurrency) / self.rate) : nil }

  /// Paced workers start staggered across one interval, so their calls do not arrive in bursts.
  func startOffsetNanoseconds(worker: Int) -> Int64 {
    (self.intervalNanoseconds ?? 0) * Int64(worker) / Int64(self.concurrency)
  }
}

/// The grpc-swift driver: each worker issues its next call when the previous one returns, or
/// when it is due (paced).
struct LoadRun: Sendable {
  let clients: [GRPCClient<HTTP2ClientTransport.Posix>]
  let shape: LoadShape
  let call: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Void

  struct Result: Sendable {
    var latenciesNanoseconds: [Int64]
    var errors: Int
    var elapsedSeconds: Double
    var firstError: String?
  }

  func run() async throws -> Result {
    let clock = ContinuousClock()
    let shape = self.shape
    let measureFrom = clock.now.advanced(by: .nanoseconds(shape.warmupNanoseconds))
    let stopAt = measureFrom.advanced(by: .nanoseconds(shape.durationNanoseconds))
    let interval: Duration? = shape.intervalNanoseconds.map { .nanoseconds($0) }
    let perWorker = try await withThrowingTaskGroup(of: Result.self) { group in
      for worker in 0..<shape.concurrency {
        let client = self.clients[worker % self.clients.count]
        group.addTask {
          var latencies: [Int64] = []
          latencies.reserveCapacity(4096)
          var errors = 0
          var firstError: String?
          var next = clock.now.advanced(by: .nanoseconds(shape.startOffsetNanoseconds(worker: worker)))
          if interval != nil { try await Task.sleep(until: next, clock: clock) }
          while true {
            let now = clock.now
            if now >= stopAt { break }
            // Paced: latency counts from when the call was due (a worker behind schedule
            // charges the wait to the calls that waited), as in the h2 driver.
            let start = interval != nil ? min(next, now) : now
            do {
              try await self.call(client)
              if start >= measureFrom {
                let elapsed = clock.now - start
                latencies.append(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
              }
            } catch {
              if start >= measureFrom { errors += 1 }
              if firstError == nil { firstError = "\(error)" }
            }
            if let interval {
              next = next.advanced(by: interval)
              if next > clock.now { try await Task.sleep(until: next, clock: clock) }
            }
          }
          return Result(latenciesNanoseconds: latencies, errors: errors, elapsedSeconds: 0, firstError: firstError)
        }
      }
      var merged = Result(latenciesNanoseconds: [], errors: 0, elapsedSeconds: 0, firstError: nil)
      for try await result in group {
        merged.latenciesNanoseconds += result.latenciesNanoseconds
        merged.errors += result.errors
        merged.firstError = merged.firstError ?? result.firstError
      }
      return merged
    }
    var result = perWorker
    result.elapsedSeconds = shape.duration
    result.latenciesNanoseconds.sort()
    return result
  }
}

struct BenchReport {
  var scenario: String
  var concurrency: Int
  var connections: Int
  var durationSeconds: Double
  var calls: Int
  var errors: Int
  var latenciesNanoseconds: [Int64]
  var firstError: String?

  var throughput: Double { Double(self.calls) / self.durationSeconds }

  func percentileMilliseconds(_ p: Double) -> Double {
    guard !self.latenciesNanoseconds.isEmpty else { return 0 }
    let index = min(self.latenciesNanoseconds.count - 1, Int((p / 100 * Double(self.latenciesNanoseconds.count)).rounded(.up)) - 1)
    return Double(self.latenciesNanoseconds[max(0, index)]) / 1e6
  }

  var json: String {
    let fields: [(String, String)] = [
      ("scenario", "\"\(self.scenario)\""), ("concurrency", "\(self.concurrency)"),
      ("connections", "\(self.connections)"), ("duration_s", "\(self.durationSeconds)"),
      ("calls", "\(self.calls)"), ("errors", "\(self.errors)"),
      ("throughput_per_s", String(format: "%.1f", self.throughput)),
      ("p50_ms", String(format: "%.3f", self.percentileMilliseconds(50))),
      ("p90_ms", String(format: "%.3f", self.percentileMilliseconds(90))),
      ("p99_ms", String(format: "%.3f", self.percentileMilliseconds(99))),
      ("p999_ms", String(format: "%.3f", self.percentileMilliseconds(99.9))),
    ]
    return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
  }

  var text: String {
    var lines = [
      "scenario     \(self.scenario)  (concurrency \(self.concurrency), connections \(self.connections), \(self.durationSeconds) s)",
      "calls        \(self.calls) ok, \(self.errors) failed",
      String(format: "throughput   %.0f calls/s", self.throughput),
      String(
        format: "latency ms   p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f", self.percentileMilliseconds(50),
        self.percentileMilliseconds(90), self.percentileMilliseconds(99), self.percentileMilliseconds(99.9)),
    ]
    if let firstError { lines.append("first error  \(firstError)") }
    return lines.joined(separator: "\n")
  }
}
