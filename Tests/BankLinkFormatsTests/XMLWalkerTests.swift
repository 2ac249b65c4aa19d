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

  @Test("the path table finds siblings in any order, names that share their first eight bytes, and names of up to 64 bytes")
  func pathTableOrderAndPrefixes() throws {
    final class Recorder: XMLTableHandler {
      var events: [String] = []
      func start(_ action: Int32, _ element: XMLOpening) throws {}
      func end(_ action: Int32, _ text: String) throws { self.events.append("\(action)=\(text)") }
    }
    let long = String(repeating: "L", count: FormatLimits.maxXMLNameBytes)
    let table = XMLPathTable([
      .init("R", 1, text: false), .init("R/E", 2, text: false), .init("R/E/AcctSvcrRef", 3), .init("R/E/AcctSvcrRefX", 4),
      .init("R/E/AcctSvcr", 5), .init("R/E/Amt", 6), .init("R/E/\(long)", 7),
    ])
    // The same siblings in table order, reversed, and shuffled with unlisted names between
    // them: the sibling after the last match is only a hint.
    let xml = """
      <R><E><AcctSvcrRef>a</AcctSvcrRef><AcctSvcrRefX>b</AcctSvcrRefX><AcctSvcr>c</AcctSvcr><Amt>d</Amt><\(long)>e</\(long)></E>\
      <E><\(long)>e</\(long)><Amt>d</Amt><AcctSvcr>c</AcctSvcr><AcctSvcrRefX>b</AcctSvcrRefX><AcctSvcrRef>a</AcctSvcrRef></E>\
      <E><AcctSvcrRefY>no</AcctSvcrRefY><AcctSvcrRefX>b</AcctSvcrRefX><Am>no</Am><AcctSvcrRef>a</AcctSvcrRef><AcctSvc>no</AcctSvc><AcctSvcX>no</AcctSvcX>\
      <Amt>d</Amt><AcctSvcrRefX>b</AcctSvcrRefX></E></R>
      """
    let recorder = Recorder()
    try XMLWalker.walk(.data(Data(xml.utf8)), format: "test", table: table, handler: recorder)
    #expect(
      recorder.events == [
        "3=a", "4=b", "5=c", "6=d", "7=e", "2=", "7=e", "6=d", "5=c", "4=b", "3=a", "2=", "4=b", "3=a", "6=d", "4=b", "2=", "1=",
      ])
  }

  @Test("dates and currency exponents as the readers check them")
  func datesAndExponents() {
    #expect(FormatValues.isoDate("2026-12-03") == "2026-12-03")
    #expect(FormatValues.isoDate("2026-12-03T23:00:00+08:00") == "2026-12-03")
    #expect(FormatValues.isoDate("2024-02-29") == "2024-02-29")
    for refused in ["2026-02-29", "1900-02-29", "2026-13-01", "2026-04-31", "2026-00-10", "2026-12-00", "1899-12-31", "3000-01-01",
      "2026-1-03", "2026/12/03", "26-12-03", "", "2026-12-0", "２０２６-12-03"]
    {
      #expect(FormatValues.isoDate(refused) == nil, "\(refused)")
    }
    #expect(FormatValues.isoDate("2000-02-29") == "2000-02-29")
    #expect(FormatValues.isoDate("2026-06-30") == "2026-06-30" && FormatValues.isoDate("2026-07-31") == "2026-07-31")
    for (currency, exponent) in [("CNY", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("RWF", 0), ("KWD", 3), ("LYD", 3), ("JP", 2), ("JPYX", 2), ("", 2)] {
      #expect(FormatValues.exponent(of: currency) == exponent, "\(currency)")
    }
  }
}
