import BankLinkServer
import NIOHPACK
import Testing

@Suite("Request header guard")
struct RequestStreamGuardTests {
  /// A request's headers as a gRPC client sends them, plus the given `grpc-timeout` values.
  static func request(timeouts: [String]) -> HPACKHeaders {
    var headers: HPACKHeaders = [
      ":method": "POST",
      ":scheme": "https",
      ":path": "/banklink.v1.AccountService/GetBalance",
      "content-type": "application/grpc",
      "te": "trailers",
    ]
    for timeout in timeouts {
      headers.add(name: "grpc-timeout", value: timeout)
    }
    return headers
  }

  @Test(
    "well-formed grpc-timeout values pass",
    arguments: ["0S", "1S", "1H", "1M", "1m", "1u", "1n", "250m", "00000001S", "99999999H", "9999999n"]
  )
  func validTimeout(value: String) {
    #expect(RequestStreamGuard.problem(in: Self.request(timeouts: [value])) == nil)
  }

  @Test(
    "malformed grpc-timeout values are refused",
    arguments: [
      "-1S",  // negative: traps GRPCCore's Timeout.init(amount:unit:)
      "-5m",
      "-0S",  // a sign is not a digit, even on zero
      "+1S",
      "",
      "S",  // no digits
      "1",  // no unit
      "1x",  // unknown unit
      "1s",  // units are case-sensitive: "s" is not seconds
      "123456789S",  // 9 digits
      " 1S",
      "1S ",
      "1 S",
      "١S",  // ARABIC-INDIC DIGIT ONE: a digit, but not ASCII
      "１S",  // FULLWIDTH DIGIT ONE
      "1S\u{301}",  // unit followed by a combining mark
      "1.5S",
      "1S,2S",  // one field holding two values
    ]
  )
  func malformedTimeout(value: String) {
    let reason = RequestStreamGuard.problem(in: Self.request(timeouts: [value]))
    #expect(reason == RequestStreamGuard.malformedTimeoutReason)
    #expect(reason?.contains("grpc-timeout") == true)
  }

  @Test("a request without grpc-timeout passes")
  func noTimeout() {
    #expect(RequestStreamGuard.problem(in: Self.request(timeouts: [])) == nil)
    #expect(RequestStreamGuard.problem(in: HPACKHeaders()) == nil)
  }

  @Test("every grpc-timeout field is checked, not only the first")
  func everyField() {
    #expect(RequestStreamGuard.problem(in: Self.request(timeouts: ["1S", "-1S"])) != nil)
    #expect(RequestStreamGuard.problem(in: Self.request(timeouts: ["-1S", "1S"])) != nil)
    #expect(RequestStreamGuard.problem(in: Self.request(timeouts: ["1S", "2m"])) == nil)
  }

  @Test("the header name is matched without regard to case")
  func headerNameCase() {
    let headers: HPACKHeaders = [":path": "/a.B/C", "Grpc-Timeout": "-1S"]
    #expect(RequestStreamGuard.problem(in: headers) != nil)
  }

  @Test("the refusal is a trailers-only INVALID_ARGUMENT response")
  func trailers() {
    let trailers = RequestStreamGuard.trailers(for: "bad grpc-timeout: 100%\n")
    #expect(trailers.first(name: ":status") == "200")
    #expect(trailers.first(name: "content-type") == "application/grpc")
    #expect(trailers.first(name: "grpc-status") == "3")
    // Printable ASCII stays as is; "%" and bytes outside 0x20...0x7E are percent-encoded.
    #expect(trailers.first(name: "grpc-message") == "bad grpc-timeout: 100%25%0A")
    // Pseudo-header first, as HTTP/2 requires.
    #expect(trailers.first?.name == ":status")
  }

  @Test("the reason text needs no percent-encoding beyond printable ASCII")
  func reasonIsPrintableASCII() {
    let reason = RequestStreamGuard.malformedTimeoutReason
    #expect(reason.utf8.allSatisfy { (0x20...0x7E).contains($0) && $0 != UInt8(ascii: "%") })
    #expect(RequestStreamGuard.trailers(for: reason).first(name: "grpc-message") == reason)
  }
}
