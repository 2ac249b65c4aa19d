import BankLinkCore
import Crypto
import Foundation

/// RFC 6238 time-based one-time passwords (HMAC-SHA1, as authenticator apps use), with the
/// RFC 4648 base32 text form of secrets and `otpauth://` enrolment URIs.
public enum TOTP {
  /// The code for time step `step` (seconds since the epoch / step length).
  public static func code(secret: [UInt8], step: Int64, digits: Int = Limits.otpDigits) -> String {
    var counter = UInt64(bitPattern: step).bigEndian
    let message = withUnsafeBytes(of: &counter) { Array($0) }
    let mac = Array(HMAC<Insecure.SHA1>.authenticationCode(for: message, using: SymmetricKey(data: secret)))
    // RFC 4226 § 5.3 dynamic truncation.
    let offset = Int(mac[mac.count - 1] & 0x0F)
    let binary = (UInt32(mac[offset] & 0x7F) << 24) | (UInt32(mac[offset + 1]) << 16) | (UInt32(mac[offset + 2]) << 8)
      | UInt32(mac[offset + 3])
    var modulus: UInt32 = 1
    for _ in 0..<digits { modulus *= 10 }
    let value = String(binary % modulus)
    return String(repeating: "0", count: digits - value.count) + value
  }

  /// The time step of `time`.
  public static func step(at time: Instant, stepSeconds: Int64 = Limits.otpStepSeconds) -> Int64 {
    let seconds = time.millisecondsSinceEpoch >= 0
      ? time.millisecondsSinceEpoch / 1000 : (time.millisecondsSinceEpoch - 999) / 1000
    return seconds >= 0 ? seconds / stepSeconds : (seconds - stepSeconds + 1) / stepSeconds
  }

  /// The step within ±`drift` of `time` whose code is `code`, compared in constant time per
  /// step; nil when none matches.
  public static func matchingStep(
    _ code: String, secret: [UInt8], at time: Instant, drift: Int64 = Limits.otpAllowedDriftSteps
  ) -> Int64? {
    guard code.utf8.count == Limits.otpDigits, code.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
      return nil
    }
    let now = Self.step(at: time)
    var found: Int64?
    for step in (now - drift)...(now + drift) {
      let expected = Array(Self.code(secret: secret, step: step).utf8)
      var difference: UInt8 = 0
      for (a, b) in zip(expected, Array(code.utf8)) { difference |= a ^ b }
      if difference == 0 && found == nil { found = step }
    }
    return found
  }

  /// A new random secret.
  public static func newSecret() -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<Limits.otpSecretBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
  }

  /// The enrolment URI authenticator apps read (Google Authenticator key URI format).
  public static func enrolmentURI(secret: [UInt8], principal: String, issuer: String = "BankLink") -> String {
    func escape(_ text: String) -> String {
      text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? text
    }
    return "otpauth://totp/\(escape(issuer)):\(escape(principal))?secret=\(Base32.encode(secret))&issuer=\(escape(issuer))"
      + "&algorithm=SHA1&digits=\(Limits.otpDigits)&period=\(Limits.otpStepSeconds)"
  }
}

/// RFC 4648 base32, upper case, without padding (as `otpauth://` URIs carry secrets).
public enum Base32 {
  static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

  public static func encode(_ bytes: [UInt8]) -> String {
    var out: [UInt8] = []
    var buffer: UInt32 = 0
    var bits = 0
    for byte in bytes {
      buffer = (buffer << 8) | UInt32(byte)
      bits += 8
      while bits >= 5 {
        out.append(Self.alphabet[Int((buffer >> UInt32(bits - 5)) & 0x1F)])
        bits -= 5
      }
    }
    if bits > 0 { out.append(Self.alphabet[Int((buffer << UInt32(5 - bits)) & 0x1F)]) }
    return String(decoding: out, as: UTF8.self)
  }

  /// Decodes base32 (case-insensitive, padding and spaces ignored); nil on any other character.
  public static func decode(_ text: String) -> [UInt8]? {
    var out: [UInt8] = []
    var buffer: UInt32 = 0
    var bits = 0
    for character in text.utf8 where character != UInt8(ascii: "=") && character != UInt8(ascii: " ") {
      let upper = (character >= UInt8(ascii: "a") && character <= UInt8(ascii: "z")) ? character - 32 : character
      guard let value = Self.alphabet.firstIndex(of: upper) else { return nil }
      buffer = (buffer << 5) | UInt32(value)
      bits += 5
      if bits >= 8 {
        out.append(UInt8((buffer >> UInt32(bits - 8)) & 0xFF))
        bits -= 8
      }
    }
    return out
  }
}
