import BankLinkBanks
import BankLinkCore
import Logging
import ServiceLifecycle

/// Drives the embedded simulator's business day: every interval it books new incoming and
/// outgoing entries, so balances move while the daemon runs.
public struct SimulatorActivityService: Service {
  let simulator: BankSimulator
  let intervalMilliseconds: Int64
  let logger: Logger
  let now: @Sendable () -> Instant

  public init(simulator: BankSimulator, intervalMilliseconds: Int64, logger: Logger, now: @escaping @Sendable () -> Instant) {
    self.simulator = simulator
    self.intervalMilliseconds = intervalMilliseconds
    self.logger = logger
    self.now = now
  }

  public func run() async throws {
    guard self.intervalMilliseconds > 0 else { return }
    while !Task.isCancelled && !Task.isShuttingDownGracefully {
      try? await cancelWhenGracefulShutdown {
        try await Task.sleep(for: .milliseconds(self.intervalMilliseconds))
      }
      if Task.isCancelled || Task.isShuttingDownGracefully { return }
      do {
        try await self.simulator.advance(now: self.now())
      } catch {
        self.logger.warning("simulated bank activity failed", metadata: ["error": "\(error)"])
      }
    }
  }
}
