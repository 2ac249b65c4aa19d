/// String operations by code point, done on UTF-8 bytes: for valid UTF-8, byte equality is
/// code point equality, byte order is code point order, and a needle found at any byte offset
/// starts on a scalar boundary (UTF-8 is self-synchronising). Swift's `String ==` would compare
/// by canonical equivalence instead, and the generic collection algorithms cost far more.
enum UTF8Text {
  static func withBytes<R>(_ text: String, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
    var text = text
    return text.withUTF8(body)
  }

  static func equal(_ a: String, _ b: String) -> Bool {
    withBytes(a) { x in withBytes(b) { y in x.count == y.count && x.elementsEqual(y) } }
  }

  /// -1, 0 or 1 by code point.
  static func order(_ a: String, _ b: String) -> Int {
    withBytes(a) { x in
      withBytes(b) { y in
        for (p, q) in zip(x, y) where p != q { return p < q ? -1 : 1 }
        return x.count == y.count ? 0 : (x.count < y.count ? -1 : 1)
      }
    }
  }

  static func contains(_ text: String, _ needle: String) -> Bool {
    withBytes(text) { haystack in
      withBytes(needle) { pattern in
        guard !pattern.isEmpty else { return true }
        guard pattern.count <= haystack.count else { return false }
        let first = pattern[0]
        var index = 0
        let last = haystack.count - pattern.count
        while index <= last {
          if haystack[index] == first {
            var matched = 1
            while matched < pattern.count, haystack[index + matched] == pattern[matched] { matched += 1 }
            if matched == pattern.count { return true }
          }
          index += 1
        }
        return false
      }
    }
  }

  static func hasPrefix(_ text: String, _ prefix: String) -> Bool {
    withBytes(text) { x in withBytes(prefix) { p in p.count <= x.count && x.prefix(p.count).elementsEqual(p) } }
  }

  static func hasSuffix(_ text: String, _ suffix: String) -> Bool {
    withBytes(text) { x in withBytes(suffix) { s in s.count <= x.count && x.suffix(s.count).elementsEqual(s) } }
  }
}
