import Foundation
import Testing

@testable import BankLinkFormats

/// The pieces under the XML readers: the streaming UTF-8 check and the path table.
@Suite("XML walker")
struct XMLWalkerTests {
  /// Feeds `bytes` to a checker cut at `cuts`, as chunks of a file would arrive.
  static func check(_ bytes: [UInt8], cuts: [Int]) -> Bool {
    var checker = UTF8Check()
    var start = 0
    for cut in cuts + [bytes.count] {
      let ok = bytes[start..<cut].withUnsafeBytes { checker.feed($0) }
      guard ok else { return false }
      start = cut
    }
    return checker.finish()
  }

  @Test("the UTF-8 check agrees with the standard library's at every place a chunk can end")
  func utf8AgreesWithTheStandardLibrary() {
    let valid = Array("Zahlung für Rechnung 42 — 上海浦东发展银行 𝄞 \n€\r\n".utf8)
    // Overlong, surrogate, above U+10FFFF, stray continuation, cut short, and a bare lead byte.
    let invalid: [[UInt8]] = [
      [0xC0, 0x80], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xF8, 0x88, 0x80, 0x80, 0x80],
      [0x80], [0xE4, 0xB8], [0xC3], [0xFF],
    ]
    for cut in 0...valid.count {
      #expect(Self.check(valid, cuts: [cut]), "valid text refused when cut at \(cut)")
    }
    for bad in invalid {
      let bytes = Array(valid.prefix(9)) + bad + Array(valid.suffix(5))
      #expect(String(validating: bytes, as: UTF8.self) == nil)
      for cut in 0...bytes.count { #expect(!Self.check(bytes, cuts: [cut]), "\(bad) accepted when cut at \(cut)") }
    }
    // Random bytes, mostly ASCII with multi-byte runs: the same verdict as the standard library.
    var generator = SystemRandomNumberGenerator()
    for _ in 0..<2_000 {
      let count = Int.random(in: 0..<40, using: &generator)
      let bytes = (0..<count).map { _ in
        Bool.random(using: &generator) ? UInt8.random(in: 0x20...0x7E, using: &generator) : UInt8.random(in: 0x80...0xF5, using: &generator)
      }
      let cuts = [Int.random(in: 0...count, using: &generator)].sorted()
      #expect(Self.check(bytes, cuts: cuts) == (String(validating: bytes, as: UTF8.self) != nil), "\(bytes) cut at \(cuts)")
    }
  }

  @Test("the UTF-8 check counts lines up to the first bad byte, in 8-byte runs and not")
  func utf8Lines() {
    var checker = UTF8Check()
    let text = Array("line one is long enough\nline two\nthree\n".utf8) + [0xFF]
    let ok = text.withUnsafeBytes { checker.feed($0) }
    #expect(!ok && checker.line == 4)
  }

  @Test("a camt file longer than a chunk, with names cut across chunk ends, reads the same from a file and from memory")
  func chunkBoundaries() throws {
    var header = StatementHeader(format: .camt053)
    header.messageID = "BIG"
    header.statementID = "BIG"
    header.sequenceNumber = 1
    header.createdAt = "2026-12-03T18:00:00"
    header.account = StatementAccount(other: "1001234567890001", currency: "CNY")
    var statement = BankStatement(header: header)
    var total: Int64 = 0
    for index in 0..<(XMLWalker.chunkBytes / 200) {
      var entry = StatementEntry()
      entry.amountMinor = Int64(100 + index)
      total += entry.amountMinor
      entry.currency = "CNY"
      entry.direction = .credit
      entry.bookingDate = "2026-12-03"
      entry.accountServicerReference = "REF\(index)"
      var details = TransactionDetails()
      details.endToEndID = "E2E\(index)"
      details.counterpartyName = "上海第\(index)供应商有限公司"
      entry.details = [details]
      statement.entries.append(entry)
    }
    statement.header.balances = [
      StatementBalance(type: "OPBD", amountMinor: 0, currency: "CNY", date: "2026-12-03"),
      StatementBalance(type: "CLBD", amountMinor: total, currency: "CNY", date: "2026-12-03"),
    ]
    var bytes = try CamtWriter.write(statement, kind: .statement053)
    #expect(bytes.count > XMLWalker.chunkBytes + 1000)
    // Spaces after the XML declaration move the last multi-byte character before the first
    // chunk's end so that its lead byte is the chunk's last byte.
    let lead = try #require((0..<(XMLWalker.chunkBytes - 1)).last { bytes[$0] >= 0xC0 })
    let declarationEnd = try #require(bytes.indices.first { bytes[$0] == UInt8(ascii: ">") }) + 1
    bytes.insert(contentsOf: repeatElement(UInt8(ascii: " "), count: XMLWalker.chunkBytes - 1 - lead), at: declarationEnd)
    #expect(bytes[XMLWalker.chunkBytes - 1] >= 0xC0 && bytes[XMLWalker.chunkBytes] & 0xC0 == 0x80)
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("xmlwalker-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("big.xml").path
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    let fromFile = try CamtReader.statements(.file(path))
    let fromMemory = try CamtReader.statements(.data(Data(bytes)))
    #expect(fromFile == fromMemory)
    #expect(fromFile.first?.entries.count == statement.entries.count)
    #expect(fromFile.first?.entries.last?.details.first?.counterpartyName == statement.entries.last?.details.first?.counterpartyName)
  }

  @Test("the path table: alternatives, elements outside it at the top, text kept only where listed")
  func pathTable() throws {
    final class Recorder: XMLTableHandler {
      var events: [String] = []
      func start(_ action: Int32, _ element: XMLOpening) throws { self.events.append("start \(action) \(element.name)") }
      func end(_ action: Int32, _ text: String) throws { self.events.append("end \(action) '\(text)'") }
    }
    let table = XMLPathTable([
      .init("R", 1, text: false), .init("R/A|B", 2), .init("R/A/C", 3), .init("R/B/C", 3),
    ])
    let xml = "<R><X><A>deep, not listed</A></X><A> a <C>c</C> tail </A><B><C>b</C><D>skipped</D></B><Y/></R>"
    let recorder = Recorder()
    try XMLWalker.walk(.data(Data(xml.utf8)), format: "test", table: table, handler: recorder)
    #expect(
      recorder.events == [
        "start 1 R", "start -1 X", "start 2 A", "start 3 C", "end 3 'c'", "end 2 'tail'", "start 2 B", "start 3 C", "end 3 'b'",
        "end 2 ''", "start -1 Y", "end 1 ''",
      ])
    let other = Recorder()
    try XMLWalker.walk(.data(Data("<Q><A>x</A></Q>".utf8)), format: "test", table: table, handler: other)
    #expect(other.events == ["start -1 Q"])
  }
}
