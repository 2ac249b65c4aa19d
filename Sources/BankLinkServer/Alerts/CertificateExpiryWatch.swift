import BankLinkCore
import BankLinkStore
import Foundation
import Logging
import Synchronization

/// Raises one `certificate_expiry` alert per certificate that will expire within
/// ``Limits/certificateExpiryWarningDays``: the daemon's own (checked at start) and each client
/// certificate the first time it is used for a call in that window. One alert per serial number,
/// also across restarts (the serial is stored with its alert); the check on the call path is an
/// in-memory set lookup, and the write happens off the call.
public final class CertificateExpiryWatch: Sendable {
  let store: Store
  let logger: Logger
  let now: @Sendable () -> Instant
  /// Serials already alerted (or being alerted) by this process.
  private let seen = Mutex<Set<String>>([])

  public init(store: Store, logger: Logger, now: @escaping @Sendable () -> Instant) {
    self.store = store
    self.logger = logger
    self.now = now
  }

  /// Looks at one certificate; raises its alert (once) when it expires soon. On the call path:
  /// the owner's description and the serial's hex are only built for a certificate in the window.
  func observe(whose describeOwner: @autoclosure () -> String, serial serialHex: @autoclosure () -> String, notAfter: Date) {
    let now = self.now()
    let remainingMilliseconds = Int64(notAfter.timeIntervalSince1970 * 1000) - now.millisecondsSinceEpoch
    guard remainingMilliseconds < Int64(Limits.certificateExpiryWarningDays) * 86_400_000 else { return }
    let serial = serialHex()
    let owner = describeOwner()
    guard self.seen.withLock({ $0.insert(serial).inserted }) else { return }
    let key = Array("certificate_expiry/\(serial)".utf8)
    let days = max(0, remainingMilliseconds / 86_400_000)
    let expires = Instant(millisecondsSinceEpoch: Int64(notAfter.timeIntervalSince1970 * 1000)).isoTimestamp
    let store = self.store
    let logger = self.logger
    Task {
      do {
        try await store.write { txn in
          guard try txn.get(key, in: .meta) == nil else { return }
          try txn.put(key, [1], in: .meta)
          try AlertLog.raise(
            &txn, at: now, severity: days < Int64(Limits.certificateExpiryCriticalDays) ? .critical : .warning,
            kind: .certificateExpiry,
            message: "the certificate of \(owner) (serial \(serial)) expires \(expires), in \(days) days; issue a new one",
            details: ["owner": owner, "serial": serial, "not_after": expires])
        }
      } catch {
        logger.error("could not record a certificate expiry alert", metadata: ["serial": "\(serial)", "error": "\(error)"])
        _ = self.seen.withLock { $0.remove(serial) }
      }
    }
  }
}
