import Foundation

/// Type conversions (`int()`, `string()`, `timestamp()`, …) and the time accessors.
enum Conversions {
  static func invalid(_ function: String, _ value: Value) -> EvaluationError {
    EvaluationError("invalid conversion: \(function)(\(Operators.describe(value)))")
  }

  static func range(_ function: String, _ value: Value) -> EvaluationError {
    EvaluationError("range error: \(function)(\(Operators.describe(value))) is out of range")
  }

  static func toInt(_ value: Value) throws(EvaluationError) -> Value {
    switch value {
    case .int: return value
    case .uint(let v):
      guard v <= UInt64(Int64.max) else { throw self.range("int", value) }
      return .int(Int64(v))
    case .double(let v):
      // Truncates toward zero; ±2^63 itself and beyond (and NaN) do not fit.
      guard v.isFinite, v > -9_223_372_036_854_775_809.0, v < 9_223_372_036_854_775_808.0 else { throw self.range("int", value) }
      return .int(Int64(v.rounded(.towardZero)))
    case .string(let v):
      guard let parsed = Int64(v) else { throw self.invalid("int", value) }
      return .int(parsed)
    case .timestamp(let v): return .int(v.seconds)
    default: throw .noSuchOverload("int", value)
    }
  }

  static func toUInt(_ value: Value) throws(EvaluationError) -> Value {
    switch value {
    case .uint: return value
    case .int(let v):
      guard v >= 0 else { throw self.range("uint", value) }
      return .uint(UInt64(v))
    case .double(let v):
      guard v.isFinite, v > -1, v < 18_446_744_073_709_551_616.0 else { throw self.range("uint", value) }
      return .uint(UInt64(v.rounded(.towardZero)))
    case .string(let v):
      guard let parsed = UInt64(v) else { throw self.invalid("uint", value) }
      return .uint(parsed)
    default: throw .noSuchOverload("uint", value)
    }
  }

  static func toDouble(_ value: Value) throws(EvaluationError) -> Value {
    switch value {
    case .double: return value
    case .int(let v): return .double(Double(v))
    case .uint(let v): return .double(Double(v))
    case .string(let v):
      // Decimal notation and the special values CEL's conformance uses; no hex floats.
      let allowed = v.unicodeScalars.allSatisfy { "0123456789.eE+-".unicodeScalars.contains($0) }
      if allowed, !v.isEmpty, let parsed = Double(v) { return .double(parsed) }
      switch v {
      case "NaN": return .double(.nan)
      case "Infinity", "+Infinity", "inf", "+inf": return .double(.infinity)
      case "-Infinity", "-inf": return .double(-.infinity)
      default: throw self.invalid("double", value)
      }
    default: throw .noSuchOverload("double", value)
    }
  }

  static func toString(_ value: Value) throws(EvaluationError) -> Value {
    switch value {
    case .string: return value
    case .int(let v): return .string(String(v))
    case .uint(let v): return .string(String(v))
    case .double(let v): return .string(self.format(v))
    case .bool(let v): return .string(String(v))
    case .bytes(let v):
      guard let text = String(validating: v, as: UTF8.self) else { throw self.invalid("string", value) }
      return .string(text)
    case .timestamp(let v): return .string(self.format(v))
    case .duration(let v): return .string(self.format(v))
    default: throw .noSuchOverload("string", value)
    }
  }

  static func toBytes(_ value: Value) throws(EvaluationError) -> Value {
    switch value {
    case .bytes: return value
    case .string(let v): return .bytes(Array(v.utf8))
    default: throw .noSuchOverload("bytes", value)
    }
  }

  static func toBool(_ value: Value) throws(EvaluationError) -> Value {
    switch value {
    case .bool: return value
    case .string(let v):
      switch v {
      case "true", "True", "TRUE", "t", "1": return .bool(true)
      case "false", "False", "FALSE", "f", "0": return .bool(false)
      default: throw self.invalid("bool", value)
      }
    default: throw .noSuchOverload("bool", value)
    }
  }

  static func toTimestamp(_ value: Value) throws(EvaluationError) -> Value {
    switch value {
    case .timestamp: return value
    case .string(let v):
      guard let parsed = self.parseTimestamp(v) else { throw self.invalid("timestamp", value) }
      return .timestamp(parsed)
    case .int(let v):
      guard let timestamp = Timestamp(seconds: v) else { throw self.range("timestamp", value) }
      return .timestamp(timestamp)
    default: throw .noSuchOverload("timestamp", value)
    }
  }

  static func toDuration(_ value: Value) throws(EvaluationError) -> Value {
    switch value {
    case .duration: return value
    case .string(let v):
      guard let parsed = self.parseDuration(v) else { throw self.invalid("duration", value) }
      return .duration(parsed)
    default: throw .noSuchOverload("duration", value)
    }
  }

  // MARK: Formatting

  /// Shortest text that reads back as the same double; whole numbers without ".0" (as CEL's
  /// reference implementation prints them).
  static func format(_ value: Double) -> String {
    if value.isNaN { return "NaN" }
    if value.isInfinite { return value < 0 ? "-Infinity" : "+Infinity" }
    if value == value.rounded(.towardZero), abs(value) < 1e21 {
      let text = "\(value)"
      if text.hasSuffix(".0") { return String(text.dropLast(2)) }
      return text
    }
    return "\(value)"
  }

  /// RFC 3339 in UTC, with as many fractional digits as needed (0, 3, 6 or 9).
  static func format(_ timestamp: Timestamp) -> String {
    let (days, secondOfDay) = self.floorDivide(timestamp.seconds, 86_400)
    let (year, month, day) = self.civil(fromDays: days)
    let hour = secondOfDay / 3600
    let minute = secondOfDay % 3600 / 60
    let second = secondOfDay % 60
    func pad(_ value: Int64, _ width: Int) -> String {
      let text = String(value)
      return String(repeating: "0", count: max(0, width - text.count)) + text
    }
    var text = "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(hour, 2)):\(pad(minute, 2)):\(pad(second, 2))"
    text += self.fraction(timestamp.nanos)
    return text + "Z"
  }

  /// Seconds with an `s` suffix, as protobuf's JSON form of a Duration ("5400s", "1.5s").
  static func format(_ duration: Duration) -> String {
    let negative = duration.seconds < 0 || duration.nanos < 0
    let seconds = duration.seconds.magnitude
    let nanos = Int32(duration.nanos.magnitude)
    return (negative ? "-" : "") + String(seconds) + self.fraction(nanos) + "s"
  }

  private static func fraction(_ nanos: Int32) -> String {
    guard nanos != 0 else { return "" }
    var digits = String(nanos)
    digits = String(repeating: "0", count: 9 - digits.count) + digits
    if digits.hasSuffix("000000") { return "." + digits.prefix(3) }
    if digits.hasSuffix("000") { return "." + digits.prefix(6) }
    return "." + digits
  }

  // MARK: Parsing

  /// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `t` and `z` in lower case too.
  static func parseTimestamp(_ text: String) -> Timestamp? {
    let b = Array(text.utf8)
    func number(_ from: Int, _ count: Int) -> Int64? {
      guard from + count <= b.count else { return nil }
      var value: Int64 = 0
      for byte in b[from..<(from + count)] {
        guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
        value = value * 10 + Int64(byte - UInt8(ascii: "0"))
      }
      return value
    }
    guard b.count >= 20, let year = number(0, 4), b[4] == UInt8(ascii: "-"), let month = number(5, 2), b[7] == UInt8(ascii: "-"),
      let day = number(8, 2), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t"), let hour = number(11, 2),
      b[13] == UInt8(ascii: ":"), let minute = number(14, 2), b[16] == UInt8(ascii: ":"), let second = number(17, 2)
    else { return nil }
    guard year >= 1, (1...12).contains(month), day >= 1, day <= self.daysIn(month: month, year: year), hour < 24, minute < 60,
      second < 60
    else { return nil }
    var index = 19
    var nanos: Int64 = 0
    if index < b.count, b[index] == UInt8(ascii: ".") {
      index += 1
      var digits = 0
      while index < b.count, b[index] >= UInt8(ascii: "0"), b[index] <= UInt8(ascii: "9") {
        guard digits < 9 else { return nil }
        nanos = nanos * 10 + Int64(b[index] - UInt8(ascii: "0"))
        digits += 1
        index += 1
      }
      guard digits > 0 else { return nil }
      for _ in digits..<9 { nanos *= 10 }
    }
    guard index < b.count else { return nil }
    var offset: Int64 = 0
    if b[index] == UInt8(ascii: "Z") || b[index] == UInt8(ascii: "z") {
      index += 1
    } else if b[index] == UInt8(ascii: "+") || b[index] == UInt8(ascii: "-") {
      let sign: Int64 = b[index] == UInt8(ascii: "-") ? -1 : 1
      guard let hours = number(index + 1, 2), index + 3 < b.count, b[index + 3] == UInt8(ascii: ":"),
        let minutes = number(index + 4, 2), hours < 24, minutes < 60
      else { return nil }
      offset = sign * (hours * 3600 + minutes * 60)
      index += 6
    } else {
      return nil
    }
    guard index == b.count else { return nil }
    let seconds = self.days(fromCivil: year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset
    return Timestamp(seconds: seconds, nanos: Int32(nanos))
  }

  /// Go's duration syntax: an optional sign, then one or more decimal numbers each with a unit
  /// (`h`, `m`, `s`, `ms`, `us`, `µs`, `ns`), e.g. "1h30m", "1.5h", "-2m", "100ms".
  static func parseDuration(_ text: String) -> Duration? {
    var scalars = Array(text.unicodeScalars)[...]
    var negative = false
    if let first = scalars.first, first == "-" || first == "+" {
      negative = first == "-"
      scalars = scalars.dropFirst()
    }
    if scalars.count == 1, scalars.first == "0" { return Duration(seconds: 0) }
    guard !scalars.isEmpty else { return nil }
    var total: Double = 0
    // Exact integer nanoseconds when every part is whole; the double is a fallback for fractions.
    var nanos: Int64 = 0
    var exact = true
    while !scalars.isEmpty {
      var number = ""
      while let c = scalars.first, ("0"..."9").contains(c) || c == "." {
        number.unicodeScalars.append(c)
        scalars = scalars.dropFirst()
      }
      var unit = ""
      while let c = scalars.first, !("0"..."9").contains(c), c != "." {
        unit.unicodeScalars.append(c)
        scalars = scalars.dropFirst()
      }
      let scale: Int64
      switch unit {
      case "h": scale = 3_600_000_000_000
      case "m": scale = 60_000_000_000
      case "s": scale = 1_000_000_000
      case "ms": scale = 1_000_000
      case "us", "µs", "μs": scale = 1_000
      case "ns": scale = 1
      default: return nil
      }
      guard !number.isEmpty, number != ".", let value = Double(number) else { return nil }
      total += value * Double(scale)
      if let whole = Int64(number) {
        let (product, overflow) = whole.multipliedReportingOverflow(by: scale)
        let (sum, overflowSum) = nanos.addingReportingOverflow(product)
        if overflow || overflowSum { exact = false } else { nanos = sum }
      } else {
        exact = false
      }
    }
    if !exact {
      guard total.isFinite, total < 9.2e18 else {
        // Beyond Int64 nanoseconds (±292 years): whole seconds.
        let seconds = total / 1e9
        guard seconds < Double(Duration.maxSeconds) else { return nil }
        return Duration(seconds: (negative ? -1 : 1) * Int64(seconds))
      }
      nanos = Int64(total.rounded())
    }
    if negative { nanos = -nanos }
    return Duration(seconds: nanos / 1_000_000_000, nanos: Int32(nanos % 1_000_000_000))
  }

  // MARK: Calendar (proleptic Gregorian, Howard Hinnant's algorithms)

  static func floorDivide(_ a: Int64, _ b: Int64) -> (Int64, Int64) {
    let quotient = a >= 0 ? a / b : -((-a + b - 1) / b)
    return (quotient, a - quotient * b)
  }

  static func days(fromCivil year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yearOfEra = y - era * 400
    let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
    let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
    return era * 146_097 + dayOfEra - 719_468
  }

  static func civil(fromDays days: Int64) -> (year: Int64, month: Int64, day: Int64) {
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let dayOfEra = z - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let mp = (5 * dayOfYear + 2) / 153
    let day = dayOfYear - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
  }

  static func daysIn(month: Int64, year: Int64) -> Int64 {
    switch month {
    case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
    case 4, 6, 9, 11: 30
    default: 31
    }
  }

  // MARK: Accessors

  /// The offset from UTC, in seconds, of `zone` at `timestamp`: an IANA name ("Asia/Shanghai"),
  /// "UTC", or a fixed offset ("+08:00", "-05:30").
  static func offset(_ zone: String, at timestamp: Timestamp) throws(EvaluationError) -> Int64 {
    if zone == "UTC" || zone == "Z" { return 0 }
    let scalars = Array(zone.unicodeScalars)
    if scalars.count == 6, scalars[0] == "+" || scalars[0] == "-", scalars[3] == ":",
      let hours = Int64(String(String.UnicodeScalarView(scalars[1...2]))),
      let minutes = Int64(String(String.UnicodeScalarView(scalars[4...5]))), hours < 24, minutes < 60
    {
      return (scalars[0] == "-" ? -1 : 1) * (hours * 3600 + minutes * 60)
    }
    guard zone.utf8.count <= 64, let timeZone = TimeZone(identifier: zone) else {
      throw EvaluationError("invalid time zone: \(Operators.describe(.string(zone)))")
    }
    return Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(timestamp.seconds))))
  }

  static func accessor(_ name: String, _ value: Value, zone: String?) throws(EvaluationError) -> Value {
    switch value {
    case .timestamp(let timestamp):
      let local = timestamp.seconds + (try zone.map { (zone) throws(EvaluationError) -> Int64 in try self.offset(zone, at: timestamp) } ?? 0)
      let (days, secondOfDay) = self.floorDivide(local, 86_400)
      let (year, month, day) = self.civil(fromDays: days)
      switch name {
      case "getFullYear": return .int(year)
      case "getMonth": return .int(month - 1)
      case "getDayOfMonth": return .int(day - 1)
      case "getDate": return .int(day)
      case "getDayOfYear": return .int(days - self.days(fromCivil: year, 1, 1))
      case "getDayOfWeek": return .int(self.floorDivide(days + 4, 7).1)  // 1970-01-01 was a Thursday
      case "getHours": return .int(secondOfDay / 3600)
      case "getMinutes": return .int(secondOfDay % 3600 / 60)
      case "getSeconds": return .int(secondOfDay % 60)
      case "getMilliseconds": return .int(Int64(timestamp.nanos) / 1_000_000)
      default: throw .noSuchOverload(name, value)
      }
    case .duration(let duration):
      guard zone == nil else { throw .noSuchOverload(name, value, .string(zone ?? "")) }
      switch name {
      case "getHours": return .int(duration.seconds / 3600)
      case "getMinutes": return .int(duration.seconds / 60)
      case "getSeconds": return .int(duration.seconds)
      case "getMilliseconds": return .int(duration.seconds * 1000 + Int64(duration.nanos) / 1_000_000)
      default: throw .noSuchOverload(name, value)
      }
    default:
      throw .noSuchOverload(name, value)
    }
  }
}
