/// An ISO 4217 alphabetic currency code ("CNY", "USD").
public struct CurrencyCode: Sendable, Hashable, Comparable, CustomStringConvertible {
  public let code: String

  /// Accepts exactly three upper-case ASCII letters; returns nil otherwise.
  public init?(_ code: String) {
    guard code.utf8.count == 3, code.utf8.allSatisfy({ $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") })
    else { return nil }
    self.code = code
  }

  public var description: String { self.code }

  public static func < (lhs: CurrencyCode, rhs: CurrencyCode) -> Bool { lhs.code < rhs.code }
}

/// An amount of money: an integer count of minor units in one currency. Never a float.
public struct Money: Sendable, Hashable, CustomStringConvertible {
  public var minorUnits: Int64
  public var currency: CurrencyCode

  public init(minorUnits: Int64, currency: CurrencyCode) {
    self.minorUnits = minorUnits
    self.currency = currency
  }

  /// Number of decimal places of the currency's minor unit (ISO 4217 exponent).
  public static func minorUnitExponent(of currency: CurrencyCode) -> Int {
    switch currency.code {
    case "JPY", "KRW", "VND", "CLP", "ISK": 0
    case "BHD", "KWD", "OMR", "JOD", "TND", "IQD", "LYD": 3
    default: 2
    }
  }

  /// Decimal rendering without floating point, e.g. `1234.56 CNY`.
  public var description: String {
    "\(Money.format(minorUnits: self.minorUnits, exponent: Money.minorUnitExponent(of: self.currency))) \(self.currency)"
  }

  /// Renders minor units as a decimal string with `exponent` fraction digits.
  public static func format(minorUnits: Int64, exponent: Int) -> String {
    let negative = minorUnits < 0
    let magnitude = minorUnits.magnitude
    guard exponent > 0 else { return (negative ? "-" : "") + String(magnitude) }
    var divisor: UInt64 = 1
    for _ in 0..<exponent { divisor *= 10 }
    let whole = magnitude / divisor
    var fraction = String(magnitude % divisor)
    while fraction.count < exponent { fraction = "0" + fraction }
    return (negative ? "-" : "") + "\(whole).\(fraction)"
  }

  /// Parses a decimal string ("1234.56") into minor units with `exponent` fraction digits.
  /// Returns nil for anything that is not an exact decimal of at most `exponent` places, or that
  /// overflows Int64.
  public static func parseMinorUnits(_ text: String, exponent: Int) -> Int64? {
    var text = Substring(text)
    var negative = false
    if text.first == "-" {
      negative = true
      text = text.dropFirst()
    }
    let parts = text.split(separator: ".", omittingEmptySubsequences: false)
    guard (1...2).contains(parts.count), let wholeText = parts.first, !wholeText.isEmpty,
      wholeText.allSatisfy(\.isASCIIDigit)
    else { return nil }
    let fractionText = parts.count == 2 ? parts[1] : ""
    guard fractionText.count <= exponent, fractionText.allSatisfy(\.isASCIIDigit),
      parts.count == 1 || !fractionText.isEmpty
    else { return nil }
    var value: Int64 = 0
    for character in wholeText + fractionText + String(repeating: "0", count: exponent - fractionText.count) {
      guard let digit = character.wholeNumberValue else { return nil }
      let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
      let (sum, overflow2) = times10.addingReportingOverflow(Int64(digit))
      if overflow1 || overflow2 { return nil }
      value = sum
    }
    return negative ? -value : value
  }
}

extension Character {
  fileprivate var isASCIIDigit: Bool { self.isASCII && self.isNumber }
}
