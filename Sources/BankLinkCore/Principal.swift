/// A caller known to the daemon: a certificate identity and the roles granted to it.
public struct Principal: Sendable, Hashable {
  /// The certificate identity: URI SAN when present, else the subject common name.
  public var identity: String
  public var roles: Set<Role>

  public init(identity: String, roles: Set<Role>) {
    self.identity = identity
    self.roles = roles
  }

  public func holds(_ role: Role) -> Bool {
    self.roles.contains(role)
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
}
