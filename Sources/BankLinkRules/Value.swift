/// The static type of an expression in the CEL subset (docs/rules.md).
public indirect enum CELType: Hashable, Sendable, CustomStringConvertible {
  case int, uint, double, string, bytes, bool, null, timestamp, duration
  /// Known only at run time: checks against anything; a misuse fails when evaluated.
  case dyn
  case list(CELType)
  case map(CELType, CELType)
  /// A declared message type (`payment`, `features`, …) with fixed fields.
  case object(ObjectType)

  public var description: String {
    switch self {
    case .int: "int"
    case .uint: "uint"
    case .double: "double"
    case .string: "string"
    case .bytes: "bytes"
    case .bool: "bool"
    case .null: "null_type"
    case .timestamp: "google.protobuf.Timestamp"
    case .duration: "google.protobuf.Duration"
    case .dyn: "dyn"
    case .list(let element): "list(\(element))"
    case .map(let key, let value): "map(\(key), \(value))"
    case .object(let type): type.name
    }
  }

  var isNumeric: Bool {
    switch self {
    case .int, .uint, .double: true
    default: false
    }
  }

  /// Whether a value of one type may stand where the other is expected (dyn matches anything).
  func isCompatible(with other: CELType) -> Bool {
    switch (self, other) {
    case (.dyn, _), (_, .dyn): true
    case (.list(let a), .list(let b)): a.isCompatible(with: b)
    case (.map(let ka, let va), .map(let kb, let vb)): ka.isCompatible(with: kb) && va.isCompatible(with: vb)
    default: self == other
    }
  }

  /// The most specific type both `self` and `other` have: themselves when equal, dyn otherwise.
  func joined(with other: CELType) -> CELType {
    if self == other { return self }
    switch (self, other) {
    case (.list(let a), .list(let b)): return .list(a.joined(with: b))
    case (.map(let ka, let va), .map(let kb, let vb)): return .map(ka.joined(with: kb), va.joined(with: vb))
    default: return .dyn
    }
  }
}

/// A declared message type: named fields with static types, read by slot at run time.
public final class ObjectType: Hashable, Sendable, CustomStringConvertible {
  public let name: String
  public let fields: [(name: String, type: CELType)]
  let slots: [String: Int]

  public init(name: String, fields: [(name: String, type: CELType)]) {
    self.name = name
    self.fields = fields
    var slots: [String: Int] = [:]
    for (index, field) in fields.enumerated() { slots[field.name] = index }
    self.slots = slots
  }

  public func slot(_ field: String) -> Int? { self.slots[field] }

  public var description: String { self.name }

  public static func == (lhs: ObjectType, rhs: ObjectType) -> Bool { lhs === rhs }
  public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}

/// A value of a declared message type. An unset field (nil) reads as its type's default and
/// makes `has()` false.
public struct ObjectValue: Sendable {
  public let type: ObjectType
  public var fields: [Value?]

  public init(type: ObjectType, fields: [Value?]) {
    precondition(fields.count == type.fields.count, "one value (or nil) per declared field of \(type.name)")
    self.type = type
    self.fields = fields
  }

  /// Builds the value from named fields; fields not named are unset.
  public init(type: ObjectType, _ named: [String: Value]) {
    self.type = type
    self.fields = type.fields.map { named[$0.name] }
  }
}

/// A key of a CEL map: int, uint, bool or string. Strings are equal when their code points
/// are (CEL compares scalars; Swift's `String ==` would join "é" and "e\u{301}").
public enum MapKey: Hashable, Sendable {
  case int(Int64), uint(UInt64), bool(Bool), string(String)

  public static func == (lhs: MapKey, rhs: MapKey) -> Bool {
    switch (lhs, rhs) {
    case (.int(let a), .int(let b)): a == b
    case (.uint(let a), .uint(let b)): a == b
    case (.bool(let a), .bool(let b)): a == b
    case (.string(let a), .string(let b)): a.utf8.elementsEqual(b.utf8)
    default: false
    }
  }

  public func hash(into hasher: inout Hasher) {
    switch self {
    case .int(let v):
      hasher.combine(0 as UInt8)
      hasher.combine(v)
    case .uint(let v):
      hasher.combine(1 as UInt8)
      hasher.combine(v)
    case .bool(let v):
      hasher.combine(2 as UInt8)
      hasher.combine(v)
    case .string(let v):
      hasher.combine(3 as UInt8)
      hasher.combine(v.utf8.count)
      for byte in v.utf8 { hasher.combine(byte) }
    }
  }

  init?(_ value: Value) {
    switch value {
    case .int(let v): self = .int(v)
    case .uint(let v): self = .uint(v)
    case .bool(let v): self = .bool(v)
    case .string(let v): self = .string(v)
    default: return nil
    }
  }

  var value: Value {
    switch self {
    case .int(let v): .int(v)
    case .uint(let v): .uint(v)
    case .bool(let v): .bool(v)
    case .string(let v): .string(v)
    }
  }
}

/// A CEL map: keys in insertion order (macros iterate them in that order), looked up by hash.
public struct MapValue: Sendable {
  public private(set) var keys: [MapKey] = []
  var storage: [MapKey: Value] = [:]

  public init() {}

  public init(_ entries: [(MapKey, Value)]) {
    for (key, value) in entries { self[key] = value }
  }

  public subscript(key: MapKey) -> Value? {
    get { self.storage[key] }
    set {
      if let newValue {
        if self.storage.updateValue(newValue, forKey: key) == nil { self.keys.append(key) }
      } else if self.storage.removeValue(forKey: key) != nil {
        self.keys.removeAll { $0 == key }
      }
    }
  }

  public var count: Int { self.keys.count }
}

/// A point in time: seconds since the Unix epoch and nanoseconds, years 1 through 9999.
public struct Timestamp: Hashable, Comparable, Sendable {
  public var seconds: Int64
  public var nanos: Int32

  /// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
  public static let minSeconds: Int64 = -62_135_596_800
  public static let maxSeconds: Int64 = 253_402_300_799

  public init?(seconds: Int64, nanos: Int32 = 0) {
    guard (Self.minSeconds...Self.maxSeconds).contains(seconds), (0..<1_000_000_000).contains(nanos) else { return nil }
    self.seconds = seconds
    self.nanos = nanos
  }

  public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
    (lhs.seconds, lhs.nanos) < (rhs.seconds, rhs.nanos)
  }
}

/// A signed span of time, at most ±10,000 years (as protobuf's Duration).
public struct Duration: Hashable, Comparable, Sendable {
  /// Total nanoseconds split so that `nanos` has the sign of `seconds` (or is zero).
  public var seconds: Int64
  public var nanos: Int32

  public static let maxSeconds: Int64 = 315_576_000_000

  public init?(seconds: Int64, nanos: Int32 = 0) {
    var seconds = seconds
    var nanos = Int64(nanos)
    seconds += nanos / 1_000_000_000
    nanos %= 1_000_000_000
    if seconds > 0 && nanos < 0 {
      seconds -= 1
      nanos += 1_000_000_000
    } else if seconds < 0 && nanos > 0 {
      seconds += 1
      nanos -= 1_000_000_000
    }
    guard (-Self.maxSeconds...Self.maxSeconds).contains(seconds) else { return nil }
    self.seconds = seconds
    self.nanos = Int32(nanos)
  }

  public static func < (lhs: Duration, rhs: Duration) -> Bool {
    (lhs.seconds, lhs.nanos) < (rhs.seconds, rhs.nanos)
  }
}

/// A run-time value.
public enum Value: Sendable {
  case int(Int64)
  case uint(UInt64)
  case double(Double)
  case string(String)
  case bytes([UInt8])
  case bool(Bool)
  case null
  case list([Value])
  case map(MapValue)
  case timestamp(Timestamp)
  case duration(Duration)
  case object(ObjectValue)

  /// The name of the value's type, as error messages give it.
  public var typeName: String {
    switch self {
    case .int: "int"
    case .uint: "uint"
    case .double: "double"
    case .string: "string"
    case .bytes: "bytes"
    case .bool: "bool"
    case .null: "null_type"
    case .list: "list"
    case .map: "map"
    case .timestamp: "google.protobuf.Timestamp"
    case .duration: "google.protobuf.Duration"
    case .object(let object): object.type.name
    }
  }
}

/// A run-time failure of an expression (a value in CEL: `&&`, `||` and the macros absorb it
/// where the result does not depend on it).
public struct EvaluationError: Error, Sendable, Hashable, CustomStringConvertible {
  public var message: String

  public init(_ message: String) { self.message = message }

  public var description: String { self.message }

  static let divisionByZero = EvaluationError("division by zero")
  static let modulusByZero = EvaluationError("modulus by zero")
  static let overflow = EvaluationError("integer overflow")
  static let budget = EvaluationError("evaluation budget exceeded (\(RuleLimits.maxEvaluationSteps) iterations)")

  static func noSuchOverload(_ function: String, _ values: Value...) -> EvaluationError {
    EvaluationError("no such overload: \(function)(\(values.map(\.typeName).joined(separator: ", ")))")
  }
}
