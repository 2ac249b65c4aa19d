import BankLinkRules
import Foundation
import Testing

/// A mutation fuzzer for the parser, the type checker and the evaluator, seeded from the corpus
/// in `Fuzz/` (committed) and replayed by `make test` with a fixed seed: every input must end in
/// a value, a run-time error or a refusal — never a crash, a hang or unbounded memory (a crash
/// ends the test process, which fails the run). `make fuzz` runs it longer with a random seed
/// (`BANKLINK_FUZZ_ITERATIONS`, `BANKLINK_FUZZ_SEED`); a failing input is written to
/// `Fuzz/crash-*.cel` so it can be committed to the corpus once fixed.
@Suite("Rule language fuzzing")
struct FuzzTests {
  static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fuzz")

  /// Pieces that reach deep into the grammar when spliced in.
  static let dictionary: [String] = [
    "(", ")", "[", "]", "{", "}", ".", ",", ":", "?", "+", "-", "*", "/", "%", "!", "<", "<=", ">", ">=", "==", "!=", "&&", "||",
    " in ", "true", "false", "null", "0", "-1", "9223372036854775807", "9223372036854775808", "18446744073709551615u", "1.5e308",
    "\"", "'", "\"\"\"", "r\"", "b\"", "\\", "\\x", "\\u00e9", "\\U0001F600", "\\777", "x", "l", "m", "s", "obj", "obj.creditor",
    ".size()", ".all(v, ", ".exists(v, ", ".exists_one(v, ", ".map(v, ", ".filter(v, ", "has(", "int(", "uint(", "double(",
    "string(", "bytes(", "timestamp(", "duration(", "dyn(", ".matches(", "\"(a*)*b\"", "\"[^\"", ".getHours(", "\"Asia/Shanghai\"",
    "//", "\n", "银", "🙂", "\u{0}", "\u{7F}",
  ]

  /// A small deterministic generator (SplitMix64), so a seed replays exactly.
  struct Generator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
      self.state &+= 0x9E37_79B9_7F4A_7C15
      var z = self.state
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return z ^ (z >> 31)
    }
  }

  static func corpus() throws -> [[UInt8]] {
    try FileManager.default.contentsOfDirectory(atPath: Self.directory.path).filter { $0.hasSuffix(".cel") }.sorted().map {
      Array(try Data(contentsOf: Self.directory.appendingPathComponent($0)))
    }
  }

  static func mutate(_ input: [UInt8], _ other: [UInt8], using random: inout Generator) -> [UInt8] {
    var bytes = input
    for _ in 0..<Int.random(in: 1...4, using: &random) {
      let position = bytes.isEmpty ? 0 : Int.random(in: 0...bytes.count, using: &random)
      switch Int.random(in: 0..<6, using: &random) {
      case 0:  // insert a dictionary piece
        bytes.insert(contentsOf: Array(Self.dictionary.randomElement(using: &random)!.utf8), at: position)
      case 1:  // delete a range
        guard !bytes.isEmpty, position < bytes.count else { continue }
        bytes.removeSubrange(position..<min(bytes.count, position + Int.random(in: 1...8, using: &random)))
      case 2:  // duplicate a range (grows nesting and chains)
        guard !bytes.isEmpty, position < bytes.count else { continue }
        let end = min(bytes.count, position + Int.random(in: 1...32, using: &random))
        bytes.insert(contentsOf: bytes[position..<end], at: end)
      case 3:  // flip a byte
        guard !bytes.isEmpty, position < bytes.count else { continue }
        bytes[position] = UInt8.random(in: 0...255, using: &random)
      case 4:  // splice another input
        guard !other.isEmpty else { continue }
        let start = Int.random(in: 0..<other.count, using: &random)
        bytes.insert(contentsOf: other[start..<min(other.count, start + Int.random(in: 1...40, using: &random))], at: position)
      default:  // wrap in parentheses, or nest a macro
        bytes = Array((Bool.random(using: &random) ? "(" : "l.all(v, ").utf8) + bytes + Array(")".utf8)
      }
    }
    return Array(bytes.prefix(RuleLimits.maxExpressionBytes + 64))
  }

  /// Compiles and, when it compiles, evaluates one input. Returns how it ended.
  static func run(_ bytes: [UInt8], _ declarations: Declarations, _ values: [Value]) -> String {
    let source = String(decoding: bytes, as: UTF8.self)
    do {
      let program = try declarations.compile(source)
      do {
        _ = try program.evaluate(values)
        _ = try program.explain(values)
        return "value"
      } catch {
        return "error"
      }
    } catch {
      return "refused"
    }
  }

  @Test("every corpus input and its mutations end in a value, an error or a refusal")
  func fuzz() throws {
    let environment = ProcessInfo.processInfo.environment
    let iterations = environment["BANKLINK_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 20_000
    let seed = environment["BANKLINK_FUZZ_SEED"].flatMap(UInt64.init) ?? 0x42_414E_4B4C_494E
    let corpus = try Self.corpus()
    #expect(corpus.count >= 20, "the committed corpus")
    let (declarations, values) = try ConformanceTests.environment()
    var outcomes: [String: Int] = [:]
    for input in corpus { outcomes[Self.run(input, declarations, values), default: 0] += 1 }
    var random = Generator(state: seed)
    for iteration in 0..<iterations {
      let base = corpus[iteration % corpus.count]
      let input = Self.mutate(base, corpus.randomElement(using: &random)!, using: &random)
      // Written first, so that a crash leaves the input that caused it behind.
      if environment["BANKLINK_FUZZ_SAVE"] != nil {
        try Data(input).write(to: Self.directory.appendingPathComponent("crash-last.cel"))
      }
      outcomes[Self.run(input, declarations, values), default: 0] += 1
    }
    if environment["BANKLINK_FUZZ_SAVE"] != nil {
      try? FileManager.default.removeItem(at: Self.directory.appendingPathComponent("crash-last.cel"))
    }
    // The mutations must reach every outcome, or the fuzzer is not exploring.
    #expect(outcomes["value", default: 0] > 0 && outcomes["error", default: 0] > 0 && outcomes["refused", default: 0] > 0, "\(outcomes)")
    print("fuzz: \(corpus.count) corpus inputs, \(iterations) mutations (seed \(seed)): \(outcomes)")
  }

  @Test("deep nesting, long chains and long inputs are refused by name, not by the stack")
  func limits() throws {
    let declarations = Declarations([("x", .int)])
    func refused(_ source: String) -> String? {
      do {
        _ = try declarations.compile(source)
        return nil
      } catch {
        return error.message
      }
    }
    #expect(refused(String(repeating: "(", count: 10_000) + "x" + String(repeating: ")", count: 10_000))?.contains("too") == true)
    #expect(refused(String(repeating: "!", count: 100) + "true")?.contains("too deep") == true)
    #expect(refused(String(repeating: "[", count: 10_000))?.contains("too") == true)
    #expect(refused(Array(repeating: "x", count: 1_000).joined(separator: " + "))?.contains("too") == true)
    #expect(refused(String(repeating: "x + ", count: 2_000) + "x")?.contains("too long") == true)
    // A long && chain is flattened: 400 operands are fine.
    #expect(refused(Array(repeating: "x > 0", count: 400).joined(separator: " && ")) == nil)
    // A macro over a large list runs into the evaluation budget, not forever.
    let program = try Declarations([("l", .list(.int))]).compile("l.all(a, l.all(b, l.all(c, a + b + c >= 0)))")
    let big = Value.list((0..<100).map { .int($0) })
    #expect(throws: EvaluationError.self) { try program.evaluate([big]) }
    // Strings doubled until they are too large fail by name instead of filling memory.
    let doubling = try Declarations([("s", .string)]).compile(
      "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17].map(i, s + s + s + s + s + s + s + s + s + s + s + s + s + s + s + s + s) != []")
    let long = Value.string(String(repeating: "x", count: 8_192))
    #expect { try doubling.evaluate([long]) } throws: { ($0 as? EvaluationError)?.message.hasPrefix("value too large") == true }
    // Deep equality of computed lists is work the budget counts.
    let walk = try Declarations([("l", .list(.int))]).compile("l.map(a, l) == l.map(b, l)")
    let thousand = Value.list((0..<1_000).map { .int($0) })
    #expect { try walk.evaluate([thousand]) } throws: { ($0 as? EvaluationError)?.message.hasPrefix("evaluation budget") == true }
    // Building large strings in a macro is work too: 10,000 values of 256 bytes, each
    // concatenated a hundred times over (25 KB, every copy on the way): about 1.3 MB copied per
    // iteration for one step, before strings were charged by their size.
    let concatenations = try Declarations([("l", .list(.string))]).compile(
      "l.exists(b, size(" + Array(repeating: "b", count: 100).joined(separator: " + ") + ") < 0)")
    let values = Value.list((0..<10_000).map { .string(String(repeating: "v", count: 255) + String($0 % 10)) })
    #expect { try concatenations.evaluate([values]) } throws: {
      ($0 as? EvaluationError)?.message.hasPrefix("evaluation budget") == true
    }
    // And comparing long strings: 10,000 comparisons of two 60 KB values.
    let comparisons = try Declarations([("l", .list(.string)), ("s", .string)]).compile("l.exists(b, s == s + b)")
    let wide = Value.string(String(repeating: "w", count: 60_000))
    #expect { try comparisons.evaluate([values, wide]) } throws: {
      ($0 as? EvaluationError)?.message.hasPrefix("evaluation budget") == true
    }
  }
}
