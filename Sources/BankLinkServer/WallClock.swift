import BankLinkCore
import Foundation

/// The system's wall clock, the default time source of the daemon (tests pass their own).
public enum WallClock {
  @Sendable public static func now() -> Instant {
    Instant(millisecondsSinceEpoch: Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)))
  }
}
