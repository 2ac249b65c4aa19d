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
  /// Statements (reports, notifications) in one file, MT940 or camt.
  public static let maxStatementsPerFile = 100_000
  /// Largest statement, legal sequence or page number accepted: far beyond any bank's count
  /// (camt's ElctrncSeqNb is 18 digits in the schema), small enough that arithmetic on it never
  /// overflows.
  public static let maxSequenceNumber = 1_000_000_000_000_000
}

/// Amounts and dates as the formats write them.
public enum FormatValues {
  /// Number of decimal places of a currency's minor unit (ISO 4217).
  /// Read for every amount of a statement file: the code's three bytes are compared as one
  /// integer rather than as seventeen `String` comparisons.
  public static func exponent(of currency: String) -> Int {
    var utf8 = currency.utf8.makeIterator()
    guard let first = utf8.next(), let second = utf8.next(), let third = utf8.next(), utf8.next() == nil else { return 2 }
    switch UInt32(first) << 16 | UInt32(second) << 8 | UInt32(third) {
    case Self.code("JPY"), Self.code("KRW"), Self.code("VND"), Self.code("CLP"), Self.code("ISK"), Self.code("XOF"),
      Self.code("XAF"), Self.code("PYG"), Self.code("UGX"), Self.code("RWF"):
      return 0
    case Self.code("BHD"), Self.code("KWD"), Self.code("OMR"), Self.code("JOD"), Self.code("TND"), Self.code("IQD"),
      Self.code("LYD"):
      return 3
    default: return 2
    }
  }

  /// A three-letter code as the integer ``exponent(of:)`` switches on.
  private static func code(_ text: StaticString) -> UInt32 {
    let bytes = text.utf8Start
    return UInt32(bytes[0]) << 16 | UInt32(bytes[1]) << 8 | UInt32(bytes[2])
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
    // Read for every entry's dates: the bytes are looked at in place, and a plain date is
    // returned as the same String (no copy).
    var (year, month, day) = (0, 0, 0)
    var index = 0
    for byte in text.utf8 {
      guard index < 10 else { break }
      switch index {
      case 4, 7: guard byte == UInt8(ascii: "-") else { return nil }
      default:
        guard byte >= 0x30 && byte <= 0x39 else { return nil }
        let digit = Int(byte - 0x30)
        if index < 4 { year = year * 10 + digit } else if index < 7 { month = month * 10 + digit } else { day = day * 10 + digit }
      }
      index += 1
    }
    guard index == 10, Self.isValidDate(year: year, month: month, day: day) else { return nil }
    return text.utf8.count == 10 ? text : String(text.utf8.prefix(10))!
  }

  static func isValidDate(year: Int, month: Int, day: Int) -> Bool {
    guard (1900...2999).contains(year), (1...12).contains(month), day >= 1 else { return false }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
    let days =
      switch month {
      case 2: leap ? 29 : 28
      case 4, 6, 9, 11: 30
      default: 31
      }
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

  /// The pieces of `text` between the ASCII byte `separator`, split as bytes: the MT readers'
  /// separators (line feed, `/`, `?`) are plain ASCII, and a byte split costs no grapheme
  /// breaking. (Their lines never hold CR LF: a line's CR is stripped as it is read.)
  static func split(_ text: some StringProtocol, _ separator: UInt8, omittingEmpty: Bool = true) -> [Substring] {
    Substring(text).utf8.split(separator: separator, omittingEmptySubsequences: omittingEmpty).map { Substring($0) }
  }

  /// Where the ASCII `needle` first occurs in `text`, found by bytes (no Foundation search).
  static func firstRange(of needle: StaticString, in text: Substring) -> Range<String.Index>? {
    let wanted = UnsafeBufferPointer(start: needle.utf8Start, count: needle.utf8CodeUnitCount)
    guard let head = wanted.first else { return nil }
    let utf8 = text.utf8
    var index = utf8.startIndex
    while let found = utf8[index...].firstIndex(of: head) {
      var probe = found
      var matched = 0
      while matched < wanted.count, probe < utf8.endIndex, utf8[probe] == wanted[matched] {
        matched += 1
        probe = utf8.index(after: probe)
      }
      if matched == wanted.count { return found..<probe }
      index = utf8.index(after: found)
    }
    return nil
  }

  /// Text cut to at most `maxBytes` UTF-8 bytes, between scalars.
  public static func clip(_ text: String, maxBytes: Int = FormatLimits.maxTextBytes) -> String {
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
