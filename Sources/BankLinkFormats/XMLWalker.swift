import CLibXML2
import Foundation

/// A streaming walk over an XML document with libxml2's SAX2 push parser (Debian's libxml2,
/// driven directly: Foundation's `XMLParser` costs a `String` and a dictionary per callback and
/// a weak delegate load, and runs libxml2 in recovery mode). What each element becomes is up to
/// an ``XMLSink``: ``XMLWalker/walk(_:format:onStart:onEnd:)`` hands every element with its
/// path of local names (namespace prefixes resolved, so `<ns2:Stmt>` and `<Stmt>` are the
/// same), attributes and text; ``XMLWalker/walk(_:format:table:handler:)`` matches names as
/// bytes against an ``XMLPathTable`` and hands over only the elements listed there, as small
/// integers, keeping text only for those. Nothing is held but the current path and text, so
/// memory does not grow with the file.
///
/// Refused before or while parsing: any document type declaration (`<!DOCTYPE`, `<!ENTITY`:
/// bank files have none, and they are how entity-expansion bombs and external entities get in),
/// anything but UTF-8, nesting deeper than ``FormatLimits/maxXMLDepth``, names longer than
/// ``FormatLimits/maxXMLNameBytes``, element text longer than ``FormatLimits/maxTextBytes``,
/// and any error libxml2 reports (no recovery mode, no network, no entity substitution).
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
  private let sink: any XMLSink
  /// Elements open now (the root is depth 1).
  private(set) var depth = 0
  /// The root element has closed (a document that simply stops is refused).
  private var rootClosed = false
  private var failure: (any Error)?
  private var context: xmlParserCtxtPtr?

  private init(format: String, sink: any XMLSink) {
    self.format = format
    self.sink = sink
  }

  /// Bytes handed to libxml2 at a time.
  static let chunkBytes = 1 << 20

  /// Walks the document, calling `onStart` as each element opens and `onEnd` with its text as
  /// it closes. Throws ``FormatError`` (or what a callback threw) and stops at the first problem.
  static func walk(
    _ source: FormatSource, format: String, onStart: @escaping (Element) throws -> Void,
    onEnd: @escaping (Element, _ text: String) throws -> Void
  ) throws {
    try Self.run(source, format: format, sink: ElementSink(onStart: onStart, onEnd: onEnd))
  }

  /// Walks the document, telling `handler` about the elements `table` lists (and about any
  /// element outside it at depth 1 or 2, so a reader can refuse the wrong document). Elements
  /// deeper and not listed cost a name comparison and nothing else; their text is not kept.
  static func walk(_ source: FormatSource, format: String, table: XMLPathTable, handler: any XMLTableHandler) throws {
    try Self.run(source, format: format, sink: TableSink(table: table, handler: handler))
  }

  private static func run(_ source: FormatSource, format: String, sink: any XMLSink) throws {
    let walker = XMLWalker(format: format, sink: sink)
    // Alive until the parser is freed: its callbacks hold the walker unretained.
    defer { withExtendedLifetime(walker) {} }
    var handler = xmlSAXHandler()
    handler.initialized = UInt32(XML_SAX2_MAGIC)
    // The walker outlives the parse (`run` holds it), so the callbacks borrow it without
    // reference counting: they run for every element and every piece of text.
    handler.startElementNs = { context, localName, _, uri, _, _, attributeCount, _, attributes in
      guard let context, let localName else { return }
      Unmanaged<XMLWalker>.fromOpaque(context)._withUnsafeGuaranteedRef { $0.start(localName, uri, Int(attributeCount), attributes) }
    }
    handler.endElementNs = { context, _, _, _ in
      guard let context else { return }
      Unmanaged<XMLWalker>.fromOpaque(context)._withUnsafeGuaranteedRef { $0.end() }
    }
    handler.characters = { context, characters, length in
      guard let context, let characters else { return }
      Unmanaged<XMLWalker>.fromOpaque(context)._withUnsafeGuaranteedRef { $0.characters(characters, Int(length)) }
    }
    handler.cdataBlock = handler.characters
    // Bank files have no document type declaration, and it is how entity-expansion bombs and
    // external entities get in: refused as soon as the parser meets one, before its internal
    // subset (and any <!ENTITY in it) is read.
    handler.internalSubset = { context, _, _, _ in
      guard let context else { return }
      let walker = Unmanaged<XMLWalker>.fromOpaque(context).takeUnretainedValue()
      walker.fail(XMLWalker.documentType(walker.format, walker.line))
    }
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
        throw FormatError(format: format, line: line, location: sink.location, reason: reason)
      }
    }
    // One pass: each chunk is checked (size, UTF-8) before libxml2 sees it, so what is parsed
    // is exactly what was checked (a file changed between a check and a parse could not slip
    // through). A document type declaration is refused by the parser itself, as it meets one.
    var size = 0
    var utf8 = UTF8Check()
    func feed(_ chunk: UnsafeRawBufferPointer) throws {
      if size == 0 { try Self.checkDeclaredEncoding(chunk, format: format) }
      size += chunk.count
      guard size <= FormatLimits.maxFileBytes else { throw Self.tooLarge(format) }
      guard utf8.feed(chunk) else { throw Self.notUTF8(format, utf8.line) }
      try parse(chunk, last: false)
    }
    switch source {
    case .data(let data):
      guard data.count <= FormatLimits.maxFileBytes else { throw Self.tooLarge(format) }
      try data.withUnsafeBytes { bytes in
        var offset = 0
        while offset < bytes.count {
          let end = min(bytes.count, offset + Self.chunkBytes)
          try feed(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
          offset = end
        }
      }
    case .file(let path):
      let descriptor = open(path, O_RDONLY | O_CLOEXEC)
      guard descriptor >= 0 else {
        throw FormatError(format: format, line: 0, location: "", reason: "cannot read \(path)")
      }
      defer { close(descriptor) }
      // One buffer for the whole file: no allocation (and no fresh pages) per chunk.
      let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.chunkBytes, alignment: 16)
      defer { buffer.deallocate() }
      while true {
        let count = read(descriptor, buffer.baseAddress, Self.chunkBytes)
        if count < 0 {
          if errno == EINTR { continue }
          throw FormatError(format: format, line: 0, location: "", reason: "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        if count == 0 { break }
        try feed(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
      }
    }
    guard utf8.finish() else { throw Self.notUTF8(format, utf8.line) }
    try parse(UnsafeRawBufferPointer(start: nil, count: 0), last: true)
    guard walker.rootClosed else {
      throw FormatError(
        format: format, line: Int(xmlSAX2GetLineNumber(context)), location: sink.location,
        reason: "the file ends before its document does (truncated?)")
    }
  }

  private static func notUTF8(_ format: String, _ line: Int) -> FormatError {
    FormatError(format: format, line: line, location: "", reason: "the file is not UTF-8 (ISO 20022 XML messages are)")
  }

  /// ISO 20022 messages are UTF-8: a declaration naming another encoding is refused (libxml2
  /// would transcode, and Foundation's callbacks trap on names that are not valid UTF-8).
  private static func checkDeclaredEncoding(_ head: UnsafeRawBufferPointer, format: String) throws {
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

  var line: Int { self.context.map { Int(xmlSAX2GetLineNumber($0)) } ?? 0 }

  /// Records the first failure (with the line and element path, when the error has none) and
  /// stops the parser.
  func fail(_ error: any Error) {
    if self.failure == nil {
      if var located = error as? FormatError {
        if located.line == 0 { located.line = self.line }
        if located.location.isEmpty { located.location = self.sink.location }
        self.failure = located
      } else {
        self.failure = error
      }
    }
    if let context = self.context { xmlStopParser(context) }
  }

  func error(_ reason: String) -> FormatError {
    FormatError(format: self.format, line: self.line, location: self.sink.location, reason: reason)
  }

  static func string(_ bytes: UnsafePointer<xmlChar>) -> String {
    String(decoding: UnsafeBufferPointer(start: bytes, count: strlen(UnsafeRawPointer(bytes).assumingMemoryBound(to: CChar.self))), as: UTF8.self)
  }

  private func start(
    _ localName: UnsafePointer<xmlChar>, _ uri: UnsafePointer<xmlChar>?, _ attributeCount: Int,
    _ attributes: UnsafeMutablePointer<UnsafePointer<xmlChar>?>?
  ) {
    guard self.failure == nil else { return }
    guard self.depth < FormatLimits.maxXMLDepth else {
      self.fail(self.error("elements nest deeper than \(FormatLimits.maxXMLDepth)"))
      return
    }
    let nameLength = strlen(UnsafeRawPointer(localName).assumingMemoryBound(to: CChar.self))
    guard nameLength <= FormatLimits.maxXMLNameBytes else {
      self.fail(self.error("an element name longer than \(FormatLimits.maxXMLNameBytes) bytes"))
      return
    }
    self.depth += 1
    do {
      try self.sink.start(
        XMLOpening(
          depth: self.depth, localName: localName, nameLength: nameLength, uri: uri, attributeCount: attributeCount,
          attributes: attributes))
    } catch {
      self.fail(error)
    }
  }

  private func characters(_ characters: UnsafePointer<xmlChar>, _ length: Int) {
    guard self.failure == nil else { return }
    guard self.sink.characters(characters, length) else {
      self.fail(self.error("element text longer than \(FormatLimits.maxTextBytes) bytes"))
      return
    }
  }

  private func end() {
    guard self.failure == nil, self.depth > 0 else { return }
    do {
      try self.sink.end(depth: self.depth)
    } catch {
      self.fail(error)
    }
    if self.depth == 1 { self.rootClosed = true }
    self.depth -= 1
  }

  /// Text without leading and trailing XML white space (space, tab, CR, LF), trimmed as bytes
  /// (ASCII bytes never occur inside a multi-byte UTF-8 sequence), then decoded once.
  static func trimmed(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
    func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
    var start = 0
    var end = bytes.count
    while start < end, isSpace(bytes[start]) { start += 1 }
    while end > start, isSpace(bytes[end - 1]) { end -= 1 }
    return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
  }
}

/// Checks UTF-8 incrementally (RFC 3629: no overlong forms, no surrogates, nothing above
/// U+10FFFF), chunk by chunk, so a file read in pieces is checked whole without being copied.
/// Counts lines on the way, for the message.
struct UTF8Check {
  /// Continuation bytes still expected for the sequence under way.
  private var needed = 0
  /// The range the next continuation byte must fall in (narrower after E0, ED, F0 and F4).
  private var lower: UInt8 = 0x80
  private var upper: UInt8 = 0xBF
  /// The line reached (of the first invalid sequence, once `feed` returned false).
  private(set) var line = 1

  /// Checks `chunk`, carrying a sequence cut at its end into the next chunk.
  mutating func feed(_ chunk: UnsafeRawBufferPointer) -> Bool {
    guard let base = chunk.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return true }
    let count = chunk.count
    var index = 0
    var newlines = 0
    defer { self.line += newlines }
    while index < count {
      if self.needed == 0 {
        // Eight ASCII bytes at a time.
        while index + 8 <= count {
          let word = UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self)
          guard word & 0x8080_8080_8080_8080 == 0 else { break }
          newlines += Self.newlines(in: word)
          index += 8
        }
        guard index < count else { break }
        let byte = base[index]
        index += 1
        switch byte {
        case 0x00...0x7F:
          if byte == 0x0A { newlines += 1 }
        case 0xC2...0xDF: (self.needed, self.lower, self.upper) = (1, 0x80, 0xBF)
        case 0xE0: (self.needed, self.lower, self.upper) = (2, 0xA0, 0xBF)
        case 0xED: (self.needed, self.lower, self.upper) = (2, 0x80, 0x9F)
        case 0xE1...0xEF: (self.needed, self.lower, self.upper) = (2, 0x80, 0xBF)
        case 0xF0: (self.needed, self.lower, self.upper) = (3, 0x90, 0xBF)
        case 0xF4: (self.needed, self.lower, self.upper) = (3, 0x80, 0x8F)
        case 0xF1...0xF3: (self.needed, self.lower, self.upper) = (3, 0x80, 0xBF)
        default: return false
        }
      } else {
        let byte = base[index]
        guard byte >= self.lower, byte <= self.upper else { return false }
        index += 1
        self.needed -= 1
        (self.lower, self.upper) = (0x80, 0xBF)
      }
    }
    return true
  }

  /// Line feeds among eight ASCII bytes.
  private static func newlines(in word: UInt64) -> Int {
    // Bytes equal to 0x0A become zero; the usual zero-byte test (exact for ASCII bytes).
    let x = word ^ 0x0A0A_0A0A_0A0A_0A0A
    let zero = (x &- 0x0101_0101_0101_0101) & ~x & 0x8080_8080_8080_8080
    return zero.nonzeroBitCount
  }

  /// Whether nothing incomplete is left at the end.
  func finish() -> Bool { self.needed == 0 }
}
