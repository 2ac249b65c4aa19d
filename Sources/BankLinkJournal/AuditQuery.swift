import BankLinkCore
import BankLinkStore

/// Which journal entries a query wants.
public struct AuditFilter: Sendable, Hashable {
  /// Only entries about this object: read from the object index, not by scanning the journal.
  public var object: String?
  public var principal: String?
  public var action: String?
  /// At or after.
  public var from: Instant?
  /// Strictly before.
  public var before: Instant?

  public init() {}

  func matches(_ entry: AuditEntry) -> Bool {
    if let principal, !entry.principal.utf8.elementsEqual(principal.utf8) { return false }
    if let action, !entry.action.utf8.elementsEqual(action.utf8) { return false }
    if let from, entry.time < from { return false }
    if let before, !(entry.time < before) { return false }
    return true
  }
}

/// Pages through the journal in sequence order.
public enum AuditQuery {
  public struct Page: Sendable, Hashable {
    public var entries: [AuditEntry]
    /// The sequence to resume after, while entries may remain; nil at the end.
    public var resumeAfter: UInt64?
  }

  /// Entries matching `filter` after sequence `after`, at most `limit`, reading at most
  /// `scanLimit` entries: a selective filter over a long journal costs a bounded read per call,
  /// and the page says where to resume.
  public static func page(
    _ filter: AuditFilter, after: UInt64, limit: Int, scanLimit: Int, in txn: some ReadableTransaction
  ) throws -> Page {
    let budget = max(1, scanLimit)
    var found: [AuditEntry] = []
    var scanned = 0
    var lastRead: UInt64?
    var more = false
    func visit(_ entry: AuditEntry) -> Bool {
      if scanned == budget || found.count == limit {
        more = true
        return false
      }
      scanned += 1
      lastRead = entry.sequence
      if filter.matches(entry) { found.append(entry) }
      return true
    }
    if let object = filter.object {
      let prefix = Array(object.utf8) + [0]
      var failure: (any Error)?
      try txn.scan(.auditByObject, from: prefix + AuditJournal.key(after + 1)) { key, _ in
        guard key.count == prefix.count + 8, key.starts(with: prefix) else { return false }
        let sequenceKey = Array(key.suffix(8))
        do {
          guard let value = try txn.get(sequenceKey, in: .audit) else {
            throw StoreError(code: .corrupted, message: "the audit index names a missing entry")
          }
          return visit(try AuditJournal.decode(key: sequenceKey, value: value))
        } catch {
          failure = error
          return false
        }
      }
      if let failure { throw failure }
    } else {
      try txn.scan(.audit, from: AuditJournal.key(after + 1)) { key, value in
        visit(try AuditJournal.decode(key: key, value: value))
      }
    }
    return Page(entries: found, resumeAfter: more ? lastRead ?? after : nil)
  }
}
