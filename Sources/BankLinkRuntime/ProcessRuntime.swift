import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

/// Process-wide set-up of the threads that run BankLink's async code, for `banklinkd` and
/// `banklink`: their `main.swift` is
///
/// ```swift
/// ProcessRuntime.configure(environment: ProcessInfo.processInfo.environment)
/// await ProcessRuntime.run(BanklinkdCommand.self)
/// ```
///
/// ``configure(environment:)`` must come first, on the main thread, once — before anything
/// touches Swift concurrency or NIO, which is why the commands have no `@main`.
///
/// - The event loops number the CPUs this process may run on: NIO counts cgroup quotas and
///   cpusets, and this adds the scheduler affinity (systemd's `CPUAffinity=`, `taskset`), so a
///   daemon confined to one core does not time-slice two loops on it.
/// - Async code runs on Swift's own cooperative pool, not on the event loops. Measured with a
///   standard gRPC client (`make bench-grpc`, docs/BENCHMARKS.md), making the event loops the
///   global executor costs 1.4–2.4× the server CPU per call from 32 calls in flight (two runs) and half as
///   much memory again; `BANKLINK_GLOBAL_EXECUTOR=loops` still installs them, for comparison.
///   Either way, BankLink's blocking work (LMDB write transactions and their synced flush) runs
///   on the store's writer thread (`Store.write`, `GroupCommitWriter`).
///
/// `NIO_SINGLETON_GROUP_LOOP_COUNT` still overrides the loop count.
public enum ProcessRuntime {
  public static func configure(environment: [String: String]) {
    if environment["NIO_SINGLETON_GROUP_LOOP_COUNT"] == nil, let allowed = allowedCPUCount() {
      NIOSingletons.groupLoopCountSuggestion = max(1, min(System.coreCount, allowed))
    }
    if environment["BANKLINK_GLOBAL_EXECUTOR"] == "loops" {
      NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
  }

  /// ArgumentParser's async entry point (what `@main` would run): parses the arguments, runs
  /// the command or subcommand, and exits with its error if it throws.
  public static func run<Command: AsyncParsableCommand>(_ command: Command.Type) async {
    do {
      var parsed = try await command.asyncParseAsRoot(nil)
      if var asyncCommand = parsed as? any AsyncParsableCommand {
        try await asyncCommand.run()
      } else {
        try parsed.run()
      }
    } catch {
      command.exit(withError: error)
    }
  }

  /// CPUs in this process's scheduler affinity mask (Linux: `Cpus_allowed` in
  /// /proc/self/status), or nil where that is unknown.
  public static func allowedCPUCount(status: String? = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) -> Int? {
    guard let status else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("Cpus_allowed:") {
      // A hex mask in comma-separated 32-bit groups, e.g. "ff,ffffffff".
      let mask = line.dropFirst("Cpus_allowed:".count).filter { $0 != "," && $0 != " " && $0 != "\t" }
      var count = 0
      for digit in mask {
        guard let value = digit.hexDigitValue else { return nil }
        count += value.nonzeroBitCount
      }
      return count > 0 ? count : nil
    }
    return nil
  }
}
