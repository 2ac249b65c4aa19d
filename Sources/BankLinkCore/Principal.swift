/// A caller known to the daemon: a certificate identity and the roles granted to it.
public struct Principal: Sendable, Hashable {
  /// The certificate identity: URI SAN when present, else the subject common name.
  public var identity: String
  public var roles: Set<Role>
  /// The largest amount (minor units) this principal may approve, per currency, on top of any
  /// limit of the approval level. Empty: no limit of its own. Not empty: a currency that is not
  /// listed cannot be approved at all — a limit set for CNY does not leave USD unlimited.
  public var approvalLimits: [CurrencyCode: Int64]

  public init(identity: String, roles: Set<Role>, approvalLimits: [CurrencyCode: Int64] = [:]) {
    self.identity = identity
    self.roles = roles
    self.approvalLimits = approvalLimits
  }

  public func holds(_ role: Role) -> Bool {
    self.roles.contains(role)
  }

  /// Whether the principal's own limit lets it approve `amount` (the level's limit is separate).
  public func mayApprove(_ amount: Money) -> Bool {
    if self.approvalLimits.isEmpty { return true }
    guard let limit = self.approvalLimits[amount.currency] else { return false }
    return amount.minorUnits <= limit
  }
}

/// The principals table: who may call the daemon at all, and with which roles.
///
/// A value type so that a new table (from a reload or an admin RPC) replaces the old one whole.
///
/// Identities are compared by their UTF-8 bytes, never by Swift's `String` equality (which
/// treats canonically equivalent strings as equal); ``IdentityRules`` keeps both sides ASCII.
public struct PrincipalTable: Sendable, Hashable {
  private var byIdentity: [[UInt8]: Principal]

  public init(_ principals: [Principal] = []) {
    var byIdentity: [[UInt8]: Principal] = [:]
    for principal in principals {
      byIdentity[Array(principal.identity.utf8)] = principal
    }
    self.byIdentity = byIdentity
  }

  /// The principal with exactly this identity (byte for byte), or nil when it is unknown.
  public func principal(for identity: String) -> Principal? {
    self.byIdentity[Array(identity.utf8)]
  }

  /// All principals, ordered by identity.
  public var principals: [Principal] {
    self.byIdentity.values.sorted { $0.identity < $1.identity }
  }

  public var count: Int { self.byIdentity.count }

  /// This table with `overrides` applied: each replaces the principal of the same identity
  /// (roles and limits whole), or adds one.
  public func overlaid(with overrides: some Sequence<Principal>) -> PrincipalTable {
    var table = self
    for principal in overrides { table.byIdentity[Array(principal.identity.utf8)] = principal }
    return table
  }

  /// How many principals hold `role`.
  public func count(holding role: Role) -> Int {
    self.byIdentity.values.reduce(0) { $0 + ($1.holds(role) ? 1 : 0) }
  }
}
