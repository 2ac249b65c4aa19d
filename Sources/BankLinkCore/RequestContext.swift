/// The request id of the call being served: taken from the client's `x-request-id` metadata
/// or made up, returned in the response metadata, put on every log line written while the call
/// runs, and kept in the audit records the call appends (`request_id` in their details). The
/// store's writer carries it from the caller's task to the writer thread.
public enum RequestContext {
  @TaskLocal public static var requestID: String?
  /// The RPC being served (`banklink.v1.PaymentService/CreatePayment`), for log lines.
  @TaskLocal public static var method: String?

  /// Longest request id accepted from a client; a longer or odd one is replaced.
  public static let maxRequestIDBytes = 64

  /// Whether a client's request id is usable as is: 1 to 64 of `A-Z a-z 0-9 . _ : -`, so that
  /// it is safe in logs and journal details without escaping.
  public static func isAcceptable(_ id: String) -> Bool {
    !id.isEmpty && id.utf8.count <= Self.maxRequestIDBytes
      && id.utf8.allSatisfy {
        ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z"))
          || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_")
          || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "-")
      }
  }
}
