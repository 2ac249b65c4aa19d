import Foundation

#if canImport(FoundationXML)
  import FoundationXML
#endif

/// A streaming walk over an XML document through Foundation's `XMLParser` (libxml2's SAX
/// parser): for each element, its path of local names (namespace prefixes resolved, so
/// `<ns2:Stmt>` and `<Stmt>` are the same), its attributes and its text. Nothing is held but
/// the current path and text, so memory does not grow with the file.
///
/// Refused before or while parsing: any document type declaration (`<!DOCTYPE`, `<!ENTITY`:
/// bank files have none, and they are how entity-expansion bombs and external entities get in),
/// nesting deeper than ``FormatLimits/maxXMLDepth``, element text longer than
/// ``FormatLimits/maxTextBytes``, and anything libxml2 finds malformed.
final class XMLWalker: NSObject, XMLParserDelegate {
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
  private var text = ""
  private var joined = ""
  private var ends: [String.Index] = []
  /// The root element has closed: libxml2, fed a whole buffer, does not report a document
  /// that simply stops (a truncated file) as an error, so the walker checks it ends.
  private var rootClosed = false
  private var failure: (any Error)?
  private weak var parser: XMLParser?

  private init(
    format: String, onStart: @escaping (Element) throws -> Void, onEnd: @escaping (Element, _ text: String) throws -> Void
  ) {
    self.format = format
    self.onStart = onStart
    self.onEnd = onEnd
  }

  /// Where a document comes from: bytes in memory, or a file read in chunks (bounded memory).
  enum Source {
    case data(Data)
    case file(String)
  }

  /// Walks the document, calling `onStart` as each element opens and `onEnd` with its text as
  /// it closes. Throws ``FormatError`` (or what a callback threw) and stops at the first problem.
  static func walk(
    _ source: Source, format: String, onStart: @escaping (Element) throws -> Void,
    onEnd: @escaping (Element, _ text: String) throws -> Void
  ) throws {
    let parser: XMLParser
    switch source {
    case .data(let data):
      guard data.count <= FormatLimits.maxFileBytes else { throw Self.tooLarge(format) }
      if let line = Self.documentTypeLine(data, lineOffset: 0).found { throw Self.documentType(format, line) }
      var utf8 = UTF8Check()
      guard utf8.feed(data), utf8.finish() else { throw Self.notUTF8(format, utf8.line) }
      try Self.checkDeclaredEncoding(data, format: format)
      parser = XMLParser(data: data)
    case .file(let path):
      guard let handle = FileHandle(forReadingAtPath: path) else {
        throw FormatError(format: format, line: 0, location: "", reason: "cannot read \(path)")
      }
      defer { try? handle.close() }
      // A first pass in chunks: size and document type declarations, before libxml2 sees it.
      var size = 0
      var lines = 0
      var carry = Data()
      var utf8 = UTF8Check()
      while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
        if size == 0 { try Self.checkDeclaredEncoding(chunk, format: format) }
        guard utf8.feed(chunk) else { throw Self.notUTF8(format, utf8.line) }
        size += chunk.count
        guard size <= FormatLimits.maxFileBytes else { throw Self.tooLarge(format) }
        // The last bytes of the previous chunk, so a marker split across two chunks is seen.
        let window = carry + chunk
        let carriedLines = carry.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
        let scanned = Self.documentTypeLine(window, lineOffset: lines - carriedLines)
        if let line = scanned.found { throw Self.documentType(format, line) }
        lines = scanned.lines
        carry = Data(window.suffix(2))
      }
      guard utf8.finish() else { throw Self.notUTF8(format, utf8.line) }
      guard let stream = InputStream(fileAtPath: path) else {
        throw FormatError(format: format, line: 0, location: "", reason: "cannot read \(path)")
      }
      parser = XMLParser(stream: stream)
    }
    let walker = XMLWalker(format: format, onStart: onStart, onEnd: onEnd)
    parser.shouldProcessNamespaces = true
    parser.shouldResolveExternalEntities = false
    parser.delegate = walker
    walker.parser = parser
    let parsed = parser.parse()
    if let failure = walker.failure { throw failure }
    // Foundation runs libxml2 in recovery mode: a document with errors may still "parse", so
    // any error reported along the way refuses the file.
    guard parsed, parser.parserError == nil else {
      let reason = parser.parserError.map { "not well-formed XML (libxml2 error \(($0 as NSError).code))" } ?? "not well-formed XML"
      throw FormatError(format: format, line: walker.errorLine ?? parser.lineNumber, location: walker.path.joined(separator: "/"), reason: reason)
    }
    guard walker.rootClosed else {
      throw FormatError(
        format: format, line: parser.lineNumber, location: walker.path.joined(separator: "/"),
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

  func fail(_ error: any Error) {
    if self.failure == nil {
      if var located = error as? FormatError, located.line == 0 {
        located.line = self.parser?.lineNumber ?? 0
        self.failure = located
      } else {
        self.failure = error
      }
    }
    self.parser?.abortParsing()
  }

  func error(_ reason: String) -> FormatError {
    FormatError(format: self.format, line: self.parser?.lineNumber ?? 0, location: self.path.joined(separator: "/"), reason: reason)
  }

  func parser(
    _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
    attributes attributeDict: [String: String] = [:]
  ) {
    guard self.failure == nil else { return }
    guard self.path.count < FormatLimits.maxXMLDepth else {
      self.fail(self.error("elements nest deeper than \(FormatLimits.maxXMLDepth)"))
      return
    }
    self.path.append(elementName)
    self.namespaces.append(namespaceURI ?? "")
    self.attributes.append(attributeDict)
    if !self.joined.isEmpty { self.joined += "/" }
    self.joined += elementName
    self.ends.append(self.joined.endIndex)
    self.text = ""
    do {
      try self.onStart(
        Element(path: self.path, namespace: namespaceURI ?? "", attributes: attributeDict, joined: self.joined, ends: self.ends))
    } catch {
      self.fail(error)
    }
  }

  func parser(_ parser: XMLParser, foundCharacters string: String) {
    guard self.failure == nil else { return }
    if self.text.utf8.count + string.utf8.count > FormatLimits.maxTextBytes {
      self.fail(self.error("element text longer than \(FormatLimits.maxTextBytes) bytes"))
      return
    }
    self.text += string
  }

  func parser(_ parser: XMLParser, foundCDATA CDATABlock: Data) {
    self.parser(parser, foundCharacters: String(decoding: CDATABlock, as: UTF8.self))
  }

  func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
    guard self.failure == nil else { return }
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
    self.joined.removeSubrange((self.ends.last.map { $0 } ?? self.joined.startIndex)...)
    if self.joined.hasSuffix("/") { self.joined.removeLast() }
    self.path.removeLast()
    self.namespaces.removeLast()
    self.attributes.removeLast()
    self.text = ""
  }

  /// Text without leading and trailing XML white space (space, tab, CR, LF): what element
  /// values mean. Most values have none, and are returned as they are.
  static func trimmed(_ text: String) -> String {
    func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
    let utf8 = text.utf8
    guard let first = utf8.first, let last = utf8.last, isSpace(first) || isSpace(last) else { return text }
    guard let start = utf8.firstIndex(where: { !isSpace($0) }), let end = utf8.lastIndex(where: { !isSpace($0) }) else { return "" }
    return String(text[start...end])
  }

  /// The line of the first error libxml2 reported (it goes on in recovery mode).
  private(set) var errorLine: Int?

  func parser(_ parser: XMLParser, parseErrorOccurred parseError: any Error) {
    if self.errorLine == nil { self.errorLine = parser.lineNumber }
    // Recovery would go on reading a broken file; nothing after the first error is trusted.
    parser.abortParsing()
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
