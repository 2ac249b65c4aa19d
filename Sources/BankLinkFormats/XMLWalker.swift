import CLibXML2
import Foundation

/// A streaming walk over an XML document with libxml2's SAX2 push parser (Debian's libxml2,
/// driven directly: Foundation's `XMLParser` costs a `String` and a dictionary per callback and
/// a weak delegate load, and runs libxml2 in recovery mode): for each element, its path of
/// local names (namespace prefixes resolved, so `<ns2:Stmt>` and `<Stmt>` are the same), its
/// attributes and its text. Nothing is held but the current path and text, so memory does not
/// grow with the file.
///
/// Refused before or while parsing: any document type declaration (`<!DOCTYPE`, `<!ENTITY`:
/// bank files have none, and they are how entity-expansion bombs and external entities get in),
/// anything but UTF-8, nesting deeper than ``FormatLimits/maxXMLDepth``, element text longer than
/// ``FormatLimits/maxTextBytes``, and any error libxml2 reports (no recovery mode, no network,
/// no entity substitution).
final class XMLWalker {
  struct Element {
    /// Local names from the root down to this element.
    var path: [String]
    var namespace: String
    var attributes: [String: String]
    /// The path as one string (`Document/BkToCstmrStmt/Stmt/Ntry/Amt`) and where each name
    /// ends in it: readers match on a part of it without joining names for every element.
    var joined: String
    var ends: [String.Index]

    /// The path from the element at `index` (0: the root) down, as `Ntry/Amt`; empty when the
    /// element is not that deep.
    func key(from index: Int) -> Substring {
      guard index < self.path.count else { return "" }
      let start = index == 0 ? self.joined.startIndex : self.joined.index(after: self.ends[index - 1])
      return self.joined[start...]
    }
  }

  private let format: String
  private let onStart: (Element) throws -> Void
  private let onEnd: (Element, _ text: String) throws -> Void
  private var path: [String] = []
  private var namespaces: [String] = []
  private var attributes: [[String: String]] = []
  private var text: [UInt8] = []
  private var joined = ""
  private var ends: [String.Index] = []
  /// The root element has closed (a document that simply stops is refused).
  private var rootClosed = false
  private var failure: (any Error)?
  private var context: xmlParserCtxtPtr?

  private init(
    format: String, onStart: @escaping (Element) throws -> Void, onEnd: @escaping (Element, _ text: String) throws -> Void
  ) {
    self.format = format
    self.onStart = onStart
    self.onEnd = onEnd
  }

  /// Bytes handed to libxml2 at a time.
  static let chunkBytes = 1 << 20

  /// Walks the document, calling `onStart` as each element opens and `onEnd` with its text as
  /// it closes. Throws ``FormatError`` (or what a callback threw) and stops at the first problem.
  static func walk(
    _ source: FormatSource, format: String, onStart: @escaping (Element) throws -> Void,
    onEnd: @escaping (Element, _ text: String) throws -> Void
  ) throws {
    let walker = XMLWalker(format: format, onStart: onStart, onEnd: onEnd)
    var handler = xmlSAXHandler()
    handler.initialized = UInt32(XML_SAX2_MAGIC)
    handler.startElementNs = { context, localName, _, uri, _, _, attributeCount, _, attributes in
      guard let context, let localName else { return }
      Unmanaged<XMLWalker>.fromOpaque(context).takeUnretainedValue().start(localName, uri, Int(attributeCount), attributes)
    }
    handler.endElementNs = { context, _, _, _ in
      guard let context else { return }
      Unmanaged<XMLWalker>.fromOpaque(context).takeUnretainedValue().end()
    }
    handler.characters = { context, characters, length in
      guard let context, let characters else { return }
      Unmanaged<XMLWalker>.fromOpaque(context).takeUnretainedValue().characters(characters, Int(length))
    }
    handler.cdataBlock = handler.characters
    // Errors come back through the parser's return code and last error; a structured handler
    // keeps libxml2 from printing them.
    handler.serror = { _, _ in }
    let opaque = Unmanaged.passUnretained(walker).toOpaque()
    guard let context = xmlCreatePushParserCtxt(&handler, opaque, nil, 0, nil) else {
      throw FormatError(format: format, line: 0, location: "", reason: "the XML parser could not start")
    }
    defer { xmlFreeParserCtxt(context) }
    // No network, no entity substitution, no DTD loading, no recovery: errors are errors.
    xmlCtxtUseOptions(context, Int32(XML_PARSE_NONET.rawValue))
    walker.context = context

    func parse(_ bytes: UnsafeRawBufferPointer, last: Bool) throws {
      let result = xmlParseChunk(
        context, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(bytes.count), last ? 1 : 0)
      if let failure = walker.failure { throw failure }
      if result != 0 {
        var line = Int(xmlSAX2GetLineNumber(context))
        var reason = "not well-formed XML (libxml2 error \(result))"
        if let error = xmlCtxtGetLastError(context) {
          line = Int(error.pointee.line)
          if let message = error.pointee.message {
            reason = "not well-formed XML: " + String(cString: message).trimmingCharacters(in: .whitespacesAndNewlines)
          }
        }
        throw FormatError(format: format, line: line, location: walker.path.joined(separator: "/"), reason: reason)
      }
    }
    // One pass: each chunk is checked (size, document type declarations, UTF-8) before libxml2
    // sees it, so what is parsed is exactly what was checked (a file changed between a check
    // and a parse could not slip through).
    var size = 0
    var lines = 0
    var carry = Data()
    var utf8 = UTF8Check()
    func feed(_ chunk: Data) throws {
      if size == 0 { try Self.checkDeclaredEncoding(chunk, format: format) }
      size += chunk.count
      guard size <= FormatLimits.maxFileBytes else { throw Self.tooLarge(format) }
      guard utf8.feed(chunk) else { throw Self.notUTF8(format, utf8.line) }
      // The last bytes of the previous chunk, so a marker split across two chunks is seen.
      let window = carry + chunk
      let carriedLines = carry.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
      let scanned = Self.documentTypeLine(window, lineOffset: lines - carriedLines)
      if let line = scanned.found { throw Self.documentType(format, line) }
      lines = scanned.lines
      carry = Data(window.suffix(2))
      try chunk.withUnsafeBytes { try parse($0, last: false) }
    }
    switch source {
    case .data(let data):
      guard data.count <= FormatLimits.maxFileBytes else { throw Self.tooLarge(format) }
      var offset = data.startIndex
      while offset < data.endIndex {
        let end = min(data.endIndex, offset + Self.chunkBytes)
        try feed(data[offset..<end])
        offset = end
      }
    case .file(let path):
      guard let handle = FileHandle(forReadingAtPath: path) else {
        throw FormatError(format: format, line: 0, location: "", reason: "cannot read \(path)")
      }
      defer { try? handle.close() }
      while let chunk = try handle.read(upToCount: Self.chunkBytes), !chunk.isEmpty { try feed(chunk) }
    }
    guard utf8.finish() else { throw Self.notUTF8(format, utf8.line) }
    try parse(UnsafeRawBufferPointer(start: nil, count: 0), last: true)
    guard walker.rootClosed else {
      throw FormatError(
        format: format, line: Int(xmlSAX2GetLineNumber(context)), location: walker.path.joined(separator: "/"),
        reason: "the file ends before its document does (truncated?)")
    }
  }

  private static func notUTF8(_ format: String, _ line: Int) -> FormatError {
    FormatError(format: format, line: line, location: "", reason: "the file is not UTF-8 (ISO 20022 XML messages are)")
  }

  /// ISO 20022 messages are UTF-8: a declaration naming another encoding is refused (libxml2
  /// would transcode, and Foundation's callbacks trap on names that are not valid UTF-8).
  private static func checkDeclaredEncoding(_ head: Data, format: String) throws {
    var bytes = Array(head.prefix(256))
    if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
    guard bytes.starts(with: Array("<?xml".utf8)), let end = bytes.firstIndex(of: UInt8(ascii: ">")) else { return }
    let declaration = String(decoding: bytes[..<end], as: UTF8.self).lowercased()
    guard let range = declaration.range(of: "encoding") else { return }
    let value = declaration[range.upperBound...].drop { $0 == " " || $0 == "=" || $0 == "\"" || $0 == "'" }.prefix { $0 != "\"" && $0 != "'" }
    guard value == "utf-8" || value == "utf8" else {
      throw FormatError(format: format, line: 1, location: "", reason: "the file declares encoding '\(value)'; ISO 20022 XML messages are UTF-8")
    }
  }

  private static func tooLarge(_ format: String) -> FormatError {
    FormatError(format: format, line: 0, location: "", reason: "the file is larger than \(FormatLimits.maxFileBytes) bytes")
  }

  private static func documentType(_ format: String, _ line: Int) -> FormatError {
    FormatError(
      format: format, line: line, location: "", reason: "a document type declaration (<!DOCTYPE or <!ENTITY) is not accepted in a bank file")
  }

  /// The line of the first `<!DOCTYPE` or `<!ENTITY`, if any, and the lines counted (a byte
  /// scan; comments and CDATA, which also start with `<!`, are not matched).
  static func documentTypeLine(_ data: Data, lineOffset: Int) -> (found: Int?, lines: Int) {
    data.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) -> (found: Int?, lines: Int) in
      let bytes = buffer.bindMemory(to: UInt8.self)
      var line = lineOffset
      var index = 0
      let count = bytes.count
      while index < count {
        let byte = bytes[index]
        if byte == 0x0A {
          line += 1
        } else if byte == UInt8(ascii: "<"), index + 2 < count, bytes[index + 1] == UInt8(ascii: "!") {
          let next = bytes[index + 2] | 0x20
          if next == UInt8(ascii: "d") || next == UInt8(ascii: "e") { return (line + 1, line) }
        }
        index += 1
      }
      return (nil, line)
    }
  }

  var line: Int { self.context.map { Int(xmlSAX2GetLineNumber($0)) } ?? 0 }

  func fail(_ error: any Error) {
    if self.failure == nil {
      if var located = error as? FormatError, located.line == 0 {
        located.line = self.line
        self.failure = located
      } else {
        self.failure = error
      }
    }
    if let context = self.context { xmlStopParser(context) }
  }

  func error(_ reason: String) -> FormatError {
    FormatError(format: self.format, line: self.line, location: self.path.joined(separator: "/"), reason: reason)
  }

  static func string(_ bytes: UnsafePointer<xmlChar>) -> String {
    String(decoding: UnsafeBufferPointer(start: bytes, count: strlen(UnsafeRawPointer(bytes).assumingMemoryBound(to: CChar.self))), as: UTF8.self)
  }

  func start(
    _ localName: UnsafePointer<xmlChar>, _ uri: UnsafePointer<xmlChar>?, _ attributeCount: Int,
    _ attributes: UnsafeMutablePointer<UnsafePointer<xmlChar>?>?
  ) {
    guard self.failure == nil else { return }
    guard self.path.count < FormatLimits.maxXMLDepth else {
      self.fail(self.error("elements nest deeper than \(FormatLimits.maxXMLDepth)"))
      return
    }
    let nameLength = strlen(UnsafeRawPointer(localName).assumingMemoryBound(to: CChar.self))
    guard nameLength <= FormatLimits.maxXMLNameBytes else {
      self.fail(self.error("an element name longer than \(FormatLimits.maxXMLNameBytes) bytes"))
      return
    }
    let name = Self.string(localName)
    // Readers look at the namespace of the root and its child only.
    let namespace = self.path.count < 2 ? uri.map(Self.string) ?? "" : ""
    var attributeValues: [String: String] = [:]
    if attributeCount > 0, let attributes {
      // Five pointers per attribute: local name, prefix, URI, value start, value end.
      for index in 0..<attributeCount {
        guard let attributeName = attributes[index * 5], let start = attributes[index * 5 + 3], let end = attributes[index * 5 + 4]
        else { continue }
        attributeValues[Self.string(attributeName)] = String(
          decoding: UnsafeBufferPointer(start: start, count: max(0, end - start)), as: UTF8.self)
      }
    }
    self.path.append(name)
    self.namespaces.append(namespace)
    self.attributes.append(attributeValues)
    if !self.joined.isEmpty { self.joined += "/" }
    self.joined += name
    self.ends.append(self.joined.endIndex)
    self.text.removeAll(keepingCapacity: true)
    do {
      try self.onStart(
        Element(path: self.path, namespace: namespace, attributes: attributeValues, joined: self.joined, ends: self.ends))
    } catch {
      self.fail(error)
    }
  }

  func characters(_ characters: UnsafePointer<xmlChar>, _ length: Int) {
    guard self.failure == nil else { return }
    guard self.text.count + length <= FormatLimits.maxTextBytes else {
      self.fail(self.error("element text longer than \(FormatLimits.maxTextBytes) bytes"))
      return
    }
    self.text.append(contentsOf: UnsafeBufferPointer(start: characters, count: length))
  }

  func end() {
    guard self.failure == nil, !self.path.isEmpty else { return }
    let text = Self.trimmed(self.text)
    do {
      try self.onEnd(
        Element(
          path: self.path, namespace: self.namespaces.last ?? "", attributes: self.attributes.last ?? [:], joined: self.joined,
          ends: self.ends), text)
    } catch {
      self.fail(error)
    }
    if self.path.count == 1 { self.rootClosed = true }
    self.ends.removeLast()
    self.joined.removeSubrange((self.ends.last ?? self.joined.startIndex)...)
    self.path.removeLast()
    self.namespaces.removeLast()
    self.attributes.removeLast()
    self.text.removeAll(keepingCapacity: true)
  }

  /// Text without leading and trailing XML white space (space, tab, CR, LF), trimmed as bytes
  /// (ASCII bytes never occur inside a multi-byte UTF-8 sequence), then decoded once.
  static func trimmed(_ bytes: [UInt8]) -> String {
    func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
    var start = 0
    var end = bytes.count
    while start < end, isSpace(bytes[start]) { start += 1 }
    while end > start, isSpace(bytes[end - 1]) { end -= 1 }
    return String(decoding: bytes[start..<end], as: UTF8.self)
  }


}

/// Checks UTF-8 incrementally, chunk by chunk, so a file read in pieces is checked whole.
struct UTF8Check {
  private var pending: [UInt8] = []
  /// The line reached (of the first invalid sequence, once `feed` returned false).
  private(set) var line = 1

  /// Checks `chunk`, keeping a sequence cut at its end for the next chunk.
  mutating func feed(_ chunk: Data) -> Bool {
    var bytes = self.pending
    bytes.append(contentsOf: chunk)
    // Hold back an incomplete sequence at the end (at most 3 bytes).
    var cut = bytes.count
    var back = 0
    while back < 3, cut - back - 1 >= 0 {
      let byte = bytes[cut - back - 1]
      if byte & 0xC0 != 0x80 {
        let length = byte < 0x80 ? 1 : byte >> 5 == 0b110 ? 2 : byte >> 4 == 0b1110 ? 3 : byte >> 3 == 0b11110 ? 4 : 1
        if length > back + 1 { cut = cut - back - 1 }
        break
      }
      back += 1
    }
    self.pending = Array(bytes[cut...])
    let complete = bytes[..<cut]
    guard String(validating: complete, as: UTF8.self) != nil else {
      // Find the line for the message.
      var decoder = UTF8()
      var iterator = complete.makeIterator()
      loop: while true {
        switch decoder.decode(&iterator) {
        case .scalarValue(let scalar): if scalar == "\n" { self.line += 1 }
        case .emptyInput, .error: break loop
        }
      }
      return false
    }
    self.line += complete.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
    return true
  }

  /// Whether nothing incomplete is left at the end.
  func finish() -> Bool { self.pending.isEmpty }
}
