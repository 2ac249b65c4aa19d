import Foundation

/// Where a file's bytes come from: memory, or a path read in chunks (bounded memory).
public enum FormatSource: Sendable {
  case data(Data)
  case file(String)
}

/// A file refused: which format, where (line, and the element path or field), and why. Nothing
/// of a refused file is meant to be stored.
public struct FormatError: Error, Sendable, Hashable, CustomStringConvertible {
  public var format: String
  public var line: Int
  /// The element path (`Document/BkToCstmrStmt/Stmt/Ntry/Amt`) or the MT field (`:61:`).
  public var location: String
  public var reason: String

  public init(format: String, line: Int, location: String, reason: String) {
    self.format = format
    self.line = line
    self.location = location
    self.reason = reason
  }

  public var description: String {
    var text = self.format
    if self.line > 0 { text += ", line \(self.line)" }
    if !self.location.isEmpty { text += ", \(self.location)" }
    return text + ": " + self.reason
  }
}

/// The limits every reader enforces, by name.
public enum FormatLimits {
  /// Largest file a reader takes (an import or an inbox file).
  public static let maxFileBytes = 2 << 30
  /// Deepest element nesting in an XML file (camt is about 12 deep).
  public static let maxXMLDepth = 64
  /// Longest element name (ISO 20022 names are short: `BkToCstmrDbtCdtNtfctn` is the longest
  /// here). Bounds the element path a reader matches on.
  public static let maxXMLNameBytes = 64
  /// Status reason entries kept per level of a pain.002, and remittance bytes kept per transfer.
  public static let maxReasonsPerStatus = 16
  /// Longest text of one XML element or one MT field.
  public static let maxTextBytes = 64 * 1024
  /// Transactions kept per entry (a batch booking lists each); more are counted, not kept.
  public static let maxDetailsPerEntry = 10_000
  /// Unstructured remittance lines kept per transaction.
  public static let maxRemittanceLines = 32
  /// Statements in one MT940 file.
  public static let maxStatementsPerFile = 100_000
  /// Largest statement, legal sequence or page number accepted: far beyond any bank's count
  /// (camt's ElctrncSeqNb is 18 digits in the schema), small enough that arithmetic on it never
  /// overflows.
  public static let maxSequenceNumber = 1_000_000_000_000_000
}

/// Amounts and dates as the formats write them.
public enum FormatValues {
  /// Number of decimal places of a currency's minor unit (ISO 4217).
  public static func exponent(of currency: String) -> Int {
    switch currency {
    case "JPY", "KRW", "VND", "CLP", "ISK", "XOF", "XAF", "PYG", "UGX", "RWF": 0
    case "BHD", "KWD", "OMR", "JOD", "TND", "IQD", "LYD": 3
    default: 2
    }
  }

  static func isCurrency(_ text: String) -> Bool {
    text.utf8.count == 3 && text.utf8.allSatisfy { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }
  }

  /// A non-negative decimal (`1234.56`, or MT's `1234,56`) in minor units of `currency`; nil for
  /// anything else, more decimals than the currency has, or an overflow.
  static func minorUnits(_ text: Substring, currency: String, separator: UInt8 = UInt8(ascii: ".")) -> Int64? {
    let exponent = Self.exponent(of: currency)
    var value: Int64 = 0
    var digits = 0
    var fraction = -1
    for byte in text.utf8 {
      if byte == separator {
        guard fraction < 0 else { return nil }
        fraction = 0
        continue
      }
      guard byte >= 0x30 && byte <= 0x39 else { return nil }
      if fraction >= 0 {
        fraction += 1
        guard fraction <= exponent else {
          // Trailing zeros beyond the currency's places are harmless ("10.500" CNY).
          if byte == 0x30 { continue }
          return nil
        }
      }
      digits += 1
      let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
      let (sum, overflow2) = times10.addingReportingOverflow(Int64(byte - 0x30))
      if overflow1 || overflow2 { return nil }
      value = sum
    }
    // MT940 allows "1234," (no decimals); ISO needs a digit before the point.
    guard digits > 0 else { return nil }
    for _ in 0..<(exponent - max(0, min(fraction, exponent))) {
      let (times10, overflow) = value.multipliedReportingOverflow(by: 10)
      if overflow { return nil }
      value = times10
    }
    return value
  }

  /// An ISO date `YYYY-MM-DD` that exists, between 1900 and 2999; or the date part of an ISO
  /// date-time. Nil otherwise.
  static func isoDate(_ text: String) -> String? {
    let bytes = Array(text.utf8.prefix(10))
    guard bytes.count == 10, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-") else { return nil }
    func number(_ range: Range<Int>) -> Int? {
      var value = 0
      for byte in bytes[range] {
        guard byte >= 0x30 && byte <= 0x39 else { return nil }
        value = value * 10 + Int(byte - 0x30)
      }
      return value
    }
    guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
      Self.isValidDate(year: year, month: month, day: day)
    else { return nil }
    return String(decoding: bytes, as: UTF8.self)
  }

  static func isValidDate(year: Int, month: Int, day: Int) -> Bool {
    guard (1900...2999).contains(year), (1...12).contains(month), day >= 1 else { return false }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
    let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return day <= days
  }

  /// Minor units as a decimal in `currency` (`-1234.56`), exactly.
  public static func decimal(_ minor: Int64, currency: String) -> String {
    let exponent = Self.exponent(of: currency)
    var digits = String(minor.magnitude)
    if exponent > 0 {
      while digits.count <= exponent { digits = "0" + digits }
      digits.insert(".", at: digits.index(digits.endIndex, offsetBy: -exponent))
    }
    return (minor < 0 ? "-" : "") + digits
  }

  static func isoDate(year: Int, month: Int, day: Int) -> String {
    func two(_ value: Int) -> String { value < 10 ? "0\(value)" : String(value) }
    return "\(year)-\(two(month))-\(two(day))"
  }

  /// Text cut to at most `maxBytes` UTF-8 bytes, between scalars.
  static func clip(_ text: String, maxBytes: Int = FormatLimits.maxTextBytes) -> String {
    guard text.utf8.count > maxBytes else { return text }
    var out = ""
    var taken = 0
    for scalar in text.unicodeScalars {
      let size = String(scalar).utf8.count
      guard taken + size <= maxBytes else { break }
      taken += size
      out.unicodeScalars.append(scalar)
    }
    return out
  }
}
