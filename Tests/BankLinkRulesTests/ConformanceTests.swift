import BankLinkRules
import Foundation
import Testing

/// The CEL subset's conformance table (Conformance/*.txt): each line is an expression and what
/// it must give — a value (`==>`, itself written as an expression), a run-time error (`!!`) or
/// a refusal when compiled (`??`), both by a part of their message.
@Suite("Rule language conformance")
struct ConformanceTests {
  static let party = ObjectType(name: "Party", fields: [("country", .string), ("bic", .string)])
  static let payment = ObjectType(
    name: "Payment",
    fields: [
      ("name", .string), ("amount", .int), ("tags", .list(.string)), ("rate", .double), ("memo", .string),
      ("creditor", .object(party)),
    ])

  /// The variables every case may use (the table's header describes them).
  static func environment() throws -> (Declarations, [Value]) {
    let values: [(String, CELType, Value)] = [
      ("x", .int, .int(5)), ("neg", .int, .int(-7)), ("big", .int, .int(.max)), ("small", .int, .int(.min)),
      ("u", .uint, .uint(7)), ("umax", .uint, .uint(.max)), ("d", .double, .double(2.5)),
      ("s", .string, .string("héllo")), ("empty", .string, .string("")), ("cjk", .string, .string("银企直联")),
      ("by", .bytes, .bytes(Array("abc".utf8))), ("t", .bool, .bool(true)), ("f", .bool, .bool(false)),
      ("l", .list(.int), .list([.int(1), .int(2), .int(3)])), ("el", .list(.int), .list([])),
      ("ls", .list(.string), .list([.string("a"), .string("b"), .string("c")])),
      ("m", .map(.string, .int), .map(MapValue([(.string("a"), .int(1)), (.string("b"), .int(2))]))),
      ("em", .map(.string, .int), .map(MapValue())), ("nl", .null, .null), ("dy", .dyn, .int(1)),
      ("ts", .timestamp, try Self.constant("timestamp('2026-01-02T03:04:05Z')")),
      ("du", .duration, try Self.constant("duration('1h30m')")),
      (
        "obj", .object(payment),
        .object(
          ObjectValue(
            type: payment,
            [
              "name": .string("Acme"), "amount": .int(12_000), "tags": .list([.string("vip")]), "rate": .double(0.5),
              "creditor": .object(ObjectValue(type: party, ["country": .string("CN"), "bic": .string("ICBKCNBJ")])),
            ]))
      ),
    ]
    return (Declarations(values.map { ($0.0, $0.1) }), values.map(\.2))
  }

  static func constant(_ source: String) throws -> Value {
    try Declarations().compile(source).evaluate([])
  }

  struct Case: CustomTestStringConvertible, Sendable {
    enum Expectation: Sendable {
      case value(String)
      case runtimeError(String)
      case compileError(String)
    }
    var file: String
    var line: Int
    var expression: String
    var expectation: Expectation
    var testDescription: String { "\(self.file):\(self.line): \(self.expression)" }
  }

  static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Conformance")

  static func cases() throws -> [Case] {
    let files = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path).filter { $0.hasSuffix(".txt") }.sorted()
    var cases: [Case] = []
    for file in files {
      let text = try String(contentsOf: Self.directory.appendingPathComponent(file), encoding: .utf8)
      for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let line = rawLine.trimmingCharacters(in: .whitespaces)
        if line.isEmpty || line.hasPrefix("#") { continue }
        var found = false
        for (marker, make) in [("  ==>  ", Case.Expectation.value), ("  !!  ", Case.Expectation.runtimeError), ("  ??  ", Case.Expectation.compileError)] {
          if let range = line.range(of: marker) {
            cases.append(
              Case(
                file: file, line: index + 1, expression: String(line[..<range.lowerBound]),
                expectation: make(String(line[range.upperBound...]).trimmingCharacters(in: .whitespaces))))
            found = true
            break
          }
        }
        if !found { Issue.record("\(file):\(index + 1): no ==>, !! or ?? marker: \(line)") }
      }
    }
    return cases
  }

  @Test("the table has several hundred cases of every kind")
  func tableSize() throws {
    let cases = try Self.cases()
    #expect(cases.count >= 400, "\(cases.count) cases")
    #expect(cases.contains { if case .runtimeError = $0.expectation { true } else { false } })
    #expect(cases.contains { if case .compileError = $0.expectation { true } else { false } })
  }

  @Test("every case gives its value or its error", arguments: try ConformanceTests.cases())
  func conformance(_ testCase: Case) throws {
    let (declarations, values) = try Self.environment()
    let program: Program
    do {
      program = try declarations.compile(testCase.expression)
    } catch {
      guard case .compileError(let text) = testCase.expectation else {
        Issue.record("refused when compiled: \(error)")
        return
      }
      #expect(error.message.contains(text), "refused with '\(error.message)', expected '\(text)'")
      return
    }
    if case .compileError(let text) = testCase.expectation {
      Issue.record("compiled, but expected a refusal containing '\(text)'")
      return
    }
    let result: Value
    do {
      result = try program.evaluate(values)
    } catch {
      guard case .runtimeError(let text) = testCase.expectation else {
        Issue.record("failed at run time: \(error)")
        return
      }
      #expect(error.message.contains(text), "failed with '\(error.message)', expected '\(text)'")
      return
    }
    switch testCase.expectation {
    case .runtimeError(let text):
      Issue.record("gave \(result), expected an error containing '\(text)'")
    case .compileError:
      break
    case .value(let expectedSource):
      let expected = try Self.constant(expectedSource)
      #expect(ValueTesting.identical(result, expected), "gave \(result), expected \(expected)")
    }
  }
}

/// Same value and same type, all the way down (CEL's == says 1 == 1.0; the table does not).
enum ValueTesting {
  static func identical(_ a: Value, _ b: Value) -> Bool {
    switch (a, b) {
    case (.int(let x), .int(let y)): return x == y
    case (.uint(let x), .uint(let y)): return x == y
    case (.double(let x), .double(let y)): return x == y || (x.isNaN && y.isNaN)
    case (.string(let x), .string(let y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
    case (.bytes(let x), .bytes(let y)): return x == y
    case (.bool(let x), .bool(let y)): return x == y
    case (.null, .null): return true
    case (.timestamp(let x), .timestamp(let y)): return x == y
    case (.duration(let x), .duration(let y)): return x == y
    case (.list(let x), .list(let y)): return x.count == y.count && zip(x, y).allSatisfy { self.identical($0, $1) }
    case (.map(let x), .map(let y)):
      return x.count == y.count && x.keys.allSatisfy { key in y[key].map { other in x[key].map { self.identical($0, other) } ?? false } ?? false }
    default: return false
    }
  }
}
