import BankLinkFormats
import Foundation
import Testing

/// A mutation fuzzer for every reader (camt, pain.002, pain.001, MT940), seeded from the
/// committed samples in `Samples/` and replayed by `make test` with a fixed seed: every input
/// must be read or refused with a ``FormatError`` — never a crash (which ends the test
/// process), a hang, or memory that grows with the input beyond the named limits.
/// `BANKLINK_FORMAT_FUZZ_ITERATIONS` and `BANKLINK_FORMAT_FUZZ_SEED` run it longer.
@Suite("Bank file format fuzzing")
struct FormatFuzzTests {
  /// Pieces that reach into the formats' grammars when spliced in.
  static let dictionary: [String] = [
    "<", ">", "</", "/>", "<Ntry>", "</Ntry>", "<Amt Ccy=\"EUR\">", "</Amt>", "<TxDtls>", "</TxDtls>", "<Bal>", "<Stmt>",
    "<![CDATA[", "]]>", "<!--", "-->", "&amp;", "&#x0;", "&#xFFFF;", "&lol;", "<!DOCTYPE x [", "<!ENTITY a \"b\">", "xmlns=\"\"",
    "xmlns:p=\"urn:iso:std:iso:20022:tech:xsd:camt.053.001.99\"", "CRDT", "DBIT", "BOOK", "-1", "9999999999999999999.99", ".", ",",
    "2026-02-29", "0000-00-00", "\n", "\r\n", ":20:", ":25:", ":28C:", ":60F:", ":61:", ":86:", ":62F:", ":64:", "?20", "?3", "/EREF/",
    "/", "//", "{4:", "-}", "C", "D", "RC", "RD", "NTRF", "991231", "000000", "EUR", "银", "\u{0}", "\u{FEFF}",
  ]

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

  static func mutate(_ input: [UInt8], _ other: [UInt8], using random: inout Generator) -> [UInt8] {
    var bytes = input
    for _ in 0..<Int.random(in: 1...6, using: &random) {
      let position = bytes.isEmpty ? 0 : Int.random(in: 0...bytes.count, using: &random)
      switch Int.random(in: 0..<6, using: &random) {
      case 0:
        bytes.insert(contentsOf: Array(Self.dictionary.randomElement(using: &random)!.utf8), at: position)
      case 1:
        guard position < bytes.count else { continue }
        bytes.removeSubrange(position..<min(bytes.count, position + Int.random(in: 1...64, using: &random)))
      case 2:
        guard position < bytes.count else { continue }
        let end = min(bytes.count, position + Int.random(in: 1...256, using: &random))
        bytes.insert(contentsOf: bytes[position..<end], at: end)
      case 3:
        guard position < bytes.count else { continue }
        bytes[position] = UInt8.random(in: 0...255, using: &random)
      case 4:
        guard !other.isEmpty else { continue }
        let start = Int.random(in: 0..<other.count, using: &random)
        bytes.insert(contentsOf: other[start..<min(other.count, start + Int.random(in: 1...128, using: &random))], at: position)
      default:
        bytes = Array(bytes.prefix(position))
      }
    }
    return bytes
  }

  @Test("mutated samples are read or refused with a FormatError by every reader; never a crash")
  func fuzz() throws {
    let directory = FormatTests.samples
    let corpus = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted().map {
      Array(try Data(contentsOf: directory.appendingPathComponent($0)))
    }
    #expect(corpus.count >= 8)
    let environment = ProcessInfo.processInfo.environment
    let iterations = Int(environment["BANKLINK_FORMAT_FUZZ_ITERATIONS"] ?? "") ?? 3_000
    var random = Generator(state: UInt64(environment["BANKLINK_FORMAT_FUZZ_SEED"] ?? "") ?? 20_261_203)
    var read = 0
    var refused = 0
    for _ in 0..<iterations {
      let input = Self.mutate(corpus.randomElement(using: &random)!, corpus.randomElement(using: &random)!, using: &random)
      let data = Data(input)
      for reader in [
        { _ = try CamtReader.statements(.data(data)) }, { _ = try MT940Reader.statements(.data(data)) },
        { _ = try Pain002Reader.read(.data(data)) }, { _ = try Pain001Reader.read(.data(data)) },
      ] as [() throws -> Void] {
        do {
          try reader()
          read += 1
        } catch is FormatError {
          refused += 1
        } catch {
          Issue.record("not a FormatError: \(error) for input \(String(decoding: input.prefix(200), as: UTF8.self))")
        }
      }
    }
    // Both outcomes happen: the mutations are neither all harmless nor all fatal.
    #expect(read > 0 && refused > 0, "read \(read), refused \(refused)")
  }
}
