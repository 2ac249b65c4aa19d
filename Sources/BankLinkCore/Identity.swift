/// The character set principal identities are written in, and the two shapes they take.
///
/// An identity comes from a client certificate (a URI SAN, else the subject common name) and is
/// compared with the principals table byte for byte. Both sides are held to the rules here, so
/// that two identities can never be confused:
///
/// - **ASCII only.** Swift compares strings by Unicode canonical equivalence (`"\u{212A}elvin"`,
///   with the KELVIN SIGN, equals `"Kelvin"`); on ASCII that equivalence is byte equality, and
///   refusing everything else makes the comparison exact.
/// - **A name cannot look like a URI.** A name (`erp`, `treasury.ops@corp`) is letters, digits and
///   `. _ - @`: no `:` or `/`, so a common name `spiffe://corp.example/erp` is refused instead of
///   receiving the roles of that URI principal.
/// - **A URI is `scheme://authority[path…]`** with a lower-case scheme and only the characters
///   RFC 3986 allows (no spaces, quotes, backslashes, control characters or percent-encoded
///   anything outside them), so it can be logged and compared as it is.
public enum IdentityRules {
  public enum Shape: Sendable, Hashable {
    /// `scheme://authority…`, from a URI SAN.
    case uri(scheme: String, authority: String)
    /// A plain name, from a common name.
    case name
  }

  /// The shape of `identity`, or why it is refused (a short English clause, never the value).
  public static func check(_ identity: String) -> Result<Shape, IdentityProblem> {
    let bytes = Array(identity.utf8)
    guard !bytes.isEmpty else { return .failure(IdentityProblem("is empty")) }
    guard bytes.count <= Limits.maxIdentityLength else {
      return .failure(IdentityProblem("is longer than \(Limits.maxIdentityLength) bytes"))
    }
    guard let separator = Self.range(of: Array("://".utf8), in: bytes) else {
      guard bytes.allSatisfy(Self.isNameByte) else {
        return .failure(IdentityProblem(
          "may hold only ASCII letters, digits and . _ - @ (a URI is accepted only from a URI SAN, as scheme://authority/path)"
        ))
      }
      return .success(.name)
    }
    let scheme = bytes[..<separator.lowerBound]
    guard let first = scheme.first, Self.isLowercaseLetter(first),
      scheme.allSatisfy({ Self.isLowercaseLetter($0) || Self.isDigit($0) || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") })
    else {
      return .failure(IdentityProblem("is a URI whose scheme is not lower-case letters, digits and + - ."))
    }
    let rest = bytes[separator.upperBound...]
    guard rest.allSatisfy(Self.isURIByte) else {
      return .failure(IdentityProblem("is a URI with a character RFC 3986 does not allow (spaces, quotes, control or non-ASCII characters)"))
    }
    let authority = rest.prefix { $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "?") && $0 != UInt8(ascii: "#") }
    guard !authority.isEmpty else { return .failure(IdentityProblem("is a URI without an authority (trust domain)")) }
    return .success(.uri(scheme: String(decoding: scheme, as: UTF8.self), authority: String(decoding: authority, as: UTF8.self)))
  }

  /// Why an identity is refused.
  public struct IdentityProblem: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
  }

  static func isLowercaseLetter(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z") }
  static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
  static func isLetter(_ byte: UInt8) -> Bool {
    Self.isLowercaseLetter(byte) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
  }

  static func isNameByte(_ byte: UInt8) -> Bool {
    Self.isLetter(byte) || Self.isDigit(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
      || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "@")
  }

  /// RFC 3986 unreserved, reserved and `%`.
  static func isURIByte(_ byte: UInt8) -> Bool {
    if Self.isLetter(byte) || Self.isDigit(byte) { return true }
    return Array("-._~:/?#[]@!$&'()*+,;=%".utf8).contains(byte)
  }

  static func range(of needle: [UInt8], in haystack: [UInt8]) -> Range<Int>? {
    guard haystack.count >= needle.count else { return nil }
    for start in 0...(haystack.count - needle.count) where haystack[start..<start + needle.count].elementsEqual(needle) {
      return start..<start + needle.count
    }
    return nil
  }
}
