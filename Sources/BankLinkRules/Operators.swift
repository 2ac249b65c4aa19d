/// The operators' run-time semantics, shared by statically typed and `dyn` operands: each
/// switches on the operand values, so a `dyn` operand of the wrong kind fails here with
/// "no such overload".
enum Operators {
  // MARK: Equality and ordering

  /// CEL equality: deep on lists, maps and objects; numeric across int, uint and double by value;
  /// false across other kinds; NaN equals nothing.
  static func equal(_ lhs: Value, _ rhs: Value) -> Bool {
    switch (lhs, rhs) {
    case (.int(let a), .int(let b)): return a == b
    case (.uint(let a), .uint(let b)): return a == b
    case (.double(let a), .double(let b)): return a == b
    case (.int, .uint), (.int, .double), (.uint, .int), (.uint, .double), (.double, .int), (.double, .uint):
      return self.numericOrder(lhs, rhs) == 0
    case (.string(let a), .string(let b)): return UTF8Text.equal(a, b)
    case (.bytes(let a), .bytes(let b)): return a == b
    case (.bool(let a), .bool(let b)): return a == b
    case (.null, .null): return true
    case (.timestamp(let a), .timestamp(let b)): return a == b
    case (.duration(let a), .duration(let b)): return a == b
    case (.list(let a), .list(let b)):
      return a.count == b.count && zip(a, b).allSatisfy { self.equal($0, $1) }
    case (.map(let a), .map(let b)):
      guard a.count == b.count else { return false }
      return a.keys.allSatisfy { key in
        guard let left = a[key], let right = self.lookup(b, key.value) else { return false }
        return self.equal(left, right)
      }
    case (.object(let a), .object(let b)):
      guard a.type == b.type else { return false }
      return zip(a.fields, b.fields).enumerated().allSatisfy { index, pair in
        let type = a.type.fields[index].type
        return self.equal(pair.0 ?? Self.defaultValue(type), pair.1 ?? Self.defaultValue(type))
      }
    default:
      return false
    }
  }

  /// -1, 0 or 1 for two numbers of any numeric kinds, exactly (no rounding through double);
  /// nil when either is NaN.
  static func numericOrder(_ lhs: Value, _ rhs: Value) -> Int? {
    func order<T: Comparable>(_ a: T, _ b: T) -> Int { a < b ? -1 : (a == b ? 0 : 1) }
    switch (lhs, rhs) {
    case (.int(let a), .int(let b)): return order(a, b)
    case (.uint(let a), .uint(let b)): return order(a, b)
    case (.double(let a), .double(let b)): return a.isNaN || b.isNaN ? nil : order(a, b)
    case (.int(let a), .uint(let b)): return a < 0 ? -1 : order(UInt64(a), b)
    case (.uint, .int): return self.numericOrder(rhs, lhs).map { -$0 }
    case (.int(let a), .double(let b)):
      if b.isNaN { return nil }
      if b >= 9_223_372_036_854_775_808.0 { return -1 }
      if b < -9_223_372_036_854_775_808.0 { return 1 }
      let whole = b.rounded(.down)
      let truncated = Int64(whole)
      if a != truncated { return order(a, truncated) }
      return whole == b ? 0 : -1
    case (.double, .int): return self.numericOrder(rhs, lhs).map { -$0 }
    case (.uint(let a), .double(let b)):
      if b.isNaN { return nil }
      if b < 0 { return 1 }
      if b >= 18_446_744_073_709_551_616.0 { return -1 }
      let whole = b.rounded(.down)
      let truncated = UInt64(whole)
      if a != truncated { return order(a, truncated) }
      return whole == b ? 0 : -1
    case (.double, .uint): return self.numericOrder(rhs, lhs).map { -$0 }
    default: return nil
    }
  }

  /// `<` `<=` `>` `>=`: `op` is the operator; false when the operands are unordered (NaN).
  static func compare(_ op: String, _ lhs: Value, _ rhs: Value) throws(EvaluationError) -> Bool {
    let order: Int?
    switch (lhs, rhs) {
    case _ where lhs.isNumber && rhs.isNumber:
      order = self.numericOrder(lhs, rhs)
    case (.string(let a), .string(let b)):
      order = UTF8Text.order(a, b)
    case (.bytes(let a), .bytes(let b)): order = a.lexicographicallyPrecedes(b) ? -1 : (a == b ? 0 : 1)
    case (.bool(let a), .bool(let b)): order = a == b ? 0 : (a ? 1 : -1)
    case (.timestamp(let a), .timestamp(let b)): order = a < b ? -1 : (a == b ? 0 : 1)
    case (.duration(let a), .duration(let b)): order = a < b ? -1 : (a == b ? 0 : 1)
    default: throw .noSuchOverload(op, lhs, rhs)
    }
    guard let order else { return false }
    switch op {
    case "<": return order < 0
    case "<=": return order <= 0
    case ">": return order > 0
    default: return order >= 0
    }
  }

  // MARK: Arithmetic

  static func add(_ lhs: Value, _ rhs: Value) throws(EvaluationError) -> Value {
    switch (lhs, rhs) {
    case (.int(let a), .int(let b)):
      let (sum, overflow) = a.addingReportingOverflow(b)
      if overflow { throw .overflow }
      return .int(sum)
    case (.uint(let a), .uint(let b)):
      let (sum, overflow) = a.addingReportingOverflow(b)
      if overflow { throw .overflow }
      return .uint(sum)
    case (.double(let a), .double(let b)): return .double(a + b)
    case (.string(let a), .string(let b)):
      guard a.utf8.count + b.utf8.count <= RuleLimits.maxValueBytes else { throw self.tooLarge }
      return .string(a + b)
    case (.bytes(let a), .bytes(let b)):
      guard a.count + b.count <= RuleLimits.maxValueBytes else { throw self.tooLarge }
      return .bytes(a + b)
    case (.list(let a), .list(let b)):
      guard a.count + b.count <= RuleLimits.maxValueElements else { throw self.tooLarge }
      return .list(a + b)
    case (.timestamp(let a), .duration(let b)), (.duration(let b), .timestamp(let a)):
      return .timestamp(try self.shift(a, by: b.seconds, b.nanos))
    case (.duration(let a), .duration(let b)):
      return .duration(try self.duration(a.seconds, b.seconds, Int64(a.nanos) + Int64(b.nanos), add: true))
    default: throw .noSuchOverload("_+_", lhs, rhs)
    }
  }

  static let tooLarge = EvaluationError(
    "value too large: at most \(RuleLimits.maxValueBytes) bytes of string or bytes, \(RuleLimits.maxValueElements) list elements")

  static func subtract(_ lhs: Value, _ rhs: Value) throws(EvaluationError) -> Value {
    switch (lhs, rhs) {
    case (.int(let a), .int(let b)):
      let (difference, overflow) = a.subtractingReportingOverflow(b)
      if overflow { throw .overflow }
      return .int(difference)
    case (.uint(let a), .uint(let b)):
      let (difference, overflow) = a.subtractingReportingOverflow(b)
      if overflow { throw .overflow }
      return .uint(difference)
    case (.double(let a), .double(let b)): return .double(a - b)
    case (.timestamp(let a), .duration(let b)):
      return .timestamp(try self.shift(a, by: -b.seconds, -b.nanos))
    case (.timestamp(let a), .timestamp(let b)):
      return .duration(try self.duration(a.seconds, b.seconds, Int64(a.nanos) - Int64(b.nanos), add: false))
    case (.duration(let a), .duration(let b)):
      return .duration(try self.duration(a.seconds, b.seconds, Int64(a.nanos) - Int64(b.nanos), add: false))
    default: throw .noSuchOverload("_-_", lhs, rhs)
    }
  }

  private static func duration(_ a: Int64, _ b: Int64, _ nanos: Int64, add: Bool) throws(EvaluationError) -> Duration {
    let (seconds, overflow) = add ? a.addingReportingOverflow(b) : a.subtractingReportingOverflow(b)
    guard !overflow, let duration = Duration(seconds: seconds, nanos: 0).flatMap({ Self.adding(nanos, to: $0) }) else {
      throw EvaluationError("range error: duration out of range")
    }
    return duration
  }

  private static func adding(_ nanos: Int64, to duration: Duration) -> Duration? {
    Duration(seconds: duration.seconds + nanos / 1_000_000_000, nanos: Int32(nanos % 1_000_000_000))
  }

  private static func shift(_ timestamp: Timestamp, by seconds: Int64, _ nanos: Int32) throws(EvaluationError) -> Timestamp {
    var total = Int64(timestamp.nanos) + Int64(nanos)
    var carry: Int64 = 0
    if total < 0 {
      total += 1_000_000_000
      carry = -1
    } else if total >= 1_000_000_000 {
      total -= 1_000_000_000
      carry = 1
    }
    let (shifted, overflow) = timestamp.seconds.addingReportingOverflow(seconds)
    guard !overflow, let result = Timestamp(seconds: shifted + carry, nanos: Int32(total)) else {
      throw EvaluationError("range error: timestamp out of range")
    }
    return result
  }

  static func multiply(_ lhs: Value, _ rhs: Value) throws(EvaluationError) -> Value {
    switch (lhs, rhs) {
    case (.int(let a), .int(let b)):
      let (product, overflow) = a.multipliedReportingOverflow(by: b)
      if overflow { throw .overflow }
      return .int(product)
    case (.uint(let a), .uint(let b)):
      let (product, overflow) = a.multipliedReportingOverflow(by: b)
      if overflow { throw .overflow }
      return .uint(product)
    case (.double(let a), .double(let b)): return .double(a * b)
    default: throw .noSuchOverload("_*_", lhs, rhs)
    }
  }

  static func divide(_ lhs: Value, _ rhs: Value) throws(EvaluationError) -> Value {
    switch (lhs, rhs) {
    case (.int(let a), .int(let b)):
      if b == 0 { throw .divisionByZero }
      let (quotient, overflow) = a.dividedReportingOverflow(by: b)
      if overflow { throw .overflow }
      return .int(quotient)
    case (.uint(let a), .uint(let b)):
      if b == 0 { throw .divisionByZero }
      return .uint(a / b)
    case (.double(let a), .double(let b)): return .double(a / b)
    default: throw .noSuchOverload("_/_", lhs, rhs)
    }
  }

  static func modulo(_ lhs: Value, _ rhs: Value) throws(EvaluationError) -> Value {
    switch (lhs, rhs) {
    case (.int(let a), .int(let b)):
      if b == 0 { throw .modulusByZero }
      let (remainder, overflow) = a.remainderReportingOverflow(dividingBy: b)
      if overflow { throw .overflow }
      return .int(remainder)
    case (.uint(let a), .uint(let b)):
      if b == 0 { throw .modulusByZero }
      return .uint(a % b)
    default: throw .noSuchOverload("_%_", lhs, rhs)
    }
  }

  static func negate(_ operand: Value) throws(EvaluationError) -> Value {
    switch operand {
    case .int(let a):
      if a == .min { throw .overflow }
      return .int(-a)
    case .double(let a): return .double(-a)
    case .duration(let a):
      guard let negated = Duration(seconds: -a.seconds, nanos: -a.nanos) else { throw EvaluationError("range error: duration out of range") }
      return .duration(negated)
    default: throw .noSuchOverload("-_", operand)
    }
  }

  // MARK: Containers

  static func lookup(_ map: MapValue, _ key: Value) -> Value? {
    if let exact = MapKey(key), let value = map[exact] { return value }
    // Numeric keys match across int and uint by value (1 and 1u name the same entry).
    switch key {
    case .int(let a) where a >= 0: return map[.uint(UInt64(a))]
    case .uint(let a) where a <= UInt64(Int64.max): return map[.int(Int64(a))]
    case .double(let a) where a == a.rounded(.towardZero) && abs(a) < 9.2e18:
      return map[.int(Int64(a))] ?? (a >= 0 ? map[.uint(UInt64(a))] : nil)
    default: return nil
    }
  }

  static func index(_ container: Value, _ index: Value) throws(EvaluationError) -> Value {
    switch (container, index) {
    case (.list(let list), _):
      let position: Int
      switch index {
      case .int(let i): position = Int(truncatingIfNeeded: i)
      case .uint(let i): position = i > UInt64(Int.max) ? -1 : Int(i)
      case .double(let d) where d == d.rounded(.towardZero) && abs(d) < 9.2e18: position = Int(d)
      default: throw .noSuchOverload("_[_]", container, index)
      }
      guard position >= 0, position < list.count else {
        throw EvaluationError("index out of range: \(position) in a list of \(list.count)")
      }
      return list[position]
    case (.map(let map), _):
      guard MapKey(index) != nil || index.isNumber else { throw .noSuchOverload("_[_]", container, index) }
      guard let value = self.lookup(map, index) else { throw EvaluationError("no such key: \(Self.describe(index))") }
      return value
    default:
      throw .noSuchOverload("_[_]", container, index)
    }
  }

  static func contains(_ element: Value, in container: Value) throws(EvaluationError) -> Bool {
    switch container {
    case .list(let list): return list.contains { self.equal(element, $0) }
    case .map(let map):
      guard MapKey(element) != nil || element.isNumber else { throw .noSuchOverload("@in", element, container) }
      return self.lookup(map, element) != nil
    default: throw .noSuchOverload("@in", element, container)
    }
  }

  static func size(_ value: Value) throws(EvaluationError) -> Value {
    switch value {
    case .string(let s): return .int(Int64(s.unicodeScalars.count))
    case .bytes(let b): return .int(Int64(b.count))
    case .list(let l): return .int(Int64(l.count))
    case .map(let m): return .int(Int64(m.count))
    default: throw .noSuchOverload("size", value)
    }
  }

  /// The default of a declared field's type (what an unset field reads as).
  static func defaultValue(_ type: CELType) -> Value {
    switch type {
    case .int: .int(0)
    case .uint: .uint(0)
    case .double: .double(0)
    case .string: .string("")
    case .bytes: .bytes([])
    case .bool: .bool(false)
    case .list: .list([])
    case .map: .map(MapValue())
    case .timestamp: .timestamp(Timestamp(seconds: 0)!)
    case .duration: .duration(Duration(seconds: 0)!)
    case .object(let type): .object(ObjectValue(type: type, fields: Array(repeating: nil, count: type.fields.count)))
    case .null, .dyn: .null
    }
  }

  /// A short rendering of a value, for explanations and error messages.
  static func describe(_ value: Value, limit: Int = 64) -> String {
    let text: String
    switch value {
    case .int(let v): text = String(v)
    case .uint(let v): text = "\(v)u"
    case .double(let v): text = Conversions.format(v)
    case .string(let v): text = "\"" + v + "\""
    case .bytes(let v): text = "b\"" + v.map { String($0, radix: 16) }.joined() + "\""
    case .bool(let v): text = String(v)
    case .null: text = "null"
    case .list(let v): text = "[" + v.prefix(8).map { self.describe($0, limit: 16) }.joined(separator: ", ") + (v.count > 8 ? ", …]" : "]")
    case .map(let v): text = "{" + v.keys.prefix(8).map { "\(self.describe($0.value, limit: 16)): …" }.joined(separator: ", ") + "}"
    case .timestamp(let v): text = Conversions.format(v)
    case .duration(let v): text = Conversions.format(v)
    case .object(let v): text = v.type.name + "{…}"
    }
    guard text.unicodeScalars.count > limit else { return text }
    return String(String.UnicodeScalarView(text.unicodeScalars.prefix(limit - 1))) + "…"
  }
}

extension Value {
  var isNumber: Bool {
    switch self {
    case .int, .uint, .double: true
    default: false
    }
  }
}
