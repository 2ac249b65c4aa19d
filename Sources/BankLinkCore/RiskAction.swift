/// What a rule does when its expression holds.
public enum RiskAction: Int, Sendable, Hashable, Comparable {
  case allow = 1
  /// Route to approval even under the threshold, adding a level.
  case review = 2
  case block = 3

  public static func < (lhs: RiskAction, rhs: RiskAction) -> Bool { lhs.rawValue < rhs.rawValue }

  public var name: String {
    switch self {
    case .allow: "allow"
    case .review: "review"
    case .block: "block"
    }
  }
}
