import BankLinkJournal
import Synchronization

/// The outcome of a reload that put a new configuration in force.
public struct ReloadOutcome: Sendable {
  /// One line: what is now in force (the systemd status line says the same).
  public var summary: String
  /// Changed keys that take effect only after a restart.
  public var needsRestart: [String]
  /// The journal entry `daemon.reloaded`.
  public var receipt: JournalReceipt

  public init(summary: String, needsRestart: [String], receipt: JournalReceipt) {
    self.summary = summary
    self.needsRestart = needsRestart
    self.receipt = receipt
  }
}

/// A reload refused as a whole: `key` names the configuration key at fault (or "(file)").
public struct ReloadRefusal: Error, Sendable, CustomStringConvertible {
  public var key: String
  public var reason: String
  public var description: String { self.reason }

  public init(key: String, reason: String) {
    self.key = key
    self.reason = reason
  }
}

/// Where `ReloadConfiguration` finds the daemon's reload (the daemon, which knows its
/// configuration file, installs it; a server without one answers FAILED_PRECONDITION).
public final class ConfigurationReloadHook: Sendable {
  /// Reloads on behalf of `requestedBy` (the caller's identity, journaled as the principal).
  public typealias Reload = @Sendable (_ requestedBy: String) async -> Result<ReloadOutcome, ReloadRefusal>
  private let action = Mutex<Reload?>(nil)

  public init() {}

  public func install(_ reload: @escaping Reload) {
    self.action.withLock { $0 = reload }
  }

  var installed: Reload? { self.action.withLock { $0 } }
}
