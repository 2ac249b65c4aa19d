import BankLinkCore
import Foundation
import Testing

/// The terminal QR code, read back by a real decoder (zbarimg, from Debian's zbar-tools, which
/// `make deps` installs): every version this encoder produces must scan to the exact text.
@Suite("QR code")
struct QRCodeTests {
  /// Texts whose lengths land in each of versions 1…10 (level M, byte mode), and a real URI.
  static let texts: [String] = [
    "BANK", String(repeating: "a", count: 20), String(repeating: "b", count: 30), String(repeating: "c", count: 60),
    String(repeating: "d", count: 80), String(repeating: "e", count: 100), String(repeating: "f", count: 120),
    String(repeating: "g", count: 150), String(repeating: "h", count: 180), String(repeating: "i", count: QRCode.maxBytes),
    "otpauth://totp/BankLink:spiffe%3A%2F%2Fcorp.example%2Falice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=BankLink&algorithm=SHA1&digits=6&period=30",
  ]

  @Test("every version scans back to its text with zbarimg", arguments: texts)
  func scansBack(_ text: String) throws {
    let code = try #require(QRCode.encode(text))
    #expect(code.size == 17 + 4 * code.version)
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("qr-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let image = directory.appendingPathComponent("code.pbm")
    try Data(code.pbm().utf8).write(to: image)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/zbarimg")
    process.arguments = ["--raw", "-q", "-Sdisable", "-Sqrcode.enable", image.path]
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    #expect(process.terminationStatus == 0, "zbarimg found no code (version \(code.version), mask \(code.mask))")
    let decoded = String(decoding: data, as: UTF8.self)
    #expect(decoded.hasSuffix("\n") && decoded.dropLast() == text, "version \(code.version): \(decoded.prefix(80))")
  }

  @Test("the versions grow with the text, and a text above the limit gets no code")
  func versions() throws {
    let versions = Self.texts.prefix(10).map { QRCode.encode($0)?.version }
    #expect(versions == Array(1...10))
    #expect(QRCode.encode(String(repeating: "x", count: QRCode.maxBytes + 1)) == nil)
    // Half blocks: two module rows per line, with the quiet zone.
    let code = try #require(QRCode.encode("BANK"))
    let lines = code.terminalText().split(separator: "\n")
    #expect(lines.count == (code.size + 8 + 1) / 2)
    #expect(lines.allSatisfy { $0.count == code.size + 8 })
  }
}
