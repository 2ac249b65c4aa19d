import BankLinkRules
import Testing

/// (pattern, text, expected result of `matches`).
private let matchCases: [(String, String, Bool)] = [
  // Literals, the empty pattern, empty alternatives, partial-match semantics.
  ("", "", true),
  ("", "anything", true),
  ("abc", "abc", true),
  ("abc", "xxabcxx", true),
  ("abc", "ab", false),
  ("abc", "ABC", false),
  ("a|", "zzz", true),
  ("|b", "", true),
  ("café", "un café noir", true),
  ("中文", "我说中文", true),
  ("}", "a}", true),
  ("]", "a]", true),

  // Dot: any scalar except newline; the unit is the Unicode scalar.
  ("^.$", "é", true),
  ("^.$", "中", true),
  ("^.$", "🙂", true),
  ("^.$", "\n", false),
  ("^.$", "e\u{301}", false),
  ("^..$", "e\u{301}", true),
  ("a.c", "abc", true),
  ("a.c", "a\nc", false),
  ("^...$", "日本語", true),

  // Escapes.
  (#"\."#, "a.b", true),
  (#"\."#, "ab", false),
  (#"^\\$"#, "\\", true),
  (#"^\*\+\?$"#, "*+?", true),
  (#"^\(\)\[\]\{\}$"#, "()[]{}", true),
  (#"a\|b"#, "a|b", true),
  (#"a\|b"#, "a", false),
  (#"^\^\$$"#, "^$", true),
  (#"^\/\-$"#, "/-", true),
  (#"a\nb"#, "a\nb", true),
  (#"^\t\r\f\v$"#, "\t\r\u{0C}\u{0B}", true),
  (#"^\x41\x62$"#, "Ab", true),
  (#"^\x{4E2D}$"#, "中", true),
  (#"^\x{1F642}$"#, "🙂", true),
  (#"^\x{000041}$"#, "A", true),

  // Perl classes are ASCII-only, as in RE2.
  (#"^\d+$"#, "0123456789", true),
  (#"^\d+$"#, "12a45", false),
  (#"\d"#, "٣", false),
  (#"^\D+$"#, "abc", true),
  (#"\D"#, "123", false),
  (#"^\w+$"#, "Az_09", true),
  (#"\w"#, "é", false),
  (#"^\W$"#, "é", true),
  (#"\W"#, "abc_123", false),
  (#"a\sb"#, "a b", true),
  (#"^\s+$"#, "\t\n\u{0C}\r ", true),
  (#"\s"#, "a\u{0B}b", false),
  (#"\s"#, "\u{00A0}", false),
  (#"^\S+$"#, "a\tb", false),
  (#"^\S+$"#, "été", true),

  // Character classes.
  ("[abc]", "xbx", true),
  ("[abc]", "xyz", false),
  ("^[a-z]+$", "hello", true),
  ("^[a-z]+$", "Hello", false),
  ("^[a-zA-Z0-9]+$", "Az09", true),
  ("[^abc]", "cab", false),
  ("[^abc]", "abcd", true),
  ("^[^a]$", "\n", true),
  ("^[^a]$", "中", true),
  ("[]a]", "]", true),
  ("[]a]", "b", false),
  ("[^]a]", "]", false),
  ("[^]a]", "b", true),
  ("[-a]", "-", true),
  ("[a-]", "-", true),
  ("[a-]", "b", false),
  ("[.]", "a", false),
  ("[.]", ".", true),
  ("[a^$]", "^", true),
  (#"[\]\[]"#, "[", true),
  (#"[\-]"#, "-", true),
  (#"[\d\s]"#, " ", true),
  (#"[\d\s]"#, "x", false),
  (#"[\D]"#, "5", false),
  (#"[^\D]"#, "5", true),
  (#"[\W\d]"#, "7", true),
  (#"[\x{4E00}-\x{9FFF}]"#, "中", true),
  ("[é-ë]", "ê", true),
  ("[é-ë]", "e", false),
  (#"^[\w.-]+@[\w-]+\.com$"#, "a.b-c@ex-ample.com", true),
  (#"^[\w.-]+@[\w-]+\.com$"#, "a.b-c@example.org", false),

  // Anchors: start and end of the whole text (no multiline mode).
  ("^abc", "abcd", true),
  ("^abc", "xabc", false),
  ("abc$", "xabc", true),
  ("abc$", "abc\n", false),
  ("^$", "", true),
  ("^$", "a", false),
  ("^", "anything", true),
  ("$", "", true),
  ("a^b", "a^b", false),
  ("^a|b$", "xxb", true),
  ("^a|b$", "xbx", false),
  ("(^)*a", "ba", true),
  ("(^|,)b", "a,b", true),
  ("(^|,)b", "ab", false),

  // Groups and alternation.
  ("(ab)+c", "ababc", true),
  ("^(ab)+$", "aba", false),
  ("(?:ab|cd)ef", "xcdefx", true),
  ("^(?:a|b|c)$", "d", false),
  ("^(a|ab)(c|bcd)$", "abcd", true),
  ("()", "x", true),
  ("^(|a)b$", "b", true),
  ("^(a|)+$", "aaa", true),
  ("^((a)|(b))*$", "abba", true),

  // Quantifiers, counted repetition, lazy forms.
  ("^a*$", "", true),
  ("^a*$", "aaaa", true),
  ("^a+$", "", false),
  ("^a+$", "aaa", true),
  ("^colou?r$", "color", true),
  ("^colou?r$", "colouur", false),
  ("^a{3}$", "aaa", true),
  ("^a{3}$", "aa", false),
  ("^a{3}$", "aaaa", false),
  ("^a{2,}$", "a", false),
  ("^a{2,}$", "aaaaaa", true),
  ("^a{2,4}$", "aaaa", true),
  ("^a{2,4}$", "aaaaa", false),
  ("^a{0}$", "", true),
  ("^a{0}b$", "b", true),
  ("^a{0,1}$", "a", true),
  ("^(ab){2}$", "abab", true),
  ("^a{100}$", String(repeating: "a", count: 100), true),
  ("^a{100}$", String(repeating: "a", count: 99), false),
  ("^(a?){50}a{50}$", String(repeating: "a", count: 50), true),
  ("^a*?$", "aaa", true),
  ("^a+?b$", "aab", true),
  ("^a??b$", "ab", true),
  ("^a{2,3}?$", "aaa", true),
  ("^[0-9]{4}-[0-9]{2}$", "2024-05", true),

  // Case-insensitive flag.
  ("(?i)hello", "Say HeLLo", true),
  ("hello", "HELLO", false),
  ("(?i)^[a-z]+$", "ABC", true),
  ("(?i)^[^a]$", "A", false),
  ("(?i)^[^a]$", "b", true),
  ("(?i)é", "É", true),
  ("(?i)^σ$", "Σ", true),
  ("(?i)k", "\u{212A}", true),
  (#"(?i)^\d+$"#, "42", true),
  ("(?i)", "x", true),

  // Realistic rule patterns.
  (#"^[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?$"#, "DEUTDEFF500", true),
  (#"^[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?$"#, "DEUTDEFF50", false),
  (#"(?i)^(test|demo)[-_]"#, "TEST-merchant", true),
  (#"^\d{1,3}(,\d{3})*(\.\d{2})?$"#, "1,234,567.89", true),
  (#"^\d{1,3}(,\d{3})*(\.\d{2})?$"#, "1,23,567.89", false),
]

/// (pattern, offset, fragment of the message).
private let syntaxErrorCases: [(String, Int, String)] = [
  ("(abc", 0, "missing closing )"),
  ("a(b(c)", 1, "missing closing )"),
  ("(?", 0, "missing closing )"),
  ("éé(", 2, "missing closing )"),
  ("abc)", 3, "unexpected )"),
  ("[abc", 0, "missing closing ]"),
  ("x[]", 1, "missing closing ]"),
  ("[a-", 0, "missing closing ]"),
  ("*a", 0, "nothing to repeat"),
  ("a|*", 2, "nothing to repeat"),
  ("(+)", 1, "nothing to repeat"),
  ("{2}", 0, "nothing to repeat"),
  ("(?i)*", 4, "nothing to repeat"),
  ("a**", 2, "invalid nested repetition operator"),
  ("a*??", 3, "invalid nested repetition operator"),
  ("a{2}{3}", 4, "invalid nested repetition operator"),
  ("^*", 1, "cannot repeat an anchor"),
  ("a{101}", 1, "repeat count larger than 100"),
  ("a{1,101}", 1, "repeat count larger than 100"),
  ("a{99999999999999999999}", 1, "repeat count larger than 100"),
  ("a{3,2}", 1, "minimum greater than maximum"),
  ("a{,3}", 1, "invalid repetition operator"),
  ("a{x}", 1, "invalid repetition operator"),
  ("a{2", 1, "missing closing }"),
  (#"(a)\1"#, 3, "not supported: backreference"),
  ("(?=a)", 0, "not supported: lookahead"),
  ("(?!a)", 0, "not supported: negative lookahead"),
  ("(?<=a)b", 0, "not supported: lookbehind"),
  ("(?<name>a)", 0, "not supported: lookbehind and named groups"),
  ("(?P<n>a)", 0, "not supported: named groups"),
  ("a(?i)b", 1, "only allowed at the start"),
  ("(?s).", 0, "not supported: group flags"),
  ("(?i:a)", 0, "not supported: group flags"),
  (#"\bword"#, 0, "not supported: escape \\b"),
  (#"x\p{L}"#, 1, "not supported: escape \\p"),
  (#"\q"#, 0, "invalid escape \\q"),
  (#"\0"#, 0, "not supported: octal"),
  (#"abc\"#, 3, "trailing backslash"),
  (#"\x4"#, 0, "two hex digits"),
  (#"\xZZ"#, 0, "two hex digits"),
  (#"\x{}"#, 0, "empty"),
  (#"\x{12"#, 0, "missing closing }"),
  (#"\x{110000}"#, 0, "not a Unicode scalar value"),
  (#"\x{D800}"#, 0, "not a Unicode scalar value"),
  ("[z-a]", 1, "invalid character class range z-a"),
  (#"[a-\d]"#, 3, "class escape cannot be a range endpoint"),
  (#"[\w-z]"#, 1, "class escape cannot be a range endpoint"),
  ("[a-z-0]", 4, "a literal - in a character class"),
  ("[[:alpha:]]", 1, "not supported: POSIX"),
]

@Suite("SafeRegex")
struct SafeRegexTests {
  @Test(arguments: matchCases)
  func matches(pattern: String, text: String, expected: Bool) throws {
    let regex = try SafeRegex(pattern)
    #expect(regex.matches(text) == expected, "\(pattern) on \(text.debugDescription)")
  }

  @Test(arguments: syntaxErrorCases)
  func rejectsInvalidSyntax(pattern: String, offset: Int, message: String) {
    let error = syntaxError(pattern)
    #expect(error?.offset == offset, "\(pattern): \(String(describing: error))")
    #expect(error?.message.contains(message) == true, "\(pattern): \(String(describing: error))")
  }

  @Test func errorDescription() {
    let error = syntaxError("(abc")
    #expect(error?.description == "invalid regex at 0: missing closing )")
    #expect(error?.message == "missing closing )")
  }

  @Test func patternLengthLimit() throws {
    _ = try SafeRegex(String(repeating: "a", count: SafeRegex.maxPatternBytes))
    let tooLong = syntaxError(String(repeating: "a", count: SafeRegex.maxPatternBytes + 1))
    #expect(tooLong?.offset == 512)
    #expect(tooLong?.message == "pattern longer than 512 bytes")
    // The limit is in UTF-8 bytes; the offset is in scalars: "é" is two bytes.
    let wide = syntaxError(String(repeating: "é", count: 257))
    #expect(wide?.offset == 256)
    #expect(wide?.message == "pattern longer than 512 bytes")
  }

  @Test func repeatCountLimit() throws {
    #expect(try SafeRegex("^a{100}$").matches(String(repeating: "a", count: 100)))
    #expect(syntaxError("a{101}")?.message == "repeat count larger than 100")
    #expect(syntaxError("a{100,101}") != nil)
    #expect(syntaxError("a{101,}") != nil)
  }

  @Test func programSizeLimit() throws {
    // 100 × 100 instructions: rejected at the outer repetition.
    let nested = syntaxError("(a{100}){100}")
    #expect(nested?.offset == 8)
    #expect(nested?.message.contains("pattern too large") == true)
    #expect(try SafeRegex("((a{10}){10}){10}").matches(String(repeating: "a", count: 1_000)))
    #expect(syntaxError("((a{10}){10}){20}")?.offset == 13)
    // 19 × 100 instructions plus Match fits; 20 × 100 does not.
    let fits = String(repeating: "a{100}", count: 19)
    #expect(try SafeRegex(fits).matches(String(repeating: "a", count: 1_900)))
    let overflow = syntaxError(String(repeating: "a{100}", count: 20))
    #expect(overflow?.offset == 19 * 6 + 1)
    #expect(overflow?.message.contains("pattern too large") == true)
    let alternatives = syntaxError(String(repeating: "a{99}|", count: 21))
    #expect(alternatives?.message.contains("pattern too large") == true)
  }

  @Test func nestingLimit() throws {
    let deepest = String(repeating: "(", count: 100) + "a" + String(repeating: ")", count: 100)
    #expect(try SafeRegex(deepest).matches("a"))
    let tooDeep = String(repeating: "(", count: 101) + "a" + String(repeating: ")", count: 101)
    #expect(syntaxError(tooDeep)?.offset == 100)
  }

  /// Patterns that make backtracking engines take exponential time. A Pike VM answers in
  /// O(pattern × text); these only need to finish (no timing assertion).
  @Test(arguments: [
    PathologicalCase("(a*)*b", text: "a", repeated: 20_000, expected: false),
    PathologicalCase("(a|a)*b", text: "a", repeated: 20_000, expected: false),
    PathologicalCase("(a+)+$", text: "a", repeated: 20_000, then: "!", expected: false),
    PathologicalCase("(x+x+)+y", text: "x", repeated: 20_000, expected: false),
    PathologicalCase("(a*)*b", text: "a", repeated: 20_000, then: "b", expected: true),
    PathologicalCase("^(a|aa)*$", text: "a", repeated: 20_000, expected: true),
    PathologicalCase("^(a?){100}a{100}$", text: "a", repeated: 100, expected: true),
    PathologicalCase(#"^(\w+\s?)+$"#, text: "word ", repeated: 2_500, then: "!", expected: false),
    PathologicalCase("(?i)(a*)*b", text: "A", repeated: 20_000, expected: false),
    PathologicalCase("(.*.*)*x", text: "中", repeated: 20_000, expected: false),
    PathologicalCase("(()*)*$", text: "z", repeated: 20_000, expected: true),
    PathologicalCase("(a{0,50}){0,10}c", text: "a", repeated: 2_000, expected: false),
  ])
  func pathologicalPatternsRunInLinearTime(_ testCase: PathologicalCase) throws {
    let regex = try SafeRegex(testCase.pattern)
    #expect(regex.matches(testCase.text) == testCase.expected, "\(testCase.pattern)")
  }

  @Test func equalityAndHashingUsePattern() throws {
    let first = try SafeRegex("^a+$")
    let second = try SafeRegex("^a+$")
    #expect(first == second)
    #expect(first != (try SafeRegex("^a*$")))
    #expect(Set([first, second]).count == 1)
    #expect(first.pattern == "^a+$")
  }

  private func syntaxError(_ pattern: String) -> SafeRegex.SyntaxError? {
    do {
      _ = try SafeRegex(pattern)
      return nil
    } catch {
      return error
    }
  }
}

/// A pattern run against a long generated text; described briefly so test logs stay readable.
struct PathologicalCase: Sendable, CustomTestStringConvertible {
  let pattern: String
  let text: String
  let expected: Bool
  let testDescription: String

  init(_ pattern: String, text unit: String, repeated count: Int, then suffix: String = "", expected: Bool) {
    self.pattern = pattern
    self.text = String(repeating: unit, count: count) + suffix
    self.expected = expected
    let ending = suffix.isEmpty ? "" : " + \(suffix.debugDescription)"
    self.testDescription = "\(pattern) on \(count) × \(unit.debugDescription)\(ending)"
  }
}
