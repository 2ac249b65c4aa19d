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

/// Runs the simulator's file mode: every interval the simulated bank takes the outbox's pain.001
/// files and answers in the inbox (``SimulatorFileBank``).
public struct SimulatorFileBankService: Service {
  let bank: SimulatorFileBank
  let intervalMilliseconds: Int64
  let logger: Logger
  let now: @Sendable () -> Instant

  public init(bank: SimulatorFileBank, intervalMilliseconds: Int64, logger: Logger, now: @escaping @Sendable () -> Instant) {
    self.bank = bank
    self.intervalMilliseconds = intervalMilliseconds
    self.logger = logger
    self.now = now
  }

  public func run() async throws {
    while !Task.isCancelled && !Task.isShuttingDownGracefully {
      do {
        let outcome = try await self.bank.exchange(now: self.now())
        if outcome.rejectedFiles > 0 {
          self.logger.warning("the simulated bank rejected payment files", metadata: ["files": "\(outcome.rejectedFiles)"])
        }
      } catch {
        self.logger.warning("the simulated bank's file exchange failed", metadata: ["error": "\(error)"])
      }
      try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(self.intervalMilliseconds)) }
    }
  }
}
