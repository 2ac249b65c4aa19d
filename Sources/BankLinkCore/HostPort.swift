/// `HOST:PORT` or `[IPV6]:PORT` split into its parts, shared by the daemon's listen address and
/// the client's target so both read addresses the same way.
public struct HostPort: Sendable, Hashable {
  /// The host without brackets.
  public var host: String
  public var port: Int
  /// True when the host was written in brackets (an IPv6 literal).
  public var bracketed: Bool

  /// Nil unless `text` has a non-empty host and a port in 0...65535.
  public init?(_ text: String) {
    let host: Substring
    let portText: Substring
    if text.hasPrefix("[") {
      guard let close = text.firstIndex(of: "]") else { return nil }
      host = text[text.index(after: text.startIndex)..<close]
      let rest = text[text.index(after: close)...]
      guard rest.hasPrefix(":") else { return nil }
      portText = rest.dropFirst()
      self.bracketed = true
    } else {
      guard let colon = text.lastIndex(of: ":") else { return nil }
      host = text[..<colon]
      portText = text[text.index(after: colon)...]
      self.bracketed = false
    }
    guard !host.isEmpty, !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let port = Int(portText), (0...65535).contains(port) else {
      return nil
    }
    self.host = String(host)
    self.port = port
  }

  /// True for a dotted-quad IPv4 literal such as 127.0.0.1.
  public var isIPv4Literal: Bool {
    let parts = self.host.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4 && parts.allSatisfy { part in
      !part.isEmpty && part.count <= 3 && part.allSatisfy { $0.isASCII && $0.isNumber } && Int(part).map { $0 <= 255 } == true
    }
  }

  /// True for a host that can only be an IPv6 literal (hex digits, colons, dots).
  public var isIPv6Literal: Bool {
    self.host.contains(":") && self.host.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
  }
}
