import BankLinkCore
import BankLinkJournal
import BankLinkPKI
import BankLinkStore

/// Principals managed at run time (`SetPrincipalRoles`), on top of the configuration's table.
///
/// A stored principal (`principals`, by identity) replaces the configured one of the same
/// identity whole — roles and approval limits — or adds one; the configuration file is never
/// rewritten. Setting no roles leaves the identity known but able to call only what any
/// principal may (WhoAmI, health). Each change is journaled in the transaction that stores it.
///
/// Two rules protect the table from its own administrators: an admin cannot grant themselves
/// anything (a role they do not hold, or a looser approval limit), and no change may leave the
/// table without an admin whose identity is not revoked. Both are checked inside the write
/// transaction, against the table as it is at commit, so two admins racing cannot together
/// remove the last two admins.
public struct PrincipalRegistry: Sendable {
  public let writer: GroupCommitWriter
  public let directory: PrincipalDirectory
  let now: @Sendable () -> Instant

  public init(writer: GroupCommitWriter, directory: PrincipalDirectory, now: @escaping @Sendable () -> Instant) {
    self.writer = writer
    self.directory = directory
    self.now = now
  }

  /// Why a change was refused. The refusal itself is journaled (`principal.change_refused`).
  public enum Refusal: Error, Sendable, Hashable {
    /// The caller tried to widen their own entry.
    case selfGrant(String)
    /// The change would leave no principal holding `admin`.
    case lastAdmin(String)
    /// The table would exceed ``Limits/maxPrincipals``.
    case tooManyPrincipals
  }

  /// What `setRoles` did: the principal as now stored, the receipt, and whether anything changed.
  public struct Change: Sendable, Hashable {
    public var principal: Principal
    public var receipt: JournalReceipt
  }

  private enum Outcome: Sendable {
    case changed(Change, overrides: [Principal])
    case refused(Refusal)
  }

  /// The table in force as `txn` sees it: the configured one with the stored principals over it.
  public func table(in txn: some ReadableTransaction) throws -> PrincipalTable {
    self.directory.configured.overlaid(with: try PrincipalRecord.loadAll(in: txn))
  }

  /// Principals of `table` holding admin whose identity is not revoked (`identity/…` in
  /// `revocations`), leaving `excluding` out.
  public static func usableAdmins(in table: PrincipalTable, excluding: String? = nil, txn: some ReadableTransaction) throws -> Int {
    try table.principals.filter { principal in
      guard principal.holds(.admin), principal.identity != excluding else { return false }
      return try txn.get(Array(CertificateRevocations.Target.identity(principal.identity).key.utf8), in: .revocations) == nil
    }.count
  }

  /// Puts the stored principals in force over the configured table: at start, before serving.
  public func loadStored() throws {
    let (overrides, version) = try self.writer.store.withReadTransaction { txn in
      (try PrincipalRecord.loadAll(in: txn), try AuditJournal.head(txn)?.sequence ?? 0)
    }
    self.directory.apply(overrides: overrides, version: version)
  }

  /// Grants `identity` exactly `roles` and `approvalLimits` (creating the principal if needed),
  /// on behalf of `admin`. `roles` and limits are validated by the caller (the handler names the
  /// field); the rules that depend on the table are checked here.
  public func setRoles(
    _ identity: String, roles: Set<Role>, approvalLimits: [CurrencyCode: Int64], by admin: Principal
  ) async throws -> Change {
    let now = self.now()
    let configured = self.directory.configured
    let outcome: Outcome = try await self.writer.write { txn in
      let stored = try PrincipalRecord.loadAll(in: txn)
      let before = configured.overlaid(with: stored)
      let previous = before.principal(for: identity)
      let updated = Principal(identity: identity, roles: roles, approvalLimits: approvalLimits)
      let after = before.overlaid(with: [updated])
      let object = "principals/" + identity

      func refuse(_ refusal: Refusal, _ reason: String) throws -> Outcome {
        try AuditJournal.append(
          &txn, at: now, principal: admin.identity, action: "principal.change_refused", object: object,
          details: ["reason": reason, "requested_roles": Self.describe(roles), "requested_limits": Self.describe(approvalLimits)])
        return .refused(refusal)
      }

      if admin.identity.utf8.elementsEqual(identity.utf8) {
        let current = previous ?? Principal(identity: identity, roles: [])
        if !roles.isSubset(of: current.roles) {
          let added = Self.describe(roles.subtracting(current.roles))
          return try refuse(.selfGrant("an admin cannot grant themselves a role (\(added))"), "self_grant")
        }
        if Self.loosens(from: current.approvalLimits, to: approvalLimits) {
          return try refuse(.selfGrant("an admin cannot loosen their own approval limits"), "self_grant")
        }
      }
      // An admin whose every certificate is revoked (by identity) administers nothing.
      if try Self.usableAdmins(in: after, txn: txn) == 0 {
        return try refuse(
          .lastAdmin("'\(identity)' is the last principal holding admin whose certificates are not revoked; grant admin to another principal first"),
          "last_admin")
      }
      if previous == nil && after.count > Limits.maxPrincipals { return .refused(.tooManyPrincipals) }

      try txn.put(Array(identity.utf8), PrincipalRecord.encode(updated, by: admin.identity, at: now), in: .principals)
      var details: AuditPayload = [
        "roles": Self.describe(roles), "approval_limits": Self.describe(approvalLimits),
        "created": previous == nil ? "true" : "false",
      ]
      if let previous {
        details["previous_roles"] = Self.describe(previous.roles)
        details["previous_approval_limits"] = Self.describe(previous.approvalLimits)
      }
      let receipt = try AuditJournal.append(
        &txn, at: now, principal: admin.identity, action: "principal.roles_set", object: object, details: details)
      let overrides = stored.filter { !$0.identity.utf8.elementsEqual(identity.utf8) } + [updated]
      return .changed(Change(principal: updated, receipt: receipt), overrides: overrides)
    }
    switch outcome {
    case .changed(let change, let overrides):
      // Versioned by the journal sequence, which orders the commits: a slower task applying an
      // older table after a newer one is ignored.
      self.directory.apply(overrides: overrides, version: change.receipt.sequence)
      return change
    case .refused(let refusal):
      throw refusal
    }
  }

  /// Whether `new` lets the principal approve something `old` did not.
  static func loosens(from old: [CurrencyCode: Int64], to new: [CurrencyCode: Int64]) -> Bool {
    if old.isEmpty { return false }  // unlimited before: anything is at most as loose
    if new.isEmpty { return true }  // limited before, unlimited after
    return new.contains { currency, limit in old[currency].map { limit > $0 } ?? true }
  }

  static func describe(_ roles: Set<Role>) -> String {
    roles.sorted().map(\.rawValue).joined(separator: ",")
  }

  static func describe(_ limits: [CurrencyCode: Int64]) -> String {
    limits.sorted { $0.key < $1.key }.map { "\($0.key.code):\($0.value)" }.joined(separator: ",")
  }
}

/// The stored form of a run-time principal (`principals`, identity → record).
enum PrincipalRecord {
  static let recordFormat: UInt8 = 1

  static func encode(_ principal: Principal, by admin: String, at time: Instant) -> [UInt8] {
    var writer = RecordWriter(capacity: 64 + principal.approvalLimits.count * 16)
    writer.write(Self.recordFormat)
    writer.write(UInt32(principal.roles.count))
    for role in principal.roles.sorted() { writer.write(role.rawValue) }
    writer.write(UInt32(principal.approvalLimits.count))
    for (currency, limit) in principal.approvalLimits.sorted(by: { $0.key < $1.key }) {
      writer.write(currency.code)
      writer.write(limit)
    }
    writer.write(time.millisecondsSinceEpoch)
    writer.write(admin)
    return writer.bytes
  }

  static func decode(identity: String, _ bytes: [UInt8]) throws -> Principal {
    var reader = RecordReader(bytes)
    guard try reader.readUInt8() == Self.recordFormat else {
      throw StoreError(code: .corrupted, message: "unknown principal record format")
    }
    var roles: Set<Role> = []
    for _ in 0..<min(Int(try reader.readUInt32()), Role.allCases.count) {
      guard let role = Role(rawValue: try reader.readString()) else {
        throw StoreError(code: .corrupted, message: "principal record names an unknown role")
      }
      roles.insert(role)
    }
    var limits: [CurrencyCode: Int64] = [:]
    for _ in 0..<min(Int(try reader.readUInt32()), Limits.maxApprovalLimitsPerPrincipal) {
      guard let currency = CurrencyCode(try reader.readString()) else {
        throw StoreError(code: .corrupted, message: "principal record names an invalid currency")
      }
      limits[currency] = try reader.readInt64()
    }
    _ = try reader.readInt64()  // updated at
    _ = try reader.readString()  // updated by
    try reader.finish()
    return Principal(identity: identity, roles: roles, approvalLimits: limits)
  }

  static func loadAll(in txn: some ReadableTransaction) throws -> [Principal] {
    var principals: [Principal] = []
    try txn.scan(.principals, from: nil) { key, value in
      guard let identity = String(validating: key, as: UTF8.self) else {
        throw StoreError(code: .corrupted, message: "principal key is not UTF-8")
      }
      principals.append(try PrincipalRecord.decode(identity: identity, value))
      return principals.count <= Limits.maxPrincipals
    }
    return principals
  }
}
