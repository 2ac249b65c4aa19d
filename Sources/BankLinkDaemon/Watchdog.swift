import BankLinkStore
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// systemd's watchdog (`WatchdogSec=` in the unit): `WATCHDOG=1` every half of the interval
/// systemd gives in `WATCHDOG_USEC`, **only while the daemon works**: the store's writer commits
/// a transaction and every event loop runs a task. A writer stuck in a transaction, or an event
/// loop blocked, stops the pings, and systemd kills and restarts the daemon (`Restart=on-failure`)
/// when the interval passes without one.
///
/// One probe at a time: a probe that never returns (a stuck writer) is not stacked on by later
/// ticks, it simply never counts as an answer.
public struct WatchdogService: Service {
  let interval: Duration
  let notifier: SystemdNotifier
  let writer: GroupCommitWriter
  let eventLoops: any EventLoopGroup
  let logger: Logger

  public init(interval: Duration, notifier: SystemdNotifier, writer: GroupCommitWriter, eventLoops: any EventLoopGroup, logger: Logger) {
    self.interval = interval
    self.notifier = notifier
    self.writer = writer
    self.eventLoops = eventLoops
    self.logger = logger
  }

  /// Half of `WATCHDOG_USEC`, when systemd asks this process (`WATCHDOG_PID`, when set, is ours)
  /// for pings; nil otherwise.
  public static func pingInterval(environment: [String: String], pid: Int32 = getpid()) -> Duration? {
    guard let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 else { return nil }
    if let owner = environment["WATCHDOG_PID"], Int32(owner) != pid { return nil }
    return .microseconds(Int64(usec / 2))
  }

  private struct State {
    var inFlight = false
    /// When the last probe finished.
    var answered: ContinuousClock.Instant?
  }

  private final class Probes: Sendable {
    let state = Mutex(State())
  }

  public func run() async throws {
    let probes = Probes()
    var healthy = true
    while !Task.isCancelled && !Task.isShuttingDownGracefully {
      let started = ContinuousClock.now
      let launch = probes.state.withLock { state -> Bool in
        guard !state.inFlight else { return false }
        state.inFlight = true
        return true
      }
      if launch {
        let writer = self.writer
        let loops = self.eventLoops
        Task {
          let ok = await Self.probe(writer: writer, eventLoops: loops)
          probes.state.withLock {
            $0.inFlight = false
            if ok { $0.answered = .now }
          }
        }
      }
      try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
      guard !Task.isShuttingDownGracefully else { return }
      let answered = probes.state.withLock { $0.answered.map { $0 >= started } ?? false }
      if answered {
        try? self.notifier.notify("WATCHDOG=1")
        if !healthy { self.logger.notice("the store's writer and the event loops answer again; watchdog pings resume") }
        healthy = true
      } else if healthy {
        healthy = false
        self.logger.critical(
          "the store's writer or an event loop did not answer within the watchdog interval; no watchdog ping (systemd restarts the daemon if this lasts)",
          metadata: ["interval": "\(self.interval)"])
      }
    }
  }

  /// A committed no-op transaction and a task on every event loop.
  static func probe(writer: GroupCommitWriter, eventLoops: any EventLoopGroup) async -> Bool {
    do {
      try await writer.write { _ in }
      for loop in eventLoops.makeIterator() {
        try await loop.submit {}.get()
      }
      return true
    } catch {
      return false
    }
  }
}
