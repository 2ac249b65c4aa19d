/// A parsed expression, before type checking.
struct Syntax {
  indirect enum Kind {
    case literal(Value)
    case identifier(String)
    /// `operand.field`
    case select(Syntax, String)
    /// A function (`size(x)`) or a method (`x.size()`); macros are recognised by the checker.
    case call(String, target: Syntax?, arguments: [Syntax])
    case index(Syntax, Syntax)
    case list([Syntax])
    case map([(Syntax, Syntax)])
    /// `!` or `-`
    case unary(String, Syntax)
    /// `+ - * / % < <= > >= == != in`
    case binary(String, Syntax, Syntax)
    /// `a && b && c`, flattened.
    case and([Syntax])
    case or([Syntax])
    case conditional(Syntax, Syntax, Syntax)
  }

  var kind: Kind
  /// Byte range in the source.
  var start: Int
  var end: Int
  /// Height of the tree below and including this node.
  var depth: Int

  init(_ kind: Kind, start: Int, end: Int, children: [Syntax] = []) {
    self.kind = kind
    self.start = start
    self.end = end
    self.depth = (children.map(\.depth).max() ?? 0) + 1
  }
}

/// A recursive-descent parser of CEL's grammar (cel-spec langdef.md):
///
///     Expr           = ConditionalOr ["?" ConditionalOr ":" Expr]
///     ConditionalOr  = ConditionalAnd {"||" ConditionalAnd}
///     ConditionalAnd = Relation {"&&" Relation}
///     Relation       = Addition {("<" | "<=" | ">=" | ">" | "==" | "!=" | "in") Addition}
///     Addition       = Multiplication {("+" | "-") Multiplication}
///     Multiplication = Unary {("*" | "/" | "%") Unary}
///     Unary          = Member | "!" {"!"} Member | "-" {"-"} Member
///     Member         = Primary | Member "." IDENT ["(" [ExprList] ")"] | Member "[" Expr "]"
///     Primary        = IDENT ["(" [ExprList] ")"] | "(" Expr ")" | "[" [ExprList] [","] "]"
///                    | "{" [MapInits] [","] "}" | LITERAL
///
/// Not supported: leading-dot names, message construction (`Type{field: …}`), optional syntax.
struct ExpressionParser {
  let tokens: [LexedToken]
  let source: SourceMap
  var position = 0
  var nesting = 0

  static func parse(_ source: String) throws(CompileError) -> (Syntax, SourceMap) {
    let bytes = Array(source.utf8)
    let map = SourceMap(bytes: bytes)
    guard bytes.count <= RuleLimits.maxExpressionBytes else {
      throw CompileError(
        line: 1, column: 1, message: "expression too long: \(bytes.count) bytes, at most \(RuleLimits.maxExpressionBytes)")
    }
    var lexer = Lexer(bytes)
    let tokens: [LexedToken]
    do {
      tokens = try lexer.tokens()
    } catch {
      throw map.error(at: error.offset, error.message)
    }
    var parser = ExpressionParser(tokens: tokens, source: map)
    let expression = try parser.expression()
    guard parser.current.token == .end else { throw parser.unexpected() }
    return (expression, map)
  }

  private var current: LexedToken { self.tokens[self.position] }

  private func unexpected() -> CompileError {
    let token = self.current
    if token.token == .end { return self.source.error(at: token.start, "syntax error: unexpected end of expression") }
    return self.source.error(at: token.start, "syntax error: unexpected '\(self.source.text(token.start..<token.end))'")
  }

  private mutating func accept(_ symbol: String) -> Bool {
    if self.current.token == .symbol(symbol) {
      self.position += 1
      return true
    }
    return false
  }

  private mutating func expect(_ symbol: String) throws(CompileError) {
    guard self.accept(symbol) else { throw self.unexpected() }
  }

  private mutating func nested<T>(at offset: Int, _ body: (inout ExpressionParser) throws(CompileError) -> T) throws(CompileError) -> T {
    self.nesting += 1
    defer { self.nesting -= 1 }
    guard self.nesting <= RuleLimits.maxNestingDepth else {
      throw self.source.error(at: offset, "expression nested too deep (at most \(RuleLimits.maxNestingDepth) levels)")
    }
    return try body(&self)
  }

  private func checked(_ node: Syntax) throws(CompileError) -> Syntax {
    guard node.depth <= RuleLimits.maxTreeDepth else {
      throw self.source.error(at: node.start, "expression too deep (a chain of more than \(RuleLimits.maxTreeDepth) operations)")
    }
    return node
  }

  mutating func expression() throws(CompileError) -> Syntax {
    try self.nested(at: self.current.start) { (parser: inout ExpressionParser) throws(CompileError) -> Syntax in
      let condition = try parser.conditionalOr()
      guard parser.accept("?") else { return condition }
      let whenTrue = try parser.conditionalOr()
      try parser.expect(":")
      let whenFalse = try parser.expression()
      return try parser.checked(
        Syntax(
          .conditional(condition, whenTrue, whenFalse), start: condition.start, end: whenFalse.end,
          children: [condition, whenTrue, whenFalse]))
    }
  }

  private mutating func conditionalOr() throws(CompileError) -> Syntax {
    var operands = [try self.conditionalAnd()]
    while self.accept("||") { operands.append(try self.conditionalAnd()) }
    guard operands.count > 1 else { return operands[0] }
    // Flattened: a chain is as deep as its deepest operand, however long it is.
    return Syntax(.or(operands), start: operands[0].start, end: operands[operands.count - 1].end, children: operands)
  }

  private mutating func conditionalAnd() throws(CompileError) -> Syntax {
    var operands = [try self.relation()]
    while self.accept("&&") { operands.append(try self.relation()) }
    guard operands.count > 1 else { return operands[0] }
    return Syntax(.and(operands), start: operands[0].start, end: operands[operands.count - 1].end, children: operands)
  }

  private mutating func relation() throws(CompileError) -> Syntax {
    var left = try self.addition()
    while true {
      let op: String
      switch self.current.token {
      case .symbol(let symbol) where ["<", "<=", ">", ">=", "==", "!="].contains(symbol): op = symbol
      case .identifier("in"): op = "in"
      default: return left
      }
      self.position += 1
      let right = try self.addition()
      left = try self.checked(Syntax(.binary(op, left, right), start: left.start, end: right.end, children: [left, right]))
    }
  }

  private mutating func addition() throws(CompileError) -> Syntax {
    var left = try self.multiplication()
    while case .symbol(let op) = self.current.token, op == "+" || op == "-" {
      self.position += 1
      let right = try self.multiplication()
      left = try self.checked(Syntax(.binary(op, left, right), start: left.start, end: right.end, children: [left, right]))
    }
    return left
  }

  private mutating func multiplication() throws(CompileError) -> Syntax {
    var left = try self.unary()
    while case .symbol(let op) = self.current.token, op == "*" || op == "/" || op == "%" {
      self.position += 1
      let right = try self.unary()
      left = try self.checked(Syntax(.binary(op, left, right), start: left.start, end: right.end, children: [left, right]))
    }
    return left
  }

  private mutating func unary() throws(CompileError) -> Syntax {
    let start = self.current.start
    if self.accept("!") {
      return try self.nested(at: start) { (parser: inout ExpressionParser) throws(CompileError) -> Syntax in
        let operand = try parser.unary()
        return try parser.checked(Syntax(.unary("!", operand), start: start, end: operand.end, children: [operand]))
      }
    }
    if self.accept("-") {
      // A negative literal is a literal: -9223372036854775808 is int's minimum, not an overflow.
      if case .int(let magnitude) = self.current.token, !self.isFollowedByMember() {
        let token = self.current
        self.position += 1
        guard magnitude <= UInt64(Int64.max) + 1 else {
          throw self.source.error(at: start, "syntax error: integer literal out of range")
        }
        let value = magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        return Syntax(.literal(.int(value)), start: start, end: token.end)
      }
      if case .double(let value) = self.current.token, !self.isFollowedByMember() {
        let token = self.current
        self.position += 1
        return Syntax(.literal(.double(-value)), start: start, end: token.end)
      }
      return try self.nested(at: start) { (parser: inout ExpressionParser) throws(CompileError) -> Syntax in
        let operand = try parser.unary()
        return try parser.checked(Syntax(.unary("-", operand), start: start, end: operand.end, children: [operand]))
      }
    }
    return try self.member()
  }

  /// Whether the token after the current one continues a member expression (`-1.size()` is
  /// not a literal followed by a call on it in CEL's grammar: the literal binds first).
  private func isFollowedByMember() -> Bool {
    let next = self.tokens[min(self.position + 1, self.tokens.count - 1)].token
    return next == .symbol(".") || next == .symbol("[")
  }

  private mutating func member() throws(CompileError) -> Syntax {
    var operand = try self.primary()
    while true {
      if self.accept(".") {
        guard case .identifier(let name) = self.current.token, !Lexer.reservedWords.contains(name), name != "in" else {
          throw self.unexpected()
        }
        let nameToken = self.current
        self.position += 1
        if self.accept("(") {
          let arguments = try self.arguments(closing: ")", start: nameToken.start)
          let end = self.tokens[self.position - 1].end
          operand = try self.checked(
            Syntax(.call(name, target: operand, arguments: arguments), start: operand.start, end: end, children: [operand] + arguments))
        } else {
          operand = try self.checked(Syntax(.select(operand, name), start: operand.start, end: nameToken.end, children: [operand]))
        }
      } else if self.accept("[") {
        let index = try self.nested(at: operand.start) { (parser: inout ExpressionParser) throws(CompileError) -> Syntax in try parser.expression() }
        try self.expect("]")
        let end = self.tokens[self.position - 1].end
        operand = try self.checked(Syntax(.index(operand, index), start: operand.start, end: end, children: [operand, index]))
      } else {
        return operand
      }
    }
  }

  /// A comma-separated list up to `closing` (a trailing comma is allowed in lists only).
  private mutating func arguments(closing: String, start: Int, trailingComma: Bool = false) throws(CompileError) -> [Syntax] {
    try self.nested(at: start) { (parser: inout ExpressionParser) throws(CompileError) -> [Syntax] in
      var items: [Syntax] = []
      if parser.accept(closing) { return items }
      while true {
        items.append(try parser.expression())
        guard items.count <= RuleLimits.maxLiteralElements else {
          throw parser.source.error(at: start, "more than \(RuleLimits.maxLiteralElements) elements")
        }
        if parser.accept(closing) { return items }
        try parser.expect(",")
        if trailingComma && parser.accept(closing) { return items }
      }
    }
  }

  private mutating func primary() throws(CompileError) -> Syntax {
    let token = self.current
    switch token.token {
    case .int(let magnitude):
      self.position += 1
      guard magnitude <= UInt64(Int64.max) else { throw self.source.error(at: token.start, "syntax error: integer literal out of range") }
      return Syntax(.literal(.int(Int64(magnitude))), start: token.start, end: token.end)
    case .uint(let value):
      self.position += 1
      return Syntax(.literal(.uint(value)), start: token.start, end: token.end)
    case .double(let value):
      self.position += 1
      return Syntax(.literal(.double(value)), start: token.start, end: token.end)
    case .string(let value):
      self.position += 1
      return Syntax(.literal(.string(value)), start: token.start, end: token.end)
    case .bytes(let value):
      self.position += 1
      return Syntax(.literal(.bytes(value)), start: token.start, end: token.end)
    case .identifier(let name):
      self.position += 1
      switch name {
      case "true": return Syntax(.literal(.bool(true)), start: token.start, end: token.end)
      case "false": return Syntax(.literal(.bool(false)), start: token.start, end: token.end)
      case "null": return Syntax(.literal(.null), start: token.start, end: token.end)
      default: break
      }
      guard !Lexer.reservedWords.contains(name), name != "in" else {
        throw self.source.error(at: token.start, "syntax error: '\(name)' is a reserved word")
      }
      if self.accept("(") {
        let arguments = try self.arguments(closing: ")", start: token.start)
        let end = self.tokens[self.position - 1].end
        return try self.checked(Syntax(.call(name, target: nil, arguments: arguments), start: token.start, end: end, children: arguments))
      }
      return Syntax(.identifier(name), start: token.start, end: token.end)
    case .symbol("("):
      self.position += 1
      let inner = try self.nested(at: token.start) { (parser: inout ExpressionParser) throws(CompileError) -> Syntax in try parser.expression() }
      try self.expect(")")
      return inner
    case .symbol("["):
      self.position += 1
      let elements = try self.arguments(closing: "]", start: token.start, trailingComma: true)
      let end = self.tokens[self.position - 1].end
      return try self.checked(Syntax(.list(elements), start: token.start, end: end, children: elements))
    case .symbol("{"):
      self.position += 1
      let entries = try self.mapEntries(start: token.start)
      let end = self.tokens[self.position - 1].end
      return try self.checked(
        Syntax(.map(entries), start: token.start, end: end, children: entries.flatMap { [$0.0, $0.1] }))
    default:
      throw self.unexpected()
    }
  }

  private mutating func mapEntries(start: Int) throws(CompileError) -> [(Syntax, Syntax)] {
    try self.nested(at: start) { (parser: inout ExpressionParser) throws(CompileError) -> [(Syntax, Syntax)] in
      var entries: [(Syntax, Syntax)] = []
      if parser.accept("}") { return entries }
      while true {
        let key = try parser.expression()
        try parser.expect(":")
        let value = try parser.expression()
        entries.append((key, value))
        guard entries.count <= RuleLimits.maxLiteralElements else {
          throw parser.source.error(at: start, "more than \(RuleLimits.maxLiteralElements) entries")
        }
        if parser.accept("}") { return entries }
        try parser.expect(",")
        if parser.accept("}") { return entries }
      }
    }
  }
}
