/// A refusal of an expression before it runs: a syntax error, a type error or a limit, with the
/// line and column (1-based, in Unicode scalars) where it was found.
public struct CompileError: Error, Sendable, Hashable, CustomStringConvertible {
  public var line: Int
  public var column: Int
  public var message: String

  public init(line: Int, column: Int, message: String) {
    self.line = line
    self.column = column
    self.message = message
  }

  public var description: String { "\(self.line):\(self.column): \(self.message)" }
}

/// Where each byte offset of a source is, as line and column.
struct SourceMap: Sendable {
  let bytes: [UInt8]

  func error(at offset: Int, _ message: String) -> CompileError {
    var line = 1
    var column = 1
    var index = 0
    while index < min(offset, self.bytes.count) {
      let byte = self.bytes[index]
      if byte == UInt8(ascii: "\n") {
        line += 1
        column = 1
      } else if byte & 0xC0 != 0x80 {
        column += 1
      }
      index += 1
    }
    return CompileError(line: line, column: column, message: message)
  }

  func text(_ range: Range<Int>) -> String {
    String(decoding: self.bytes[range.clamped(to: 0..<self.bytes.count)], as: UTF8.self)
  }
}

enum Token: Equatable {
  /// An integer literal's magnitude (the sign is an operator; the parser range-checks it).
  case int(UInt64)
  case uint(UInt64)
  case double(Double)
  case string(String)
  case bytes([UInt8])
  case identifier(String)
  /// Punctuation and operators: `( ) [ ] { } . , : ? + - * / % ! < <= > >= == != && ||`.
  case symbol(String)
  case end
}

struct LexedToken {
  var token: Token
  var start: Int
  var end: Int
}

/// Splits a source into tokens. Errors name the byte offset; the parser turns it into line and
/// column.
struct Lexer {
  static let reservedWords: Set<String> = [
    "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop", "package",
    "namespace", "return", "var", "void", "while",
  ]

  let bytes: [UInt8]
  var index = 0

  init(_ bytes: [UInt8]) { self.bytes = bytes }

  struct Failure: Error {
    var offset: Int
    var message: String
  }

  mutating func tokens() throws(Failure) -> [LexedToken] {
    var tokens: [LexedToken] = []
    while true {
      let token = try self.next()
      tokens.append(token)
      if token.token == .end { return tokens }
    }
  }

  private func peek(_ ahead: Int = 0) -> UInt8? {
    self.index + ahead < self.bytes.count ? self.bytes[self.index + ahead] : nil
  }

  private mutating func skipSpaceAndComments() {
    while let byte = self.peek() {
      if byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D || byte == 0x0C {
        self.index += 1
      } else if byte == UInt8(ascii: "/"), self.peek(1) == UInt8(ascii: "/") {
        while let next = self.peek(), next != 0x0A { self.index += 1 }
      } else {
        return
      }
    }
  }

  private mutating func next() throws(Failure) -> LexedToken {
    self.skipSpaceAndComments()
    let start = self.index
    guard let byte = self.peek() else { return LexedToken(token: .end, start: start, end: start) }
    let token: Token
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"):
      token = try self.number()
    case UInt8(ascii: "."):
      if let next = self.peek(1), Self.isDigit(next) {
        token = try self.number()
      } else {
        self.index += 1
        token = .symbol(".")
      }
    case UInt8(ascii: "\""), UInt8(ascii: "'"):
      token = .string(try self.stringLiteral(raw: false, bytes: false).string)
    case _ where Self.isIdentifierStart(byte):
      // String prefixes: r"…", b"…", rb"…", br"…" (either case).
      if let literal = try self.prefixedLiteral() {
        token = literal
      } else {
        while let next = self.peek(), Self.isIdentifierStart(next) || Self.isDigit(next) { self.index += 1 }
        token = .identifier(String(decoding: self.bytes[start..<self.index], as: UTF8.self))
      }
    default:
      token = .symbol(try self.symbol())
    }
    return LexedToken(token: token, start: start, end: self.index)
  }

  private mutating func symbol() throws(Failure) -> String {
    let byte = self.bytes[self.index]
    let two = self.peek(1).map { String(decoding: [byte, $0], as: UTF8.self) }
    if let two, ["<=", ">=", "==", "!=", "&&", "||"].contains(two) {
      self.index += 2
      return two
    }
    let single = "()[]{}.,:?+-*/%!<>"
    let character = Character(Unicode.Scalar(byte))
    guard byte < 0x80, single.contains(character) else {
      throw Failure(offset: self.index, message: "syntax error: unexpected character '\(Self.describe(at: self.index, in: self.bytes))'")
    }
    self.index += 1
    return String(character)
  }

  private static func describe(at offset: Int, in bytes: [UInt8]) -> String {
    var end = offset + 1
    while end < bytes.count, bytes[end] & 0xC0 == 0x80 { end += 1 }
    return String(decoding: bytes[offset..<end], as: UTF8.self)
  }

  static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

  static func isIdentifierStart(_ byte: UInt8) -> Bool {
    (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
      || byte == UInt8(ascii: "_")
  }

  private static func hexValue(_ byte: UInt8) -> UInt64? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt64(byte - UInt8(ascii: "0"))
    case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt64(byte - UInt8(ascii: "a") + 10)
    case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt64(byte - UInt8(ascii: "A") + 10)
    default: nil
    }
  }

  private mutating func number() throws(Failure) -> Token {
    let start = self.index
    if self.peek() == UInt8(ascii: "0"), let x = self.peek(1), x == UInt8(ascii: "x") || x == UInt8(ascii: "X") {
      self.index += 2
      var value: UInt64 = 0
      var digits = 0
      while let byte = self.peek(), let digit = Self.hexValue(byte) {
        let (shifted, overflow) = value.multipliedReportingOverflow(by: 16)
        guard !overflow else { throw Failure(offset: start, message: "syntax error: integer literal out of range") }
        value = shifted + digit
        digits += 1
        self.index += 1
      }
      guard digits > 0 else { throw Failure(offset: start, message: "syntax error: hexadecimal literal without digits") }
      return try self.integerSuffix(value, start: start)
    }
    while let byte = self.peek(), Self.isDigit(byte) { self.index += 1 }
    var isDouble = false
    if self.peek() == UInt8(ascii: "."), let next = self.peek(1), Self.isDigit(next) {
      isDouble = true
      self.index += 1
      while let byte = self.peek(), Self.isDigit(byte) { self.index += 1 }
    }
    if let e = self.peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
      var ahead = 1
      if let sign = self.peek(1), sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { ahead = 2 }
      if let digit = self.peek(ahead), Self.isDigit(digit) {
        isDouble = true
        self.index += ahead
        while let byte = self.peek(), Self.isDigit(byte) { self.index += 1 }
      } else {
        throw Failure(offset: self.index, message: "syntax error: exponent without digits")
      }
    }
    let text = String(decoding: self.bytes[start..<self.index], as: UTF8.self)
    if isDouble {
      guard let value = Double(text) else { throw Failure(offset: start, message: "syntax error: bad double literal") }
      return .double(value)
    }
    guard let value = UInt64(text) else { throw Failure(offset: start, message: "syntax error: integer literal out of range") }
    return try self.integerSuffix(value, start: start)
  }

  private mutating func integerSuffix(_ value: UInt64, start: Int) throws(Failure) -> Token {
    if let suffix = self.peek(), suffix == UInt8(ascii: "u") || suffix == UInt8(ascii: "U") {
      self.index += 1
      return .uint(value)
    }
    if let next = self.peek(), Self.isIdentifierStart(next) {
      throw Failure(offset: self.index, message: "syntax error: unexpected character after a number")
    }
    return .int(value)
  }

  /// `r"…"`, `b"…"`, `rb"…"`, `br"…"`, or nil when the identifier is not a literal prefix.
  private mutating func prefixedLiteral() throws(Failure) -> Token? {
    func kind(_ byte: UInt8?) -> Character? {
      switch byte {
      case UInt8(ascii: "r"), UInt8(ascii: "R"): "r"
      case UInt8(ascii: "b"), UInt8(ascii: "B"): "b"
      default: nil
      }
    }
    func isQuote(_ byte: UInt8?) -> Bool { byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") }
    guard let first = kind(self.peek()) else { return nil }
    var prefix: Set<Character> = [first]
    if isQuote(self.peek(1)) {
      self.index += 1
    } else if let second = kind(self.peek(1)), second != first, isQuote(self.peek(2)) {
      prefix.insert(second)
      self.index += 2
    } else {
      return nil
    }
    let literal = try self.stringLiteral(raw: prefix.contains("r"), bytes: prefix.contains("b"))
    return prefix.contains("b") ? .bytes(literal.bytes) : .string(literal.string)
  }

  /// A quoted literal starting at the quote. Strings hold scalars (`\x41` and `\101` are code
  /// points); bytes literals hold bytes (`\xff` is one byte, other characters their UTF-8).
  private mutating func stringLiteral(raw: Bool, bytes isBytes: Bool) throws(Failure) -> (string: String, bytes: [UInt8]) {
    let start = self.index
    let quote = self.bytes[self.index]
    let triple = self.peek(1) == quote && self.peek(2) == quote
    self.index += triple ? 3 : 1
    var output: [UInt8] = []
    func appendScalar(_ value: UInt32, at offset: Int) throws(Failure) {
      guard let scalar = Unicode.Scalar(value) else {
        throw Failure(offset: offset, message: "syntax error: escape names no Unicode scalar (surrogate or beyond U+10FFFF)")
      }
      output.append(contentsOf: Array(String(Character(scalar)).utf8))
    }
    while true {
      guard let byte = self.peek() else { throw Failure(offset: start, message: "syntax error: unterminated string literal") }
      if byte == quote && (!triple || (self.peek(1) == quote && self.peek(2) == quote)) {
        self.index += triple ? 3 : 1
        break
      }
      if !triple && (byte == 0x0A || byte == 0x0D) {
        throw Failure(offset: start, message: "syntax error: unterminated string literal (newline in a single-quoted string)")
      }
      if byte != UInt8(ascii: "\\") || raw {
        output.append(byte)
        self.index += 1
        continue
      }
      let escapeStart = self.index
      self.index += 1
      guard let code = self.peek() else { throw Failure(offset: start, message: "syntax error: unterminated string literal") }
      self.index += 1
      switch code {
      case UInt8(ascii: "a"): output.append(0x07)
      case UInt8(ascii: "b"): output.append(0x08)
      case UInt8(ascii: "f"): output.append(0x0C)
      case UInt8(ascii: "n"): output.append(0x0A)
      case UInt8(ascii: "r"): output.append(0x0D)
      case UInt8(ascii: "t"): output.append(0x09)
      case UInt8(ascii: "v"): output.append(0x0B)
      case UInt8(ascii: "\\"), UInt8(ascii: "'"), UInt8(ascii: "\""), UInt8(ascii: "`"), UInt8(ascii: "?"):
        output.append(code)
      case UInt8(ascii: "x"), UInt8(ascii: "X"), UInt8(ascii: "u"), UInt8(ascii: "U"):
        let count = code == UInt8(ascii: "u") ? 4 : (code == UInt8(ascii: "U") ? 8 : 2)
        var value: UInt64 = 0
        for _ in 0..<count {
          guard let digit = self.peek().flatMap(Self.hexValue) else {
            throw Failure(offset: escapeStart, message: "syntax error: \\\(Character(Unicode.Scalar(code))) needs \(count) hex digits")
          }
          value = value * 16 + digit
          self.index += 1
        }
        if isBytes && count == 2 {
          output.append(UInt8(value))
        } else {
          if isBytes && count != 2 {
            throw Failure(offset: escapeStart, message: "syntax error: \\u and \\U are not allowed in bytes literals")
          }
          try appendScalar(UInt32(value), at: escapeStart)
        }
      case UInt8(ascii: "0")...UInt8(ascii: "3"):
        var value = UInt32(code - UInt8(ascii: "0"))
        for _ in 0..<2 {
          guard let digit = self.peek(), digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "7") else {
            throw Failure(offset: escapeStart, message: "syntax error: octal escape needs three digits")
          }
          value = value * 8 + UInt32(digit - UInt8(ascii: "0"))
          self.index += 1
        }
        if isBytes { output.append(UInt8(value)) } else { try appendScalar(value, at: escapeStart) }
      default:
        throw Failure(offset: escapeStart, message: "syntax error: unknown escape \\\(Self.describe(at: self.index - 1, in: self.bytes))")
      }
    }
    if isBytes { return ("", output) }
    guard let string = String(validating: output, as: UTF8.self) else {
      throw Failure(offset: start, message: "syntax error: string literal is not valid UTF-8")
    }
    return (string, [])
  }
}
