/// The variables an expression may use, with their types: what rules are checked against.
public struct Declarations: Sendable {
  public private(set) var variables: [(name: String, type: CELType)] = []
  var slots: [String: Int] = [:]
  /// Names bound to values known when compiling (a rule set's lists): folded into the program,
  /// so `x in lists.blocked` is a hash lookup rather than a walk of the list.
  var constants: [String: (value: Value, type: CELType)] = [:]
  /// For each list of strings among a bound message's fields ("lists.blocked"): its strings,
  /// hashed once and shared by every `in` over it (not rebuilt per rule or per comparison).
  var constantIndexes: [String: ListIndex] = [:]

  public init(_ variables: [(name: String, type: CELType)] = []) {
    for variable in variables { self.declare(variable.name, variable.type) }
  }

  public mutating func bind(_ name: String, constant value: Value, type: CELType) {
    precondition(self.slots[name] == nil && self.constants[name] == nil, "\(name) declared twice")
    self.constants[name] = (value, type)
    if case .object(let object) = value {
      for (index, field) in object.type.fields.enumerated() {
        if case .list(let elements)? = object.fields[index], let keys = ListIndex(elements) {
          self.constantIndexes[name + "." + field.name] = keys
        }
      }
    }
  }

  public mutating func declare(_ name: String, _ type: CELType) {
    precondition(self.slots[name] == nil && self.constants[name] == nil, "\(name) declared twice")
    self.slots[name] = self.variables.count
    self.variables.append((name, type))
  }

  /// Type-checks and compiles `source`; refusals carry line and column.
  public func compile(_ source: String) throws(CompileError) -> Program {
    let (syntax, map) = try ExpressionParser.parse(source)
    var compiler = ExpressionCompiler(declarations: self, source: map)
    let (compiled, type) = try compiler.compile(syntax)
    let root = compiler.explained(compiled, syntax, type)
    return Program(
      source: source, root: root, type: type, slotCount: compiler.slotCount, declaredCount: self.variables.count)
  }
}

/// A compiled expression: checked once, evaluated many times (concurrently too: each evaluation
/// has its own activation).
public final class Program: Sendable {
  public let source: String
  /// The static type of the result (rules need `bool`).
  public let type: CELType
  let root: EvalNode
  let slotCount: Int
  let declaredCount: Int

  init(source: String, root: EvalNode, type: CELType, slotCount: Int, declaredCount: Int) {
    self.source = source
    self.root = root
    self.type = type
    self.slotCount = slotCount
    self.declaredCount = declaredCount
  }

  func slots(for variables: [Value]) -> [Value] {
    precondition(variables.count == self.declaredCount, "one value per declared variable")
    return variables
  }

  /// Evaluates with one value per declared variable, in declaration order.
  public func evaluate(_ variables: [Value]) throws(EvaluationError) -> Value {
    try self.root.eval(self.activation(variables, explaining: false))
  }

  /// Evaluates and returns the comparisons that held on the way to the result, as text with
  /// their operands' values: what a rule that fired shows as its explanation.
  public func explain(_ variables: [Value]) throws(EvaluationError) -> (value: Value, because: [String]) {
    let activation = self.activation(variables, explaining: true)
    let value = try self.root.eval(activation)
    return (value, activation.trace ?? [])
  }

  /// Evaluates within a shared evaluation (several programs over the same variables).
  public func evaluate(in evaluation: Evaluation) throws(EvaluationError) -> Value {
    try self.root.eval(evaluation.prepare(self, explaining: false))
  }

  public func explain(in evaluation: Evaluation) throws(EvaluationError) -> (value: Value, because: [String]) {
    let activation = evaluation.prepare(self, explaining: true)
    let value = try self.root.eval(activation)
    return (value, activation.trace ?? [])
  }

  private func activation(_ variables: [Value], explaining: Bool) -> Activation {
    var slots = self.slots(for: variables)
    if self.slotCount > slots.count { slots.append(contentsOf: repeatElement(.null, count: self.slotCount - slots.count)) }
    return Activation(slots: slots, explaining: explaining)
  }
}

/// One set of variables evaluated by several programs compiled against the same declarations
/// (a rule set's rules), sharing one activation: no allocation per program.
public final class Evaluation {
  let activation: Activation
  let declaredCount: Int
  /// Work all the programs evaluated here may do together (each within its own budget).
  let decisionSteps: Int

  /// `variables` for programs compiled against the same declarations as `program`; all of
  /// them together do at most `decisionSteps` (never more than ``RuleLimits/maxDecisionSteps``).
  public init(_ variables: [Value], for program: Program, decisionSteps: Int = RuleLimits.maxDecisionSteps) {
    self.activation = Activation(slots: program.slots(for: variables), explaining: false)
    self.declaredCount = variables.count
    self.decisionSteps = max(0, min(decisionSteps, RuleLimits.maxDecisionSteps))
  }

  /// Work done by every program evaluated so far (at most ``RuleLimits/maxDecisionSteps``).
  public var steps: Int { self.activation.steps }

  func prepare(_ program: Program, explaining: Bool) -> Activation {
    precondition(program.declaredCount == self.declaredCount, "one value per declared variable")
    let activation = self.activation
    if activation.slots.count < program.slotCount {
      activation.slots.append(contentsOf: repeatElement(.null, count: program.slotCount - activation.slots.count))
    }
    // Each program has its own budget, and all of them together one more.
    activation.limit = activation.steps + min(RuleLimits.maxEvaluationSteps, max(0, self.decisionSteps - activation.steps))
    activation.trace = explaining ? [] : nil
    activation.quiet = 0
    return activation
  }
}

/// Type checker and code generator in one pass over the syntax tree.
struct ExpressionCompiler {
  let declarations: Declarations
  let source: SourceMap
  /// Macro variables in scope, innermost last: name → slot and type.
  var scopes: [(name: String, slot: Int, type: CELType)] = []
  var slotCount: Int

  static let macros: Set<String> = ["all", "exists", "exists_one", "filter", "map"]
  static let conversions: [String: (result: CELType, accepts: Set<String>)] = [
    "int": (.int, ["int", "uint", "double", "string", "google.protobuf.Timestamp"]),
    "uint": (.uint, ["int", "uint", "double", "string"]),
    "double": (.double, ["int", "uint", "double", "string"]),
    "string": (.string, ["int", "uint", "double", "string", "bool", "bytes", "google.protobuf.Timestamp", "google.protobuf.Duration"]),
    "bytes": (.bytes, ["bytes", "string"]),
    "bool": (.bool, ["bool", "string"]),
    "timestamp": (.timestamp, ["google.protobuf.Timestamp", "string", "int"]),
    "duration": (.duration, ["google.protobuf.Duration", "string"]),
  ]
  static let timestampAccessors: Set<String> = [
    "getFullYear", "getMonth", "getDayOfMonth", "getDate", "getDayOfYear", "getDayOfWeek", "getHours", "getMinutes", "getSeconds",
    "getMilliseconds",
  ]
  static let durationAccessors: Set<String> = ["getHours", "getMinutes", "getSeconds", "getMilliseconds"]

  init(declarations: Declarations, source: SourceMap) {
    self.declarations = declarations
    self.source = source
    self.slotCount = declarations.variables.count
  }

  private func error(_ node: Syntax, _ message: String) -> CompileError {
    self.source.error(at: node.start, message)
  }

  private func noOverload(_ node: Syntax, _ function: String, _ types: CELType...) -> CompileError {
    self.error(node, "no matching overload for '\(function)' applied to (\(types.map(\.description).joined(separator: ", ")))")
  }

  mutating func compile(_ node: Syntax) throws(CompileError) -> (EvalNode, CELType) {
    switch node.kind {
    case .literal(let value):
      return (ConstantNode(value), Self.type(of: value))

    case .identifier(let name):
      if let scoped = self.scopes.last(where: { $0.name == name }) { return (SlotNode(scoped.slot), scoped.type) }
      if let slot = self.declarations.slots[name] { return (SlotNode(slot), self.declarations.variables[slot].type) }
      if let constant = self.declarations.constants[name] { return (ConstantNode(constant.value), constant.type) }
      throw self.error(node, "undeclared reference to '\(name)'")

    case .select(let operandSyntax, let field):
      let (operand, type) = try self.compile(operandSyntax)
      switch type {
      case .object(let objectType):
        guard let slot = objectType.slot(field) else { throw self.error(node, "undefined field '\(field)' of \(objectType.name)") }
        let fieldType = objectType.fields[slot].type
        if let constant = operand as? ConstantNode, case .object(let object) = constant.value {
          var index: ListIndex?
          if case .identifier(let name) = operandSyntax.kind { index = self.declarations.constantIndexes[name + "." + field] }
          return (ConstantNode(object.fields[slot] ?? Operators.defaultValue(fieldType), index: index), fieldType)
        }
        return (ObjectFieldNode(operand, slot: slot, defaultValue: Operators.defaultValue(fieldType)), fieldType)
      case .map(let key, let value) where key == .string || key == .dyn:
        return (DynamicSelectNode(operand, name: field, testOnly: false), value)
      case .dyn:
        return (DynamicSelectNode(operand, name: field, testOnly: false), .dyn)
      default:
        throw self.error(node, "no matching overload: \(type) has no fields (selecting '\(field)')")
      }

    case .call(let name, let target, let arguments):
      return try self.call(node, name, target: target, arguments)

    case .index(let containerSyntax, let indexSyntax):
      let (container, containerType) = try self.compile(containerSyntax)
      let (index, indexType) = try self.compile(indexSyntax)
      switch containerType {
      case .list(let element) where [.int, .uint, .dyn].contains(indexType):
        return (IndexNode(container, index), element)
      case .map(let key, let value) where key.isCompatible(with: indexType) || (key.isNumeric && indexType.isNumeric):
        return (IndexNode(container, index), value)
      case .dyn:
        return (IndexNode(container, index), .dyn)
      default:
        throw self.noOverload(node, "_[_]", containerType, indexType)
      }

    case .list(let elementSyntaxes):
      var elements: [EvalNode] = []
      var elementType: CELType?
      for syntax in elementSyntaxes {
        let (element, type) = try self.compile(syntax)
        elements.append(element)
        elementType = elementType.map { $0.joined(with: type) } ?? type
      }
      return (ListNode(elements), .list(elementType ?? .dyn))

    case .map(let entrySyntaxes):
      var entries: [(EvalNode, EvalNode)] = []
      var keyType: CELType?
      var valueType: CELType?
      for (keySyntax, valueSyntax) in entrySyntaxes {
        let (key, kType) = try self.compile(keySyntax)
        guard [.int, .uint, .bool, .string, .dyn].contains(kType) else {
          throw self.error(keySyntax, "unsupported map key type \(kType) (int, uint, bool or string)")
        }
        let (value, vType) = try self.compile(valueSyntax)
        entries.append((key, value))
        keyType = keyType.map { $0.joined(with: kType) } ?? kType
        valueType = valueType.map { $0.joined(with: vType) } ?? vType
      }
      return (MapNode(entries), .map(keyType ?? .dyn, valueType ?? .dyn))

    case .unary(let op, let operandSyntax):
      let (operand, type) = try self.compile(operandSyntax)
      if op == "!" {
        guard type == .bool || type == .dyn else { throw self.noOverload(node, "!_", type) }
        return (NotNode(operand), .bool)
      }
      guard [.int, .double, .duration, .dyn].contains(type) else { throw self.noOverload(node, "-_", type) }
      return (NegateNode(operand), type)

    case .binary(let op, let lhsSyntax, let rhsSyntax):
      let (lhs, lt) = try self.compile(lhsSyntax)
      let (rhs, rt) = try self.compile(rhsSyntax)
      if let arithmetic = ArithmeticOperator(rawValue: op) {
        guard let type = Self.arithmeticType(arithmetic, lt, rt) else { throw self.noOverload(node, "_\(op)_", lt, rt) }
        return (ArithmeticNode(arithmetic, lhs, rhs), type)
      }
      let valid: Bool
      switch op {
      case "==", "!=":
        valid = lt.isCompatible(with: rt) || (lt.isNumeric && rt.isNumeric)
      case "in":
        switch rt {
        case .list(let element): valid = lt.isCompatible(with: element) || (lt.isNumeric && element.isNumeric)
        case .map(let key, _): valid = lt.isCompatible(with: key) || (lt.isNumeric && key.isNumeric)
        case .dyn: valid = true
        default: valid = false
        }
      default:
        let orderable: Set<CELType> = [.int, .uint, .double, .string, .bytes, .bool, .timestamp, .duration, .dyn]
        valid =
          orderable.contains(lt) && orderable.contains(rt)
          && (lt == .dyn || rt == .dyn || lt == rt || (lt.isNumeric && rt.isNumeric))
      }
      guard valid else { throw self.noOverload(node, op == "in" ? "@in" : "_\(op)_", lt, rt) }
      return (
        ComparisonNode(
          op, lhs, rhs, lhsText: self.source.text(lhsSyntax.start..<lhsSyntax.end), rhsText: self.source.text(rhsSyntax.start..<rhsSyntax.end)),
        .bool
      )

    case .and(let operandSyntaxes), .or(let operandSyntaxes):
      let isAnd: Bool
      if case .and = node.kind { isAnd = true } else { isAnd = false }
      var operands: [EvalNode] = []
      for syntax in operandSyntaxes {
        let (operand, type) = try self.compile(syntax)
        guard type == .bool || type == .dyn else { throw self.noOverload(syntax, isAnd ? "_&&_" : "_||_", type) }
        operands.append(self.explained(operand, syntax, type))
      }
      return (isAnd ? AndNode(operands) : OrNode(operands), .bool)

    case .conditional(let conditionSyntax, let trueSyntax, let falseSyntax):
      let (condition, ct) = try self.compile(conditionSyntax)
      guard ct == .bool || ct == .dyn else { throw self.noOverload(conditionSyntax, "_?_:_", ct) }
      let (whenTrue, tt) = try self.compile(trueSyntax)
      let (whenFalse, ft) = try self.compile(falseSyntax)
      guard tt.isCompatible(with: ft) else { throw self.noOverload(node, "_?_:_", ct, tt, ft) }
      return (ConditionalNode(condition, whenTrue, whenFalse), tt == .dyn ? ft : tt.joined(with: ft))
    }
  }

  /// `node` wrapped to explain itself when it is a bool flag or call rather than a comparison
  /// or a logical operator (which explain themselves or their operands).
  func explained(_ node: EvalNode, _ syntax: Syntax, _ type: CELType) -> EvalNode {
    guard type == .bool || type == .dyn else { return node }
    switch syntax.kind {
    case .identifier, .select, .call, .index: return ExplainedNode(node, text: self.source.text(syntax.start..<syntax.end))
    default: return node
    }
  }

  static func type(of value: Value) -> CELType {
    switch value {
    case .int: .int
    case .uint: .uint
    case .double: .double
    case .string: .string
    case .bytes: .bytes
    case .bool: .bool
    case .null: .null
    case .timestamp: .timestamp
    case .duration: .duration
    case .list: .list(.dyn)
    case .map: .map(.dyn, .dyn)
    case .object(let object): .object(object.type)
    }
  }

  static func arithmeticType(_ op: ArithmeticOperator, _ lt: CELType, _ rt: CELType) -> CELType? {
    if lt == .dyn || rt == .dyn {
      // The result's type is the known operand's where the operator keeps types (+ on lists,
      // arithmetic on numbers); otherwise it is only known at run time.
      let known = lt == .dyn ? rt : lt
      switch known {
      case .int, .uint, .double: return known
      default: return .dyn
      }
    }
    switch (op, lt, rt) {
    case (_, .int, .int), (_, .uint, .uint): return lt
    case (.add, .double, .double), (.subtract, .double, .double), (.multiply, .double, .double), (.divide, .double, .double): return .double
    case (.add, .string, .string): return .string
    case (.add, .bytes, .bytes): return .bytes
    case (.add, .list(let a), .list(let b)): return .list(a.joined(with: b))
    case (.add, .timestamp, .duration), (.add, .duration, .timestamp): return .timestamp
    case (.add, .duration, .duration), (.subtract, .duration, .duration): return .duration
    case (.subtract, .timestamp, .timestamp): return .duration
    case (.subtract, .timestamp, .duration): return .timestamp
    default: return nil
    }
  }

  // MARK: Calls and macros

  private mutating func call(_ node: Syntax, _ name: String, target: Syntax?, _ arguments: [Syntax]) throws(CompileError) -> (EvalNode, CELType) {
    if name == "has" && target == nil {
      guard arguments.count == 1, case .select(let operandSyntax, let field) = arguments[0].kind else {
        throw self.error(node, "has() takes one field selection, such as has(payment.purpose)")
      }
      let (operand, type) = try self.compile(operandSyntax)
      switch type {
      case .object(let objectType):
        guard let slot = objectType.slot(field) else { throw self.error(arguments[0], "undefined field '\(field)' of \(objectType.name)") }
        return (HasFieldNode(operand, slot: slot), .bool)
      case .map(let key, _) where key == .string || key == .dyn:
        return (DynamicSelectNode(operand, name: field, testOnly: true), .bool)
      case .dyn:
        return (DynamicSelectNode(operand, name: field, testOnly: true), .bool)
      default:
        throw self.error(node, "has() needs a map or a message, not \(type)")
      }
    }
    if let target, Self.macros.contains(name) {
      return try self.macro(node, name, target: target, arguments)
    }

    // Functions: the receiver first.
    var nodes: [EvalNode] = []
    var types: [CELType] = []
    for syntax in (target.map { [$0] } ?? []) + arguments {
      let (compiled, type) = try self.compile(syntax)
      nodes.append(compiled)
      types.append(type)
    }
    func accepts(_ type: CELType, _ allowed: Set<CELType>) -> Bool { type == .dyn || allowed.contains(type) }
    let isMethod = target != nil
    switch name {
    case "size" where types.count == 1:
      if case .list = types[0] { return (FunctionNode(.size, nodes), .int) }
      if case .map = types[0] { return (FunctionNode(.size, nodes), .int) }
      guard accepts(types[0], [.string, .bytes]) else { throw self.noOverload(node, "size", types[0]) }
      return (FunctionNode(.size, nodes), .int)
    case "contains" where isMethod && types.count == 2, "startsWith" where isMethod && types.count == 2,
      "endsWith" where isMethod && types.count == 2:
      guard accepts(types[0], [.string]), accepts(types[1], [.string]) else { throw self.noOverload(node, name, types[0], types[1]) }
      let function: FunctionNode.Function = name == "contains" ? .contains : (name == "startsWith" ? .startsWith : .endsWith)
      return (FunctionNode(function, nodes), .bool)
    case "matches" where types.count == 2:
      guard accepts(types[0], [.string]), accepts(types[1], [.string]) else { throw self.noOverload(node, name, types[0], types[1]) }
      let patternSyntax = isMethod ? arguments[0] : arguments[1]
      var compiled: SafeRegex?
      if case .literal(.string(let pattern)) = patternSyntax.kind {
        do {
          compiled = try SafeRegex(pattern)
        } catch {
          throw self.error(patternSyntax, "invalid regex: \(error.description)")
        }
      }
      return (FunctionNode(.matches(compiled), nodes), .bool)
    case "dyn" where !isMethod && types.count == 1:
      return (FunctionNode(.dyn, nodes), .dyn)
    case _ where !isMethod && types.count == 1 && Self.conversions[name] != nil:
      guard let conversion = Self.conversions[name] else { break }
      guard types[0] == .dyn || conversion.accepts.contains(types[0].description) else { throw self.noOverload(node, name, types[0]) }
      let function: FunctionNode.Function
      switch name {
      case "int": function = .int
      case "uint": function = .uint
      case "double": function = .double
      case "string": function = .string
      case "bytes": function = .bytes
      case "bool": function = .bool
      case "timestamp": function = .timestamp
      default: function = .duration
      }
      return (FunctionNode(function, nodes), conversion.result)
    case _ where isMethod && Self.timestampAccessors.contains(name):
      let zoneOK = types.count == 1 || (types.count == 2 && accepts(types[1], [.string]))
      switch types[0] {
      case .timestamp where zoneOK: return (FunctionNode(.accessor(name), nodes), .int)
      case .duration where types.count == 1 && Self.durationAccessors.contains(name): return (FunctionNode(.accessor(name), nodes), .int)
      case .dyn where zoneOK: return (FunctionNode(.accessor(name), nodes), .int)
      default: throw self.noOverload(node, name, types[0])
      }
    default:
      break
    }
    let known: Set<String> = ["size", "contains", "startsWith", "endsWith", "matches", "dyn"]
    if known.contains(name) || Self.conversions[name] != nil || Self.timestampAccessors.contains(name) {
      // Wrong arity or receiver (`size()`, `s.int()`): name every argument's type, if any.
      throw self.error(
        node, "no matching overload for '\(name)' applied to (\(types.map(\.description).joined(separator: ", ")))")
    }
    throw self.error(node, "undeclared reference to function '\(name)'")
  }

  private mutating func macro(_ node: Syntax, _ name: String, target: Syntax, _ arguments: [Syntax]) throws(CompileError) -> (EvalNode, CELType) {
    let arity = name == "map" ? [2, 3] : [2]
    guard arity.contains(arguments.count) else {
      throw self.error(node, "macro '\(name)' takes \(name == "map" ? "2 or 3" : "2") arguments")
    }
    guard case .identifier(let variable) = arguments[0].kind else {
      throw self.error(arguments[0], "macro '\(name)' needs a variable name as its first argument")
    }
    let (range, rangeType) = try self.compile(target)
    let elementType: CELType
    switch rangeType {
    case .list(let element): elementType = element
    case .map(let key, _): elementType = key
    case .dyn: elementType = .dyn
    default: throw self.error(node, "macro '\(name)' needs a list or a map, not \(rangeType)")
    }
    let slot = self.slotCount
    self.slotCount += 1
    self.scopes.append((variable, slot, elementType))
    defer { self.scopes.removeLast() }

    func predicate(_ syntax: Syntax) throws(CompileError) -> EvalNode {
      let (compiled, type) = try self.compile(syntax)
      guard type == .bool || type == .dyn else { throw self.error(syntax, "the condition of '\(name)' must be bool, not \(type)") }
      return compiled
    }
    switch name {
    case "all": return (ComprehensionNode(.all, range: range, slot: slot, predicate: try predicate(arguments[1]), transform: nil), .bool)
    case "exists": return (ComprehensionNode(.exists, range: range, slot: slot, predicate: try predicate(arguments[1]), transform: nil), .bool)
    case "exists_one":
      return (ComprehensionNode(.existsOne, range: range, slot: slot, predicate: try predicate(arguments[1]), transform: nil), .bool)
    case "filter":
      return (ComprehensionNode(.filter, range: range, slot: slot, predicate: try predicate(arguments[1]), transform: nil), .list(elementType))
    default:
      let filter = arguments.count == 3 ? try predicate(arguments[1]) : nil
      let (transform, type) = try self.compile(arguments[arguments.count - 1])
      return (ComprehensionNode(.map, range: range, slot: slot, predicate: filter, transform: transform), .list(type))
    }
  }
}
