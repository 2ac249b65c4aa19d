import BankLinkClient
import BankLinkProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf
import Synchronization

/// `--scenario alerts`: alert fan-out. `subscribers` live `SubscribeAlerts` streams (as the
/// connection's principal, spread over `connections` connections) plus `stalled` streams that
/// never read, while a payer creates payments at `rate` per second that the daemon's rule set
/// turns into one alert each (the bench daemon blocks every payment: one `risk_hit` per call,
/// nothing reserved). Each live subscriber notes, for every alert it receives, the time from
/// the alert's timestamp — taken inside the write transaction, just before the commit — to its
/// arrival: an upper bound of commit-to-delivery, at the alert's millisecond resolution.
struct AlertFanout: Sendable {
  var subscriber: ClientConfiguration
  var payer: ClientConfiguration
  var subscribers: Int
  var stalled: Int
  var connections: Int
  var shape: LoadShape
  /// The daemon's process id, to read its CPU time over the measured window (Linux /proc).
  var serverPID: Int32?

  struct Result: Sendable {
    /// Per delivered alert (live subscribers, measured window), sorted.
    var latenciesNanoseconds: [Int64]
    /// Alerts raised in the measured window (payments created), and deliveries expected of them.
    var alertsRaised: Int
    var deliveriesExpected: Int
    var deliveriesMissing: Int
    var payErrors: Int
    var subscriberErrors: Int
    var firstError: String?
    var elapsedSeconds: Double
    /// CPU seconds (user + system) over the measured window: the daemon's (when its pid was
    /// given) and this process's.
    var serverCPUSeconds: Double?
    var clientCPUSeconds: Double?
  }

  /// CPU seconds a process has used, from /proc/PID/stat (utime + stime); nil elsewhere.
  static func cpuSeconds(_ pid: String) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { return nil }
    // Fields after the command: state is field 3, utime 14, stime 15.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
  }

  /// Per subscriber: the measured latencies and the sequences seen (to count deliveries).
  private final class Tally: Sendable {
    let state = Mutex<(latencies: [Int64], sequences: [Int], caughtUp: Int, errors: Int, firstError: String?)>(([], [], 0, 0, nil))
  }

  func run() async throws -> Result {
    let tally = Tally()
    let clock = ContinuousClock()
    let shape = self.shape
    let total = self.subscribers + self.stalled
    let measureFromWall = Date().addingTimeInterval(shape.warmup + Self.subscribeSeconds(total))
    return try await withBankLinkClients(self.subscriber, count: self.connections) { clients in
      try await withThrowingTaskGroup(of: Void.self) { group in
        for index in 0..<total {
          let client = clients[index % clients.count]
          let stalled = index >= self.subscribers
          group.addTask {
            do {
              try await Banklink_V1_MonitoringService.Client(wrapping: client).subscribeAlerts(.init()) { response in
                var latencies: [Int64] = []
                var sequences: [Int] = []
                // The run ends by cancelling the streams: record whatever arrived by then.
                defer {
                  tally.state.withLock { [latencies, sequences] in
                    $0.latencies += latencies
                    $0.sequences += sequences
                  }
                }
                for try await event in response.messages {
                  switch event.event {
                  case .caughtUp:
                    tally.state.withLock { $0.caughtUp += 1 }
                    if stalled {
                      // Never read again: the daemon may only fill this stream's HTTP/2 window.
                      try await Task.sleep(for: .seconds(3_600))
                    }
                  case .alert(let alert):
                    let now = Date().timeIntervalSince1970
                    let time = Double(alert.time.seconds) + Double(alert.time.nanos) / 1e9
                    if time >= measureFromWall.timeIntervalSince1970 {
                      latencies.append(Int64((now - time) * 1e9))
                      sequences.append(Int(alert.sequence))
                    }
                  case nil:
                    break
                  }
                }
              }
            } catch is CancellationError {
            } catch let error as RPCError where error.code == .cancelled {
            } catch {
              tally.state.withLock {
                $0.errors += 1
                $0.firstError = $0.firstError ?? "\(error)"
              }
            }
          }
        }
        // Every stream open and caught up before the payments start.
        let openBy = clock.now.advanced(by: .seconds(Self.subscribeSeconds(total)))
        while tally.state.withLock({ $0.caughtUp }) < total {
          guard clock.now < openBy else {
            let (opened, firstError) = tally.state.withLock { ($0.caughtUp, $0.firstError) }
            throw AlertFanoutError(message: "only \(opened) of \(total) subscriptions caught up\(firstError.map { ": \($0)" } ?? "")")
          }
          try await Task.sleep(for: .milliseconds(20))
        }
        // CPU over the measured window, sampled beside the payments.
        let serverPID = self.serverPID.map { String($0) }
        let cpu = Task { () -> (server: Double?, client: Double?) in
          try? await Task.sleep(for: .seconds(max(0, measureFromWall.timeIntervalSinceNow)))
          let (server0, client0) = (serverPID.flatMap(Self.cpuSeconds), Self.cpuSeconds("self"))
          try? await Task.sleep(for: .seconds(shape.duration))
          let (server1, client1) = (serverPID.flatMap(Self.cpuSeconds), Self.cpuSeconds("self"))
          func delta(_ a: Double?, _ b: Double?) -> Double? { if let a, let b { b - a } else { nil } }
          return (delta(server0, server1), delta(client0, client1))
        }
        // The alerts: paced payments (warm-up, then measured), each blocked by the rules.
        var payShape = shape
        payShape.warmup = max(0, measureFromWall.timeIntervalSinceNow)
        let payments = try await withBankLinkClient(self.payer) { client in
          try await LoadRun(
            clients: [client], shape: payShape,
            call: { client in
              _ = try await Banklink_V1_PaymentService.Client(wrapping: client).createPayment(
                LoadCommand.payment(idempotencyKey: "fanout-\(UInt64.random(in: 0...UInt64.max))"))
            }
          ).run()
        }
        // Let the last alerts arrive, then end the streams (the live ones record as they end).
        try await Task.sleep(for: .seconds(Self.drainSeconds))
        let cpuUsed = await cpu.value
        group.cancelAll()
        while try await group.next() != nil {}
        let state = tally.state.withLock { $0 }
        // Alerts of the measured window: those any live subscriber saw, or the payments created
        // in it if more (an alert no subscriber saw is then counted as missing everywhere).
        let raised = max(Set(state.sequences).count, payments.latenciesNanoseconds.count)
        let expected = raised * self.subscribers
        return Result(
          latenciesNanoseconds: state.latencies.sorted(), alertsRaised: raised, deliveriesExpected: expected,
          deliveriesMissing: max(0, expected - state.sequences.count), payErrors: payments.errors,
          subscriberErrors: state.errors, firstError: payments.firstError ?? state.firstError, elapsedSeconds: shape.duration,
          serverCPUSeconds: cpuUsed.server, clientCPUSeconds: cpuUsed.client)
      }
    }
  }

  /// Time allowed for every stream to open and catch up (bounded by the count).
  static func subscribeSeconds(_ streams: Int) -> Double { 5 + Double(streams) / 100 }
  static let drainSeconds = 2.0
}

struct AlertFanoutError: Error, CustomStringConvertible {
  var message: String
  var description: String { self.message }
}
