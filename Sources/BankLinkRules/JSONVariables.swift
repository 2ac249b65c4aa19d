/// Variables given as a JSON object, for the rule author's playground (`banklink rules eval`):
/// each member is a variable whose type is taken from its value — whole numbers are `int`
/// (`uint` beyond int's range), numbers with a fraction or an exponent `double`, objects
/// `map(string, …)`, arrays `list(…)`; element types are joined (`dyn` when they differ).
public enum JSONVariables {
  public static let maxBytes = 65_536
  public static let maxDepth = 32

  public struct Failure: Error, Sendable, CustomStringConvertible {
    public var offset: Int
    public var message: String
    public var description: String { "variables JSON at byte \(self.offset): \(self.message)" }
  }

  /// The declarations and values, in the object's member order.
  public static func parse(_ text: String) throws(Failure) -> (Declarations, [Value]) {
    let bytes = Array(text.utf8)
    guard bytes.count <= Self.maxBytes else { throw Failure(offset: 0, message: "longer than \(Self.maxBytes) bytes") }
    var reader = Reader(bytes: bytes)
    reader.skipSpace()
    if reader.index == bytes.count { return (Declarations(), []) }
    let (value, _) = try reader.value(depth: 0)
    reader.skipSpace()
    guard reader.index == bytes.count else { throw Failure(offset: reader.index, message: "unexpected text after the object") }
    guard case .map(let map) = value else { throw Failure(offset: 0, message: "must be an object whose members are the variables") }
    var declarations = Declarations()
    var values: [Value] = []
    for key in map.keys {
      guard case .string(let name) = key, let member = map[key] else { continue }
      guard Self.isIdentifier(name) else { throw Failure(offset: 0, message: "'\(name)' is not a variable name") }
      declarations.declare(name, Self.type(of: member))
      values.append(member)
    }
    return (declarations, values)
  }

  static func isIdentifier(_ name: String) -> Bool {
    guard let first = name.utf8.first, Lexer.isIdentifierStart(first) else { return false }
    guard name.utf8.allSatisfy({ Lexer.isIdentifierStart($0) || Lexer.isDigit($0) }) else { return false }
    return !Lexer.reservedWords.contains(name) && !["true", "false", "null", "in"].contains(name)
  }

  static func type(of value: Value) -> CELType {
    switch value {
    case .list(let elements):
      return .list(Self.join(elements.map(Self.type(of:))))
    case .map(let map):
      return .map(.string, Self.join(map.keys.compactMap { map[$0] }.map(Self.type(of:))))
    default:
      return ExpressionCompiler.type(of: value)
    }
  }

  /// The type every one of `types` has: dyn when they differ or there are none.
  static func join(_ types: [CELType]) -> CELType {
    guard var joined = types.first else { return .dyn }
    for type in types.dropFirst() { joined = joined.joined(with: type) }
    return joined
  }

  struct Reader {
    let bytes: [UInt8]
    var index = 0

    mutating func skipSpace() {
      while self.index < self.bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(self.bytes[self.index]) { self.index += 1 }
    }

    func fail(_ message: String) -> Failure { Failure(offset: self.index, message: message) }

    mutating func literal(_ word: String) throws(Failure) {
      let expected = Array(word.utf8)
      guard self.index + expected.count <= self.bytes.count, Array(self.bytes[self.index..<(self.index + expected.count)]) == expected else {
        throw self.fail("unexpected text")
      }
      self.index += expected.count
    }

    mutating func value(depth: Int) throws(Failure) -> (Value, Int) {
      guard depth <= JSONVariables.maxDepth else { throw self.fail("nested deeper than \(JSONVariables.maxDepth)") }
      self.skipSpace()
      guard self.index < self.bytes.count else { throw self.fail("unexpected end") }
      switch self.bytes[self.index] {
      case UInt8(ascii: "{"):
        self.index += 1
        var map = MapValue()
        self.skipSpace()
        if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "}") {
          self.index += 1
          return (.map(map), depth)
        }
        while true {
          self.skipSpace()
          guard self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "\"") else { throw self.fail("expected a member name") }
          let name = try self.string()
          self.skipSpace()
          guard self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: ":") else { throw self.fail("expected ':'") }
          self.index += 1
          let (member, _) = try self.value(depth: depth + 1)
          guard map[.string(name)] == nil else { throw self.fail("member '\(name)' given twice") }
          map[.string(name)] = member
          self.skipSpace()
          guard self.index < self.bytes.count else { throw self.fail("unexpected end") }
          if self.bytes[self.index] == UInt8(ascii: "}") {
            self.index += 1
            return (.map(map), depth)
          }
          guard self.bytes[self.index] == UInt8(ascii: ",") else { throw self.fail("expected ',' or '}'") }
          self.index += 1
        }
      case UInt8(ascii: "["):
        self.index += 1
        var elements: [Value] = []
        self.skipSpace()
        if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "]") {
          self.index += 1
          return (.list(elements), depth)
        }
        while true {
          elements.append(try self.value(depth: depth + 1).0)
          self.skipSpace()
          guard self.index < self.bytes.count else { throw self.fail("unexpected end") }
          if self.bytes[self.index] == UInt8(ascii: "]") {
            self.index += 1
            return (.list(elements), depth)
          }
          guard self.bytes[self.index] == UInt8(ascii: ",") else { throw self.fail("expected ',' or ']'") }
          self.index += 1
        }
      case UInt8(ascii: "\""):
        return (.string(try self.string()), depth)
      case UInt8(ascii: "t"):
        try self.literal("true")
        return (.bool(true), depth)
      case UInt8(ascii: "f"):
        try self.literal("false")
        return (.bool(false), depth)
      case UInt8(ascii: "n"):
        try self.literal("null")
        return (.null, depth)
      default:
        return (try self.number(), depth)
      }
    }

    mutating func number() throws(Failure) -> Value {
      let start = self.index
      var isDouble = false
      while self.index < self.bytes.count {
        let byte = self.bytes[self.index]
        if Lexer.isDigit(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+") {
          self.index += 1
        } else if byte == UInt8(ascii: ".") || byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") {
          isDouble = true
          self.index += 1
        } else {
          break
        }
      }
      let text = String(decoding: self.bytes[start..<self.index], as: UTF8.self)
      guard !text.isEmpty else { throw self.fail("unexpected character") }
      if !isDouble {
        if let int = Int64(text) { return .int(int) }
        if let uint = UInt64(text) { return .uint(uint) }
      }
      guard let double = Double(text), double.isFinite else { throw Failure(offset: start, message: "not a number: \(text)") }
      return .double(double)
    }

    mutating func string() throws(Failure) -> String {
      let start = self.index
      self.index += 1
      var output: [UInt8] = []
      while true {
        guard self.index < self.bytes.count else { throw Failure(offset: start, message: "unterminated string") }
        let byte = self.bytes[self.index]
        self.index += 1
        if byte == UInt8(ascii: "\"") { break }
        guard byte >= 0x20 else { throw self.fail("control character in a string") }
        guard byte == UInt8(ascii: "\\") else {
          output.append(byte)
          continue
        }
        guard self.index < self.bytes.count else { throw self.fail("unterminated escape") }
        let code = self.bytes[self.index]
        self.index += 1
        switch code {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): output.append(code)
        case UInt8(ascii: "b"): output.append(0x08)
        case UInt8(ascii: "f"): output.append(0x0C)
        case UInt8(ascii: "n"): output.append(0x0A)
        case UInt8(ascii: "r"): output.append(0x0D)
        case UInt8(ascii: "t"): output.append(0x09)
        case UInt8(ascii: "u"):
          var scalar = try self.hex4()
          if (0xD800..<0xDC00).contains(scalar) {
            try self.literal("\\u")
            let low = try self.hex4()
            guard (0xDC00..<0xE000).contains(low) else { throw self.fail("unpaired surrogate") }
            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
          }
          guard let value = Unicode.Scalar(scalar) else { throw self.fail("unpaired surrogate") }
          output.append(contentsOf: Array(String(Character(value)).utf8))
        default:
          throw self.fail("unknown escape")
        }
      }
      guard let text = String(validating: output, as: UTF8.self) else { throw Failure(offset: start, message: "not valid UTF-8") }
      return text
    }

    mutating func hex4() throws(Failure) -> UInt32 {
      guard self.index + 4 <= self.bytes.count, let value = UInt32(String(decoding: self.bytes[self.index..<(self.index + 4)], as: UTF8.self), radix: 16)
      else { throw self.fail("bad \\u escape") }
      self.index += 4
      return value
    }
  }
}

extension Value {
  /// The value written as a CEL expression that evaluates back to it (`3u`, `"a"`,
  /// `timestamp("…")`, `[1, 2]`), as the playground prints results.
  public var literal: String {
    switch self {
    case .int(let v): return String(v)
    case .uint(let v): return "\(v)u"
    case .double(let v):
      if v.isNaN { return "double(\"NaN\")" }
      if v.isInfinite { return v < 0 ? "double(\"-Infinity\")" : "double(\"Infinity\")" }
      let text = "\(v)"
      return text.contains(".") || text.contains("e") ? text : text + ".0"
    case .string(let v): return Self.quoted(v)
    case .bytes(let v): return "b\"" + v.map { String(format: $0) }.joined() + "\""
    case .bool(let v): return String(v)
    case .null: return "null"
    case .list(let v): return "[" + v.map(\.literal).joined(separator: ", ") + "]"
    case .map(let v): return "{" + v.keys.map { "\($0.value.literal): \(v[$0]?.literal ?? "null")" }.joined(separator: ", ") + "}"
    case .timestamp(let v): return "timestamp(\"\(Conversions.format(v))\")"
    case .duration(let v): return "duration(\"\(Conversions.format(v))\")"
    case .object(let v):
      let fields = zip(v.type.fields, v.fields).compactMap { field, value in value.map { "\(field.name): \($0.literal)" } }
      return v.type.name + "{" + fields.joined(separator: ", ") + "}"
    }
  }

  private static func quoted(_ text: String) -> String {
    var output = "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": output += "\\\""
      case "\\": output += "\\\\"
      case "\n": output += "\\n"
      case "\r": output += "\\r"
      case "\t": output += "\\t"
      case _ where scalar.value < 0x20 || scalar.value == 0x7F:
        output += "\\x" + String(format: UInt8(scalar.value))
      default: output.unicodeScalars.append(scalar)
      }
    }
    return output + "\""
  }

  private static func hex(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]])
  }
}

extension String {
  /// Two lowercase hex digits.
  fileprivate init(format byte: UInt8) {
    let digits = Array("0123456789abcdef")
    self = String([digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]])
  }
}
