/// A role a principal may hold. Which RPCs a role may call is decided by the server's single
/// authorization table; roles are not ordered and imply nothing about each other.
public enum Role: String, CaseIterable, Sendable, Hashable, Comparable, Codable {
  /// Queries: accounts, balances, transactions, payments, alerts.
  case viewer
  /// Creates payments and cancels their own.
  case payer
  /// Approves and rejects payments created by others.
  case approver
  /// Reads the audit journal and reconciliation reports.
  case auditor
  /// Manages risk rules, approval policy and principals.
  case admin
  /// Imports bank statements, reconciles them against payments and matches by hand.
  case reconciler

  public static func < (lhs: Role, rhs: Role) -> Bool {
    lhs.order < rhs.order
  }

  private var order: Int {
    switch self {
    case .viewer: 0
    case .payer: 1
    case .approver: 2
    case .auditor: 3
    case .admin: 4
    case .reconciler: 5
    }
  }
}
