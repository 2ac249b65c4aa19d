import GRPCCore

/// The deadline of the current call, from its `grpc-timeout` header; set by
/// ``AuthorizationInterceptor`` so a handler can answer before it (e.g. fall back to the cache
/// when a bank is slow) instead of being cancelled at it. On ``GatewayTransport`` the transport
/// binds it around the call (from the HEADERS), since gRPC Swift's metadata there has no
/// `grpc-timeout`.
public enum RequestDeadline {
  @TaskLocal public static var current: ContinuousClock.Instant?

  /// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
  static func parse(_ value: String) -> Duration? {
    guard let unit = value.last, value.count >= 2, value.count <= 9,
      let amount = Int64(value.dropLast()), amount >= 0
    else { return nil }
    switch unit {
    case "H": return .seconds(amount * 3600)
    case "M": return .seconds(amount * 60)
    case "S": return .seconds(amount)
    case "m": return .milliseconds(amount)
    case "u": return .microseconds(amount)
    case "n": return .nanoseconds(amount)
    default: return nil
    }
  }

  static func from(_ metadata: Metadata) -> ContinuousClock.Instant? {
    var values = metadata[stringValues: "grpc-timeout"].makeIterator()
    guard let value = values.next(),
      let timeout = parse(value)
    else { return nil }
    return ContinuousClock.now.advanced(by: timeout)
  }
}
