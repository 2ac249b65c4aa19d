import BankLinkCore
import Testing

@Suite("Quoting client and bank text")
struct LogTextTests {
  @Test("plain text is kept; quotes, backslashes, controls and non-ASCII escaped; cut at the byte limit")
  func quoting() {
    #expect(LogText.prefix("EndToEndId E2E-1; fee 500") == "EndToEndId E2E-1; fee 500")
    #expect(LogText.prefix("say \"hi\"\\") == "say \\\"hi\\\"\\\\")
    #expect(LogText.prefix("a\nb\rc\td\u{7}") == "a\\nb\\rc\\td\\u{7}")
    #expect(LogText.prefix("江苏") == "\\u{6C5F}\\u{82CF}")
    // The limit counts the original's bytes: exactly at it is whole, one over is cut.
    let exact = String(repeating: "x", count: LogText.maxQuotedBytes)
    #expect(LogText.prefix(exact) == exact)
    #expect(LogText.prefix(exact + "y") == exact + "…")
    #expect(LogText.prefix("abcdef", maxBytes: 3) == "abc…")
    // A 3-byte scalar that would cross the limit is left out whole.
    #expect(LogText.prefix("ab江", maxBytes: 4) == "ab…")
    #expect(LogText.prefix("ab江", maxBytes: 5) == "ab\\u{6C5F}")
    #expect(LogText.prefix("") == "")
  }
}
