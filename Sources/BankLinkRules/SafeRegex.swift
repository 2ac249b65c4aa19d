// SafeRegex: a small RE2-style regular expression engine for the rule language's `matches`.
//
// Rules are written by operators and evaluated on the payment path, so a pattern must never be
// able to stall the evaluator. The engine therefore never backtracks: a pattern is parsed to a
// syntax tree, compiled to a Thompson NFA program, and run by a Pike VM that advances every
// live thread one scalar at a time. A run costs O(program × text) time and O(program) memory,
// whatever the pattern (`(a*)*b`, `(a+)+$` and friends included), and the program size is
// bounded by `maxProgramSize`.
//
// Supported syntax (an RE2 subset; anything else is rejected with a `SyntaxError`):
//   literals; `.` (any scalar but `\n`); escapes `\\ \. \* \+ \? \( \) \[ \] \{ \} \| \^ \$`
//   and any other escaped ASCII punctuation (`\/`, `\-`, …); `\n \t \r \f \v`; `\xHH`, `\x{H…}`;
//   `\d \D \w \W \s \S` (ASCII, as in RE2); classes `[…]`, `[^…]` with ranges and escapes;
//   `^` and `$` (start and end of text); `( … )` and `(?: … )` (both only group);
//   `(?i)` at the very start of the pattern; `|`; `* + ?`, `{n}`, `{n,}`, `{n,m}` and their
//   lazy forms (laziness cannot change a yes/no answer, so it is accepted and ignored).
// Deliberately rejected: backreferences, lookaround, named groups, other flags, `\b` and other
// assertions, Unicode classes (`\p{…}`), POSIX classes (`[[:alpha:]]`), repetition of anchors
// or of a repetition (`a**`), and a `{` that does not start a valid counted repetition (RE2
// would read it as a literal; here a literal brace must be written `\{`).

/// A compiled regular expression with RE2 partial-match semantics and linear-time matching.
public struct SafeRegex: Sendable, Hashable {
  /// Longest accepted pattern, in UTF-8 bytes.
  public static let maxPatternBytes = 512
  /// Largest compiled program, in instructions, after counted repetitions are expanded.
  public static let maxProgramSize = 2_000
  /// Largest `n` or `m` in `{n}`, `{n,}` and `{n,m}`.
  public static let maxRepeatCount = 100
  /// Deepest accepted nesting of groups (keeps the recursive parser and compiler shallow).
  static let maxNestingDepth = 100

  /// Why a pattern was rejected, and where.
  public struct SyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Offset, in Unicode scalars from the start of the pattern, of the offending construct.
    public var offset: Int
    /// What is wrong, e.g. "missing closing )" or "nothing to repeat".
    public var message: String

    public var description: String { "invalid regex at \(offset): \(message)" }
  }

  /// The source pattern, exactly as given.
  public let pattern: String
  private let program: [Instruction]
  /// Character classes referenced by index from `Instruction.charClass`.
  private let classes: [CharClass]
  /// Set by a leading `(?i)`: letters match regardless of case.
  private let foldsCase: Bool
  /// The program begins with `^`: threads only need to be started at the first scalar.
  private let anchoredAtStart: Bool

  /// Parses and compiles `pattern`.
  public init(_ pattern: String) throws(SyntaxError) {
    try Self.checkLength(of: pattern)
    var parser = Parser(pattern: Array(pattern.unicodeScalars))
    let root = try parser.parse()
    var compiler = Compiler(foldsCase: parser.foldsCase)
    compiler.emit(root.node)
    compiler.program.append(.match)
    assert(compiler.program.count == root.size + 1, "parser and compiler disagree on program size")
    assert(compiler.program.count <= Self.maxProgramSize, "parser let an oversized program through")
    self.pattern = pattern
    self.program = compiler.program
    self.classes = compiler.classes
    self.foldsCase = parser.foldsCase
    if case .assertStart? = compiler.program.first {
      self.anchoredAtStart = true
    } else {
      self.anchoredAtStart = false
    }
  }

  /// RE2 partial-match semantics, as CEL's `matches`: true if the pattern matches any substring
  /// of `text` (use `^` and `$` to anchor). Operates on Unicode scalars.
  /// Instructions of the compiled program: matching costs at most this much per scalar of text.
  public var programSize: Int { self.program.count }

  public func matches(_ text: String) -> Bool {
    var machine = PikeVM(
      program: program, classes: classes, foldsCase: foldsCase, anchoredAtStart: anchoredAtStart)
    return machine.run(text.unicodeScalars)
  }

  public static func == (lhs: SafeRegex, rhs: SafeRegex) -> Bool {
    lhs.pattern == rhs.pattern
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(pattern)
  }

  private static func checkLength(of pattern: String) throws(SyntaxError) {
    guard pattern.utf8.count > maxPatternBytes else { return }
    var bytes = 0
    var offset = 0
    for scalar in pattern.unicodeScalars {
      bytes += UTF8.width(scalar)
      if bytes > maxPatternBytes { break }
      offset += 1
    }
    throw SyntaxError(offset: offset, message: "pattern longer than \(maxPatternBytes) bytes")
  }
}

// MARK: - Character sets

/// Largest Unicode scalar value.
private let maxScalarValue: UInt32 = 0x10_FFFF

/// A set of scalars as sorted, disjoint, non-adjacent closed ranges, optionally negated.
private struct CharClass: Sendable {
  var ranges: [ClosedRange<UInt32>]
  var negated: Bool

  init(ranges: [ClosedRange<UInt32>], negated: Bool = false) {
    self.ranges = CharClass.normalized(ranges)
    self.negated = negated
  }

  static let digits = CharClass(ranges: [0x30...0x39])
  static let wordCharacters = CharClass(ranges: [0x30...0x39, 0x41...0x5A, 0x5F...0x5F, 0x61...0x7A])
  /// `\s` as in RE2: tab, newline, form feed, carriage return and space (not vertical tab).
  static let whitespace = CharClass(ranges: [0x09...0x0A, 0x0C...0x0D, 0x20...0x20])

  /// The set this class matches, with negation applied, as ranges.
  var effectiveRanges: [ClosedRange<UInt32>] {
    negated ? CharClass.complement(of: ranges) : ranges
  }

  /// Whether `scalar` (or, when case folding, any of its case variants) is in the class.
  func matches(_ scalar: Unicode.Scalar, variants: CaseVariants?) -> Bool {
    let found: Bool
    if let variants {
      found = variants.contains { containsValue($0) }
    } else {
      found = containsValue(scalar.value)
    }
    return found != negated
  }

  /// Membership in the ranges, ignoring negation (binary search).
  private func containsValue(_ value: UInt32) -> Bool {
    var low = 0
    var high = ranges.count
    while low < high {
      let middle = (low + high) / 2
      let range = ranges[middle]
      if value < range.lowerBound {
        high = middle
      } else if value > range.upperBound {
        low = middle + 1
      } else {
        return true
      }
    }
    return false
  }

  private static func normalized(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
    var result: [ClosedRange<UInt32>] = []
    for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
      if let last = result.last, range.lowerBound <= last.upperBound + 1 {
        result[result.count - 1] = last.lowerBound...max(last.upperBound, range.upperBound)
      } else {
        result.append(range)
      }
    }
    return result
  }

  /// The complement of normalized `ranges` within 0...maxScalarValue.
  private static func complement(of ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
    var result: [ClosedRange<UInt32>] = []
    var next: UInt32 = 0
    for range in ranges {
      if range.lowerBound > next {
        result.append(next...(range.lowerBound - 1))
      }
      next = range.upperBound + 1
    }
    if next <= maxScalarValue {
      result.append(next...maxScalarValue)
    }
    return result
  }
}

/// A scalar together with its simple case mappings, for `(?i)` matching. Two scalars match
/// case-insensitively when their variant sets intersect. Stored inline (duplicates allowed) so
/// that computing the variants of each text scalar does not allocate.
private struct CaseVariants {
  let scalar: UInt32
  let lower: UInt32
  let upper: UInt32
  let lowerOfUpper: UInt32
  let upperOfLower: UInt32

  init(_ scalar: Unicode.Scalar) {
    let lower = CaseVariants.lowercase(scalar)
    let upper = CaseVariants.uppercase(scalar)
    self.scalar = scalar.value
    self.lower = lower.value
    self.upper = upper.value
    self.lowerOfUpper = CaseVariants.lowercase(upper).value
    self.upperOfLower = CaseVariants.uppercase(lower).value
  }

  /// All variants, for building a class at compile time.
  var values: [UInt32] { [scalar, lower, upper, lowerOfUpper, upperOfLower] }

  func contains(where predicate: (UInt32) -> Bool) -> Bool {
    predicate(scalar) || predicate(lower) || predicate(upper) || predicate(lowerOfUpper)
      || predicate(upperOfLower)
  }

  private static func lowercase(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
    if scalar.isASCII {
      let value = UInt8(truncatingIfNeeded: scalar.value)
      return (0x41...0x5A).contains(value) ? Unicode.Scalar(value + 0x20) : scalar
    }
    return singleScalar(scalar.properties.lowercaseMapping) ?? scalar
  }

  private static func uppercase(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
    if scalar.isASCII {
      let value = UInt8(truncatingIfNeeded: scalar.value)
      return (0x61...0x7A).contains(value) ? Unicode.Scalar(value - 0x20) : scalar
    }
    return singleScalar(scalar.properties.uppercaseMapping) ?? scalar
  }

  /// The mapping if it is one scalar; multi-scalar mappings (e.g. "ß" → "SS") are not simple.
  private static func singleScalar(_ mapping: String) -> Unicode.Scalar? {
    var iterator = mapping.unicodeScalars.makeIterator()
    guard let first = iterator.next(), iterator.next() == nil else { return nil }
    return first
  }
}

// MARK: - Syntax tree

private indirect enum Node: Sendable {
  case empty
  case scalar(Unicode.Scalar)
  case anyExceptNewline
  case charClass(CharClass)
  case startOfText
  case endOfText
  case concatenation([Node])
  case alternation([Node])
  /// `max == nil` means unbounded.
  case repetition(Node, min: Int, max: Int?)
}

/// A node with the number of instructions it compiles to.
private struct Parsed {
  var node: Node
  var size: Int

  static let empty = Parsed(node: .empty, size: 0)
}

/// Instructions compiled for a repetition of a sub-program of `size` instructions. Must agree
/// with `Compiler.emitRepetition`.
private func repetitionSize(childSize size: Int, min: Int, max: Int?) -> Int {
  guard let max else {
    // x* is split, x, jump; x{n,} is n-1 copies then x, split.
    return min == 0 ? size + 2 : size * min + 1
  }
  // x{n,m} is n copies then m-n optional copies, each split, x.
  return size * min + (max - min) * (size + 1)
}

// MARK: - Parser

private struct Parser {
  /// The program also holds a final Match instruction.
  static let sizeBudget = SafeRegex.maxProgramSize - 1

  let scalars: [Unicode.Scalar]
  var position = 0
  var foldsCase = false
  var depth = 0

  init(pattern: [Unicode.Scalar]) {
    self.scalars = pattern
  }

  /// What a quantifier would apply to, for rejecting `*a`, `^*` and `a**`.
  private enum Operand {
    case none
    case atom
    case anchor
    case repetition
  }

  private static let caseInsensitiveFlag: [Unicode.Scalar] = ["(", "?", "i", ")"]

  mutating func parse() throws(SafeRegex.SyntaxError) -> Parsed {
    if scalars.starts(with: Parser.caseInsensitiveFlag) {
      foldsCase = true
      position = Parser.caseInsensitiveFlag.count
    }
    let root = try parseAlternation()
    if position < scalars.count {
      // parseAlternation stops only at the end or at a ')' that closes no group.
      throw error(at: position, "unexpected )")
    }
    return root
  }

  private func error(at offset: Int, _ message: String) -> SafeRegex.SyntaxError {
    SafeRegex.SyntaxError(offset: offset, message: message)
  }

  private func tooLarge(at offset: Int) -> SafeRegex.SyntaxError {
    error(at: offset, "pattern too large: compiles to more than \(SafeRegex.maxProgramSize) instructions")
  }

  private func peek(_ ahead: Int = 0) -> Unicode.Scalar? {
    let index = position + ahead
    return index < scalars.count ? scalars[index] : nil
  }

  private mutating func parseAlternation() throws(SafeRegex.SyntaxError) -> Parsed {
    var branches = [try parseConcatenation()]
    var size = branches[0].size
    while peek() == "|" {
      let bar = position
      position += 1
      let branch = try parseConcatenation()
      branches.append(branch)
      // Each branch but the last adds a split and a jump.
      size += branch.size + 2
      if size > Parser.sizeBudget { throw tooLarge(at: bar) }
    }
    if branches.count == 1 { return branches[0] }
    return Parsed(node: .alternation(branches.map(\.node)), size: size)
  }

  private mutating func parseConcatenation() throws(SafeRegex.SyntaxError) -> Parsed {
    var items: [Parsed] = []
    var size = 0
    var last = Operand.none
    while let scalar = peek(), scalar != "|", scalar != ")" {
      let offset = position
      if let (min, max) = try parseQuantifier() {
        switch last {
        case .none: throw error(at: offset, "nothing to repeat")
        case .anchor: throw error(at: offset, "cannot repeat an anchor")
        case .repetition: throw error(at: offset, "invalid nested repetition operator")
        case .atom: break
        }
        guard let operand = items.popLast() else { throw error(at: offset, "nothing to repeat") }
        let repeated = repetitionSize(childSize: operand.size, min: min, max: max)
        size += repeated - operand.size
        if repeated > Parser.sizeBudget || size > Parser.sizeBudget { throw tooLarge(at: offset) }
        items.append(Parsed(node: .repetition(operand.node, min: min, max: max), size: repeated))
        last = .repetition
        continue
      }
      let (item, kind) = try parseAtom()
      size += item.size
      if size > Parser.sizeBudget { throw tooLarge(at: offset) }
      items.append(item)
      last = kind
    }
    switch items.count {
    case 0: return .empty
    case 1: return items[0]
    default: return Parsed(node: .concatenation(items.map(\.node)), size: size)
    }
  }

  /// Parses `*`, `+`, `?`, `{n}`, `{n,}` or `{n,m}` and an optional lazy `?` if one starts at
  /// `position`; returns nil (consuming nothing) otherwise.
  private mutating func parseQuantifier() throws(SafeRegex.SyntaxError) -> (Int, Int?)? {
    let bounds: (Int, Int?)
    switch peek() {
    case "*":
      bounds = (0, nil)
      position += 1
    case "+":
      bounds = (1, nil)
      position += 1
    case "?":
      bounds = (0, 1)
      position += 1
    case "{":
      bounds = try parseCountedRepetition()
    default:
      return nil
    }
    // Lazy forms: for a yes/no answer they match exactly what the greedy forms match.
    if peek() == "?" { position += 1 }
    return bounds
  }

  private mutating func parseCountedRepetition() throws(SafeRegex.SyntaxError) -> (Int, Int?) {
    let open = position
    let invalid = error(at: open, "invalid repetition operator (escape a literal { as \\{)")
    let unclosed = error(at: open, "missing closing }")
    position += 1
    guard let min = parseRepeatCount() else { throw peek() == nil ? unclosed : invalid }
    var max: Int? = min
    if peek() == "," {
      position += 1
      if peek() == "}" {
        max = nil
      } else {
        guard let count = parseRepeatCount() else { throw peek() == nil ? unclosed : invalid }
        max = count
      }
    }
    guard peek() == "}" else { throw peek() == nil ? unclosed : invalid }
    position += 1
    if min > SafeRegex.maxRepeatCount || (max ?? 0) > SafeRegex.maxRepeatCount {
      throw error(at: open, "repeat count larger than \(SafeRegex.maxRepeatCount)")
    }
    if let max, max < min {
      throw error(at: open, "invalid repeat range {\(min),\(max)}: minimum greater than maximum")
    }
    return (min, max)
  }

  /// Decimal digits, saturating just above maxRepeatCount so huge counts cannot overflow.
  private mutating func parseRepeatCount() -> Int? {
    var value: Int?
    while let scalar = peek(), ("0"..."9").contains(scalar) {
      let digit = Int(scalar.value - 0x30)
      value = Swift.min((value ?? 0) * 10 + digit, SafeRegex.maxRepeatCount + 1)
      position += 1
    }
    return value
  }

  private mutating func parseAtom() throws(SafeRegex.SyntaxError) -> (Parsed, Operand) {
    let offset = position
    guard let scalar = peek() else { throw error(at: offset, "unexpected end of pattern") }
    switch scalar {
    case "(":
      return (try parseGroup(), .atom)
    case "[":
      return (Parsed(node: .charClass(try parseClass()), size: 1), .atom)
    case ".":
      position += 1
      return (Parsed(node: .anyExceptNewline, size: 1), .atom)
    case "^":
      position += 1
      return (Parsed(node: .startOfText, size: 1), .anchor)
    case "$":
      position += 1
      return (Parsed(node: .endOfText, size: 1), .anchor)
    case "\\":
      switch try parseEscape() {
      case .scalar(let literal): return (Parsed(node: .scalar(literal), size: 1), .atom)
      case .charClass(let charClass): return (Parsed(node: .charClass(charClass), size: 1), .atom)
      }
    default:
      // Includes an unescaped ']' or '}', which RE2 also reads as literals.
      position += 1
      return (Parsed(node: .scalar(scalar), size: 1), .atom)
    }
  }

  private mutating func parseGroup() throws(SafeRegex.SyntaxError) -> Parsed {
    let open = position
    position += 1
    if peek() == "?" {
      switch peek(1) {
      case ":":
        position += 2
      case "=":
        throw error(at: open, "not supported: lookahead (?=")
      case "!":
        throw error(at: open, "not supported: negative lookahead (?!")
      case "<":
        throw error(at: open, "not supported: lookbehind and named groups (?<")
      case "P":
        throw error(at: open, "not supported: named groups (?P")
      case "i" where peek(2) == ")":
        throw error(at: open, "not supported: (?i) is only allowed at the start of the pattern")
      case nil:
        throw error(at: open, "missing closing )")
      default:
        throw error(at: open, "not supported: group flags (only a leading (?i) is allowed)")
      }
    }
    depth += 1
    defer { depth -= 1 }
    if depth > SafeRegex.maxNestingDepth {
      throw error(at: open, "groups nested more than \(SafeRegex.maxNestingDepth) deep")
    }
    let inner = try parseAlternation()
    guard peek() == ")" else { throw error(at: open, "missing closing )") }
    position += 1
    return inner
  }

  private mutating func parseClass() throws(SafeRegex.SyntaxError) -> CharClass {
    let open = position
    position += 1
    var negated = false
    if peek() == "^" {
      negated = true
      position += 1
    }
    var ranges: [ClosedRange<UInt32>] = []
    var first = true
    while true {
      guard let scalar = peek() else { throw error(at: open, "missing closing ]") }
      let itemOffset = position
      if scalar == "]" && !first {
        position += 1
        break
      }
      if scalar == "-" && !first {
        guard let following = peek(1) else { throw error(at: open, "missing closing ]") }
        if following != "]" {
          throw error(at: itemOffset, "a literal - in a character class must be first, last, or escaped as \\-")
        }
      }
      if scalar == "[" && peek(1) == ":" {
        throw error(at: itemOffset, "not supported: POSIX character classes like [:alpha:]")
      }
      first = false
      let low = try parseClassItem()
      guard peek() == "-", let afterDash = peek(1), afterDash != "]" else {
        switch low {
        case .scalar(let literal): ranges.append(literal.value...literal.value)
        case .charClass(let charClass): ranges.append(contentsOf: charClass.effectiveRanges)
        }
        continue
      }
      position += 1
      let highOffset = position
      let high = try parseClassItem()
      guard case .scalar(let lowScalar) = low else {
        throw error(at: itemOffset, "invalid character class range: a class escape cannot be a range endpoint")
      }
      guard case .scalar(let highScalar) = high else {
        throw error(at: highOffset, "invalid character class range: a class escape cannot be a range endpoint")
      }
      guard lowScalar.value <= highScalar.value else {
        throw error(at: itemOffset, "invalid character class range \(lowScalar)-\(highScalar)")
      }
      ranges.append(lowScalar.value...highScalar.value)
    }
    return CharClass(ranges: ranges, negated: negated)
  }

  private mutating func parseClassItem() throws(SafeRegex.SyntaxError) -> Escape {
    guard let scalar = peek() else { throw error(at: position, "missing closing ]") }
    if scalar == "\\" { return try parseEscape() }
    position += 1
    return .scalar(scalar)
  }

  /// What a backslash escape stands for.
  private enum Escape {
    case scalar(Unicode.Scalar)
    case charClass(CharClass)
  }

  /// Escapes that RE2 (or PCRE) gives a meaning this engine does not implement.
  private static let unsupportedEscapes: Set<Unicode.Scalar> = [
    "A", "b", "B", "z", "Z", "G", "p", "P", "Q", "E", "C", "K", "a", "e", "h", "H", "R", "X",
  ]

  private mutating func parseEscape() throws(SafeRegex.SyntaxError) -> Escape {
    let start = position
    position += 1
    guard let scalar = peek() else { throw error(at: start, "trailing backslash at end of pattern") }
    position += 1
    switch scalar {
    case "n": return .scalar("\n")
    case "t": return .scalar("\t")
    case "r": return .scalar("\r")
    case "f": return .scalar("\u{0C}")
    case "v": return .scalar("\u{0B}")
    case "d": return .charClass(.digits)
    case "D": return .charClass(CharClass(ranges: CharClass.digits.ranges, negated: true))
    case "w": return .charClass(.wordCharacters)
    case "W": return .charClass(CharClass(ranges: CharClass.wordCharacters.ranges, negated: true))
    case "s": return .charClass(.whitespace)
    case "S": return .charClass(CharClass(ranges: CharClass.whitespace.ranges, negated: true))
    case "x": return .scalar(try parseHexEscape(start: start))
    case "1"..."9":
      throw error(at: start, "not supported: backreference \\\(scalar)")
    case "0":
      throw error(at: start, "not supported: octal escape \\0")
    default:
      if (" "..."~").contains(scalar) && !Parser.isASCIIAlphanumeric(scalar) {
        // Escaped ASCII punctuation (and space) always stands for itself, as in RE2.
        return .scalar(scalar)
      }
      if Parser.unsupportedEscapes.contains(scalar) {
        throw error(at: start, "not supported: escape \\\(scalar)")
      }
      throw error(at: start, "invalid escape \\\(scalar)")
    }
  }

  /// Longest accepted `\x{…}` body; enough for any scalar with a few leading zeros.
  private static let maxBracedHexDigits = 8

  /// Parses the part after `\x`: two hex digits, or hex digits in braces.
  private mutating func parseHexEscape(start: Int) throws(SafeRegex.SyntaxError) -> Unicode.Scalar {
    var value: UInt32 = 0
    if peek() == "{" {
      position += 1
      var digits = 0
      while let scalar = peek(), scalar != "}" {
        guard let digit = Parser.hexValue(scalar), digits < Parser.maxBracedHexDigits else {
          throw error(at: start, "invalid escape: \\x{…} needs 1 to \(Parser.maxBracedHexDigits) hex digits")
        }
        value = value * 16 + digit
        digits += 1
        position += 1
      }
      guard peek() == "}" else { throw error(at: start, "missing closing } in \\x{…}") }
      position += 1
      guard digits > 0 else { throw error(at: start, "invalid escape: \\x{} is empty") }
    } else {
      for _ in 0..<2 {
        guard let scalar = peek(), let digit = Parser.hexValue(scalar) else {
          throw error(at: start, "invalid escape: \\x needs two hex digits or \\x{…}")
        }
        value = value * 16 + digit
        position += 1
      }
    }
    guard let scalar = Unicode.Scalar(value) else {
      let hex = String(value, radix: 16, uppercase: true)
      throw error(at: start, "invalid escape: U+\(hex) is not a Unicode scalar value")
    }
    return scalar
  }

  private static func isASCIIAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
    ("0"..."9").contains(scalar) || ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar)
  }

  private static func hexValue(_ scalar: Unicode.Scalar) -> UInt32? {
    switch scalar {
    case "0"..."9": scalar.value - 0x30
    case "a"..."f": scalar.value - 0x61 + 10
    case "A"..."F": scalar.value - 0x41 + 10
    default: nil
    }
  }
}

// MARK: - Program

/// One NFA instruction. A plain value (no references), so the VM copies it without reference
/// counting; character classes live in a side table.
private enum Instruction: Sendable {
  /// Consume exactly this scalar (case-sensitive programs only).
  case scalar(Unicode.Scalar)
  /// Consume a scalar in the class at this index of the class table.
  case charClass(Int)
  /// Consume any scalar but `\n`.
  case anyExceptNewline
  /// Continue at both targets.
  case split(Int, Int)
  case jump(Int)
  /// Empty-width: continue only at the start of the text.
  case assertStart
  /// Empty-width: continue only at the end of the text.
  case assertEnd
  case match
}

private struct Compiler {
  let foldsCase: Bool
  var program: [Instruction] = []
  var classes: [CharClass] = []

  init(foldsCase: Bool) {
    self.foldsCase = foldsCase
  }

  /// Placeholder for a split or jump whose targets are patched once known.
  private static let unpatched = Instruction.jump(-1)

  mutating func emit(_ node: Node) {
    switch node {
    case .empty:
      break
    case .scalar(let scalar):
      if foldsCase {
        let variants = CaseVariants(scalar).values
        emitClass(CharClass(ranges: variants.map { $0...$0 }))
      } else {
        program.append(.scalar(scalar))
      }
    case .anyExceptNewline:
      program.append(.anyExceptNewline)
    case .charClass(let charClass):
      emitClass(charClass)
    case .startOfText:
      program.append(.assertStart)
    case .endOfText:
      program.append(.assertEnd)
    case .concatenation(let items):
      for item in items { emit(item) }
    case .alternation(let branches):
      var exits: [Int] = []
      for branch in branches.dropLast() {
        let split = program.count
        program.append(Compiler.unpatched)
        emit(branch)
        exits.append(program.count)
        program.append(Compiler.unpatched)
        program[split] = .split(split + 1, program.count)
      }
      if let lastBranch = branches.last { emit(lastBranch) }
      for exit in exits { program[exit] = .jump(program.count) }
    case .repetition(let child, let min, let max):
      emitRepetition(of: child, min: min, max: max)
    }
  }

  /// Adds a class instruction with its own table entry (copies made by counted repetition share
  /// their range storage), so the table is never larger than the program.
  private mutating func emitClass(_ charClass: CharClass) {
    program.append(.charClass(classes.count))
    classes.append(charClass)
  }

  private mutating func emitRepetition(of child: Node, min: Int, max: Int?) {
    guard let max else {
      if min == 0 {
        // loop: split body, exit; body; jump loop; exit:
        let loop = program.count
        program.append(Compiler.unpatched)
        emit(child)
        program.append(.jump(loop))
        program[loop] = .split(loop + 1, program.count)
      } else {
        // n-1 copies, then body: x; split body, exit
        for _ in 0..<(min - 1) { emit(child) }
        let body = program.count
        emit(child)
        program.append(.split(body, program.count + 1))
      }
      return
    }
    for _ in 0..<min { emit(child) }
    // Optional copies: each may skip straight to the end.
    var splits: [Int] = []
    for _ in 0..<(max - min) {
      splits.append(program.count)
      program.append(Compiler.unpatched)
      emit(child)
    }
    for split in splits { program[split] = .split(split + 1, program.count) }
  }
}

// MARK: - Pike VM

/// The threads alive at one text position: program counters of consuming instructions, in
/// fixed storage sized to the program (each instruction appears at most once).
private struct ThreadList {
  var pcs: [Int]
  var count = 0

  init(capacity: Int) {
    pcs = Array(repeating: 0, count: capacity)
  }
}

/// Runs a program over a text, advancing all threads in lock step (Pike VM without captures).
/// Memory is O(program): two thread lists, one visited stamp per instruction and a work stack.
private struct PikeVM {
  let program: [Instruction]
  let classes: [CharClass]
  let foldsCase: Bool
  let anchoredAtStart: Bool

  /// The step in which each instruction was last added to a thread list. An instruction is
  /// added at most once per step, which bounds the work per step and stops empty loops such as
  /// `(a*)*`. Steps are text positions, so the start thread and the threads advanced into a
  /// position share the same stamp.
  private var visitedAt: [Int]
  /// Pending branches while following empty-width edges. Only a split pushes, and each split
  /// is entered at most once per step, so the program size bounds the depth.
  private var stack: [Int]
  private var stackCount = 0

  init(program: [Instruction], classes: [CharClass], foldsCase: Bool, anchoredAtStart: Bool) {
    self.program = program
    self.classes = classes
    self.foldsCase = foldsCase
    self.anchoredAtStart = anchoredAtStart
    visitedAt = Array(repeating: -1, count: program.count)
    stack = Array(repeating: 0, count: program.count)
  }

  mutating func run(_ text: String.UnicodeScalarView) -> Bool {
    var current = ThreadList(capacity: program.count)
    var next = ThreadList(capacity: program.count)
    var index = text.startIndex
    var step = 0
    while true {
      let atStart = step == 0
      let atEnd = index == text.endIndex
      // Unanchored search: a new thread may start at every position.
      if atStart || !anchoredAtStart {
        if addThread(0, to: &current, step: step, atStart: atStart, atEnd: atEnd) { return true }
      }
      if atEnd || current.count == 0 && anchoredAtStart { return false }

      let scalar = text[index]
      let following = text.index(after: index)
      let followingIsEnd = following == text.endIndex
      let variants = foldsCase ? CaseVariants(scalar) : nil
      for slot in 0..<current.count {
        let pc = current.pcs[slot]
        let consumed: Bool
        switch program[pc] {
        case .scalar(let expected): consumed = scalar == expected
        case .charClass(let index): consumed = classes[index].matches(scalar, variants: variants)
        case .anyExceptNewline: consumed = scalar != "\n"
        case .split, .jump, .assertStart, .assertEnd, .match: consumed = false
        }
        if consumed && addThread(pc + 1, to: &next, step: step + 1, atStart: false, atEnd: followingIsEnd) {
          return true
        }
      }
      swap(&current, &next)
      next.count = 0
      index = following
      step += 1
    }
  }

  /// Adds the thread at `start`, and every thread reachable from it through empty-width
  /// instructions, to `threads`. Returns true as soon as Match is reachable.
  @inline(__always)
  private mutating func addThread(
    _ start: Int, to threads: inout ThreadList, step: Int, atStart: Bool, atEnd: Bool
  ) -> Bool {
    var pc = start
    while true {
      if visitedAt[pc] != step {
        visitedAt[pc] = step
        switch program[pc] {
        case .match:
          stackCount = 0
          return true
        case .jump(let target):
          pc = target
          continue
        case .split(let first, let second):
          stack[stackCount] = second
          stackCount += 1
          pc = first
          continue
        case .assertStart where atStart, .assertEnd where atEnd:
          pc += 1
          continue
        case .assertStart, .assertEnd:
          break
        case .scalar, .charClass, .anyExceptNewline:
          threads.pcs[threads.count] = pc
          threads.count += 1
        }
      }
      guard stackCount > 0 else { return false }
      stackCount -= 1
      pc = stack[stackCount]
    }
  }
}
