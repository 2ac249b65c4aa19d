/// The state of one evaluation: variable slots (declared variables first, then macro
/// variables), the iteration budget, and the explanation when one is asked for.
final class Activation {
  var slots: [Value]
  /// Work done since the activation was made (every program of an ``Evaluation`` adds to it).
  var steps = 0
  /// Where the program being evaluated must stop: its own budget, within what is left of the
  /// whole evaluation's.
  var limit = RuleLimits.maxEvaluationSteps
  /// Comparisons that held, as text, when explaining (nil: not explaining).
  var trace: [String]?
  /// Inside a macro: nothing is traced (what explains a rule is its own comparisons).
  var quiet = 0

  init(slots: [Value], explaining: Bool) {
    self.slots = slots
    self.trace = explaining ? [] : nil
  }

  var tracing: Bool { self.trace != nil && self.quiet == 0 }

  func step(cost: Int = 1) throws(EvaluationError) {
    self.steps += cost
    if self.steps > self.limit { throw .budget }
  }
}

/// A compiled expression node. Nodes are immutable after compilation and shared by every
/// evaluation of their program.
class EvalNode: @unchecked Sendable {
  func eval(_ a: Activation) throws(EvaluationError) -> Value { fatalError("abstract") }

  /// The value as a bool, or "no such overload" (only `dyn` operands can fail here).
  final func bool(_ a: Activation, _ function: String) throws(EvaluationError) -> Bool {
    let value = try self.eval(a)
    guard case .bool(let b) = value else { throw .noSuchOverload(function, value) }
    return b
  }
}

/// The strings of a constant list, hashed by code points.
final class ListIndex: Sendable {
  let keys: Set<MapKey>

  /// Nil unless every element is a string.
  init?(_ elements: [Value]) {
    var keys = Set<MapKey>(minimumCapacity: elements.count)
    for element in elements {
      guard case .string(let text) = element else { return nil }
      keys.insert(.string(text))
    }
    self.keys = keys
  }
}

final class ConstantNode: EvalNode, @unchecked Sendable {
  let value: Value
  /// For a bound list of strings: its shared index (see ``Declarations``).
  let index: ListIndex?
  init(_ value: Value, index: ListIndex? = nil) {
    self.value = value
    self.index = index
  }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value { self.value }
}

final class SlotNode: EvalNode, @unchecked Sendable {
  let slot: Int
  init(_ slot: Int) { self.slot = slot }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value { a.slots[self.slot] }
}

final class ObjectFieldNode: EvalNode, @unchecked Sendable {
  let operand: EvalNode
  let slot: Int
  let defaultValue: Value
  init(_ operand: EvalNode, slot: Int, defaultValue: Value) {
    self.operand = operand
    self.slot = slot
    self.defaultValue = defaultValue
  }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    let value = try self.operand.eval(a)
    guard case .object(let object) = value else { throw .noSuchOverload("_._", value) }
    return object.fields[self.slot] ?? self.defaultValue
  }
}

/// `operand.name` where the operand is a map or only known at run time.
final class DynamicSelectNode: EvalNode, @unchecked Sendable {
  let operand: EvalNode
  let name: String
  let testOnly: Bool
  init(_ operand: EvalNode, name: String, testOnly: Bool) {
    self.operand = operand
    self.name = name
    self.testOnly = testOnly
  }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    let value = try self.operand.eval(a)
    switch value {
    case .map(let map):
      let found = map[.string(self.name)]
      if self.testOnly { return .bool(found != nil) }
      guard let found else { throw EvaluationError("no such key: \"\(self.name)\"") }
      return found
    case .object(let object):
      guard let slot = object.type.slot(self.name) else { throw EvaluationError("no such field: \(self.name)") }
      if self.testOnly { return .bool(object.fields[slot] != nil) }
      return object.fields[slot] ?? Operators.defaultValue(object.type.fields[slot].type)
    default:
      throw .noSuchOverload(self.testOnly ? "has" : "_._", value)
    }
  }
}

final class HasFieldNode: EvalNode, @unchecked Sendable {
  let operand: EvalNode
  let slot: Int
  init(_ operand: EvalNode, slot: Int) {
    self.operand = operand
    self.slot = slot
  }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    let value = try self.operand.eval(a)
    guard case .object(let object) = value else { throw .noSuchOverload("has", value) }
    return .bool(object.fields[self.slot] != nil)
  }
}

final class IndexNode: EvalNode, @unchecked Sendable {
  let container: EvalNode
  let index: EvalNode
  init(_ container: EvalNode, _ index: EvalNode) {
    self.container = container
    self.index = index
  }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    try Operators.index(try self.container.eval(a), try self.index.eval(a))
  }
}

final class ListNode: EvalNode, @unchecked Sendable {
  let elements: [EvalNode]
  init(_ elements: [EvalNode]) { self.elements = elements }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    try a.step(cost: self.elements.count / RuleLimits.elementsPerStep)
    var values: [Value] = []
    values.reserveCapacity(self.elements.count)
    for element in self.elements { values.append(try element.eval(a)) }
    return .list(values)
  }
}

final class MapNode: EvalNode, @unchecked Sendable {
  let entries: [(EvalNode, EvalNode)]
  init(_ entries: [(EvalNode, EvalNode)]) { self.entries = entries }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    try a.step(cost: self.entries.count / RuleLimits.elementsPerStep)
    var map = MapValue()
    for (keyNode, valueNode) in self.entries {
      let key = try keyNode.eval(a)
      guard let mapKey = MapKey(key) else { throw EvaluationError("unsupported map key type: \(key.typeName)") }
      guard map[mapKey] == nil else { throw EvaluationError("duplicate map key: \(Operators.describe(key))") }
      map[mapKey] = try valueNode.eval(a)
    }
    return .map(map)
  }
}

final class NotNode: EvalNode, @unchecked Sendable {
  let operand: EvalNode
  init(_ operand: EvalNode) { self.operand = operand }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    // What made the operand true does not explain its negation.
    let mark = a.trace?.count
    let value = try self.operand.bool(a, "!_")
    if let mark { a.trace?.removeSubrange(mark...) }
    return .bool(!value)
  }
}

final class NegateNode: EvalNode, @unchecked Sendable {
  let operand: EvalNode
  init(_ operand: EvalNode) { self.operand = operand }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value { try Operators.negate(try self.operand.eval(a)) }
}

enum ArithmeticOperator: String {
  case add = "+", subtract = "-", multiply = "*", divide = "/", modulo = "%"
}

final class ArithmeticNode: EvalNode, @unchecked Sendable {
  let op: ArithmeticOperator
  let lhs: EvalNode
  let rhs: EvalNode
  init(_ op: ArithmeticOperator, _ lhs: EvalNode, _ rhs: EvalNode) {
    self.op = op
    self.lhs = lhs
    self.rhs = rhs
  }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    let left = try self.lhs.eval(a)
    let right = try self.rhs.eval(a)
    // The common case first, without the general dispatch.
    if case .int(let x) = left, case .int(let y) = right, self.op == .add || self.op == .subtract {
      let (result, overflow) = self.op == .add ? x.addingReportingOverflow(y) : x.subtractingReportingOverflow(y)
      if overflow { throw .overflow }
      return .int(result)
    }
    switch self.op {
    case .add:
      // Building a string, bytes or list value costs by its size.
      let sum = try Operators.add(left, right)
      try a.step(cost: Self.size(sum))
      return sum
    case .subtract: return try Operators.subtract(left, right)
    case .multiply: return try Operators.multiply(left, right)
    case .divide: return try Operators.divide(left, right)
    case .modulo: return try Operators.modulo(left, right)
    }
  }

  /// The steps a string, bytes or list value of this size is worth (0 for the others).
  static func size(_ value: Value) -> Int {
    switch value {
    case .string(let text): text.utf8.count / RuleLimits.bytesBuiltPerStep
    case .bytes(let bytes): bytes.count / RuleLimits.bytesBuiltPerStep
    case .list(let list): list.count / RuleLimits.elementsPerStep
    default: 0
    }
  }
}

/// `== != < <= > >= in`. When explaining, a comparison that holds records itself with its
/// operands' values ("features.amount_zscore (6.2) > 4").
final class ComparisonNode: EvalNode, @unchecked Sendable {
  let op: String
  let lhs: EvalNode
  let rhs: EvalNode
  let lhsText: String
  let rhsText: String
  let lhsIsConstant: Bool
  let rhsIsConstant: Bool
  let kind: Kind
  /// `x in [constant strings]`: the strings, hashed by code points.
  let members: Set<MapKey>?

  enum Kind {
    case equal, notEqual, member, order
  }

  init(_ op: String, _ lhs: EvalNode, _ rhs: EvalNode, lhsText: String, rhsText: String) {
    self.op = op
    self.lhs = lhs
    self.rhs = rhs
    self.lhsText = lhsText
    self.rhsText = rhsText
    self.lhsIsConstant = lhs is ConstantNode
    self.rhsIsConstant = rhs is ConstantNode
    switch op {
    case "==": self.kind = .equal
    case "!=": self.kind = .notEqual
    case "in": self.kind = .member
    default: self.kind = .order
    }
    var members: Set<MapKey>?
    if op == "in", let constant = rhs as? ConstantNode {
      if let index = constant.index {
        members = index.keys  // shared storage, not a copy
      } else if case .list(let elements) = constant.value {
        // A literal list in the expression: bounded by the expression's size.
        members = ListIndex(elements)?.keys
      }
    }
    self.members = members
  }

  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    let left = try self.lhs.eval(a)
    let right = try self.rhs.eval(a)
    // Walking a computed list (deep equality, membership) is work the budget counts, and so is
    // comparing long strings or bytes.
    if case .list(let list) = right, self.members == nil { try a.step(cost: list.count / RuleLimits.elementsPerStep) }
    if self.kind != .member { try a.step(cost: min(Self.textSize(left), Self.textSize(right))) }
    let result: Bool
    switch self.kind {
    case .equal: result = Operators.equal(left, right)
    case .notEqual: result = !Operators.equal(left, right)
    case .member:
      if let members = self.members, case .string(let text) = left {
        result = members.contains(.string(text))
      } else {
        result = try Operators.contains(left, in: right)
      }
    case .order: result = try Operators.compare(self.op, left, right)
    }
    if result, a.tracing {
      a.trace?.append("\(self.render(self.lhsText, left, self.lhsIsConstant)) \(self.op) \(self.render(self.rhsText, right, self.rhsIsConstant))")
    }
    return .bool(result)
  }

  /// The steps comparing a string or bytes value of this size is worth (0 for the others).
  static func textSize(_ value: Value) -> Int {
    switch value {
    case .string(let text): text.utf8.count / RuleLimits.bytesBuiltPerStep
    case .bytes(let bytes): bytes.count / RuleLimits.bytesBuiltPerStep
    default: 0
    }
  }

  private func render(_ text: String, _ value: Value, _ constant: Bool) -> String {
    if constant { return text }
    if case .list = value { return text }
    if case .map = value { return text }
    return "\(text) (\(Operators.describe(value)))"
  }
}

/// `a && b && …` with CEL's commutative, error-absorbing semantics: false if any operand is
/// false (even when others fail), else the first error, else true.
final class AndNode: EvalNode, @unchecked Sendable {
  let operands: [EvalNode]
  init(_ operands: [EvalNode]) { self.operands = operands }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    let mark = a.trace?.count
    var failure: EvaluationError?
    for operand in self.operands {
      do {
        if try !operand.bool(a, "_&&_") {
          if let mark { a.trace?.removeSubrange(mark...) }
          return .bool(false)
        }
      } catch {
        if failure == nil { failure = error }
      }
    }
    if let failure {
      if let mark { a.trace?.removeSubrange(mark...) }
      throw failure
    }
    return .bool(true)
  }
}

/// `a || b || …`: true if any operand is true (even when others fail), else the first error,
/// else false. Explains by the first operand that held.
final class OrNode: EvalNode, @unchecked Sendable {
  let operands: [EvalNode]
  init(_ operands: [EvalNode]) { self.operands = operands }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    let mark = a.trace?.count
    var failure: EvaluationError?
    for operand in self.operands {
      do {
        if try operand.bool(a, "_||_") { return .bool(true) }
      } catch {
        if failure == nil { failure = error }
      }
      if let mark { a.trace?.removeSubrange(mark...) }
    }
    if let failure { throw failure }
    return .bool(false)
  }
}

final class ConditionalNode: EvalNode, @unchecked Sendable {
  let condition: EvalNode
  let whenTrue: EvalNode
  let whenFalse: EvalNode
  init(_ condition: EvalNode, _ whenTrue: EvalNode, _ whenFalse: EvalNode) {
    self.condition = condition
    self.whenTrue = whenTrue
    self.whenFalse = whenFalse
  }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    try self.condition.bool(a, "_?_:_") ? try self.whenTrue.eval(a) : try self.whenFalse.eval(a)
  }
}

/// A bool operand of `&&` or `||` (or a whole rule) that is not a comparison — a flag such as
/// `features.first_time_creditor`, or `payment.purpose.matches(…)`: when explaining, it records
/// its source when true.
final class ExplainedNode: EvalNode, @unchecked Sendable {
  let inner: EvalNode
  let text: String
  init(_ inner: EvalNode, text: String) {
    self.inner = inner
    self.text = text
  }
  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    let value = try self.inner.eval(a)
    if a.tracing, case .bool(true) = value { a.trace?.append(self.text) }
    return value
  }
}

/// A built-in function; `arguments` include the receiver of a method call first.
final class FunctionNode: EvalNode, @unchecked Sendable {
  enum Function {
    case size, contains, startsWith, endsWith
    case matches(SafeRegex?)
    case int, uint, double, string, bytes, bool, timestamp, duration, dyn
    case accessor(String)
  }

  let function: Function
  let arguments: [EvalNode]
  init(_ function: Function, _ arguments: [EvalNode]) {
    self.function = function
    self.arguments = arguments
  }

  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    let first = try self.arguments[0].eval(a)
    switch self.function {
    case .size: return try Operators.size(first)
    case .int: return try Conversions.toInt(first)
    case .uint: return try Conversions.toUInt(first)
    case .double: return try Conversions.toDouble(first)
    case .string: return try Conversions.toString(first)
    case .bytes: return try Conversions.toBytes(first)
    case .bool: return try Conversions.toBool(first)
    case .timestamp: return try Conversions.toTimestamp(first)
    case .duration: return try Conversions.toDuration(first)
    case .dyn: return first
    case .accessor(let name):
      var zone: String?
      if self.arguments.count > 1 {
        let value = try self.arguments[1].eval(a)
        guard case .string(let text) = value else { throw .noSuchOverload(name, first, value) }
        zone = text
      }
      return try Conversions.accessor(name, first, zone: zone)
    case .contains, .startsWith, .endsWith, .matches:
      let second = try self.arguments[1].eval(a)
      guard case .string(let text) = first, case .string(let argument) = second else {
        throw .noSuchOverload(self.name, first, second)
      }
      switch self.function {
      case .contains:
        // A naive search: text × needle comparisons at worst.
        try a.step(cost: text.utf8.count * argument.utf8.count / RuleLimits.bytesPerStep)
        return .bool(UTF8Text.contains(text, argument))
      case .startsWith: return .bool(UTF8Text.hasPrefix(text, argument))
      case .endsWith: return .bool(UTF8Text.hasSuffix(text, argument))
      case .matches(let compiled):
        let regex: SafeRegex
        if let compiled {
          regex = compiled
        } else {
          do {
            regex = try SafeRegex(argument)
          } catch {
            throw EvaluationError("invalid regex: \(error.description)")
          }
        }
        // Linear, but not free: the work counts against the evaluation's budget.
        try a.step(cost: 1 + text.utf8.count * regex.programSize / RuleLimits.regexWorkPerStep)
        return .bool(regex.matches(text))
      default: fatalError("unreachable")
      }
    }
  }

  private var name: String {
    switch self.function {
    case .contains: "contains"
    case .startsWith: "startsWith"
    case .endsWith: "endsWith"
    default: "matches"
    }
  }
}

/// The list macros over a list (elements) or a map (keys).
final class ComprehensionNode: EvalNode, @unchecked Sendable {
  enum Kind {
    case all, exists, existsOne, filter, map
  }

  let kind: Kind
  let range: EvalNode
  let slot: Int
  /// The predicate (all, exists, exists_one, filter, a filtering map) — nil for a plain map.
  let predicate: EvalNode?
  /// The transform of `map`.
  let transform: EvalNode?

  init(_ kind: Kind, range: EvalNode, slot: Int, predicate: EvalNode?, transform: EvalNode?) {
    self.kind = kind
    self.range = range
    self.slot = slot
    self.predicate = predicate
    self.transform = transform
  }

  override func eval(_ a: Activation) throws(EvaluationError) -> Value {
    let range = try self.range.eval(a)
    let elements: [Value]
    switch range {
    case .list(let list): elements = list
    case .map(let map): elements = map.keys.map(\.value)
    default: throw .noSuchOverload("comprehension", range)
    }
    let saved = a.slots[self.slot]
    defer { a.slots[self.slot] = saved }
    // Explanations come from the rule's own comparisons, not from inside the macro.
    a.quiet += 1
    defer { a.quiet -= 1 }
    var failure: EvaluationError?
    var count = 0
    var output: [Value] = []
    for element in elements {
      try a.step()
      a.slots[self.slot] = element
      switch self.kind {
      case .all, .exists:
        do {
          let holds = try self.predicate!.bool(a, self.kind == .all ? "all" : "exists")
          if self.kind == .all && !holds { return .bool(false) }
          if self.kind == .exists && holds { return .bool(true) }
        } catch {
          if failure == nil { failure = error }
        }
      case .existsOne:
        if try self.predicate!.bool(a, "exists_one") { count += 1 }
      case .filter:
        if try self.predicate!.bool(a, "filter") { output.append(element) }
      case .map:
        if let predicate = self.predicate, try !predicate.bool(a, "map") { continue }
        let value = try self.transform!.eval(a)
        // What the macro keeps counts too: a list of lists grows with both.
        if case .list(let inner) = value { try a.step(cost: inner.count / RuleLimits.elementsPerStep) }
        output.append(value)
      }
    }
    switch self.kind {
    case .all, .exists:
      if let failure { throw failure }
      return .bool(self.kind == .all)
    case .existsOne: return .bool(count == 1)
    case .filter, .map: return .list(output)
    }
  }
}
