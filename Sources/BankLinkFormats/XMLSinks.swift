import CLibXML2
import Foundation

/// An element as it opens, valid only during the call it is passed to (its bytes belong to the
/// parser).
struct XMLOpening {
  /// 1 for the root.
  let depth: Int
  let localName: UnsafePointer<xmlChar>
  let nameLength: Int
  let uri: UnsafePointer<xmlChar>?
  let attributeCount: Int
  /// Five pointers per attribute: local name, prefix, URI, value start, value end.
  let attributes: UnsafeMutablePointer<UnsafePointer<xmlChar>?>?

  var nameBytes: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: self.localName, count: self.nameLength) }
  var name: String { String(decoding: self.nameBytes, as: UTF8.self) }
  var namespace: String { self.uri.map(XMLWalker.string) ?? "" }

  /// Every attribute by local name.
  var allAttributes: [String: String] {
    var values: [String: String] = [:]
    for index in 0..<self.attributeCount {
      if let (name, value) = self.attribute(at: index) { values[name] = value }
    }
    return values
  }

  /// The value of the attribute with this local name, if the element has it.
  func attribute(_ wanted: StaticString) -> String? {
    for index in 0..<self.attributeCount {
      guard let attributes, let name = attributes[index * 5] else { continue }
      let length = strlen(UnsafeRawPointer(name).assumingMemoryBound(to: CChar.self))
      guard length == wanted.utf8CodeUnitCount, memcmp(name, wanted.utf8Start, length) == 0 else { continue }
      return self.attribute(at: index)?.value
    }
    return nil
  }

  private func attribute(at index: Int) -> (name: String, value: String)? {
    guard let attributes, let name = attributes[index * 5], let start = attributes[index * 5 + 3], let end = attributes[index * 5 + 4]
    else { return nil }
    return (XMLWalker.string(name), String(decoding: UnsafeBufferPointer(start: start, count: max(0, end - start)), as: UTF8.self))
  }
}

/// What the walker hands elements to.
protocol XMLSink: AnyObject {
  func start(_ element: XMLOpening) throws
  /// Text of the open element; false when it grows beyond ``FormatLimits/maxTextBytes``.
  func characters(_ bytes: UnsafePointer<xmlChar>, _ length: Int) -> Bool
  func end(depth: Int) throws
  /// The path of the open element, for error messages.
  var location: String { get }
}

/// Hands every element over with its whole path, attributes and text: for readers of small
/// messages (pain.001, pain.002) that match on parts of the path.
final class ElementSink: XMLSink {
  private let onStart: (XMLWalker.Element) throws -> Void
  private let onEnd: (XMLWalker.Element, _ text: String) throws -> Void
  private var path: [String] = []
  private var namespaces: [String] = []
  private var attributes: [[String: String]] = []
  private var text: [UInt8] = []
  private var joined = ""
  private var ends: [String.Index] = []

  init(onStart: @escaping (XMLWalker.Element) throws -> Void, onEnd: @escaping (XMLWalker.Element, _ text: String) throws -> Void) {
    self.onStart = onStart
    self.onEnd = onEnd
  }

  var location: String { self.path.joined(separator: "/") }

  func start(_ opening: XMLOpening) throws {
    let name = opening.name
    // Readers look at the namespace of the root and its child only.
    let namespace = opening.depth <= 2 ? opening.namespace : ""
    let attributeValues = opening.attributeCount > 0 ? opening.allAttributes : [:]
    self.path.append(name)
    self.namespaces.append(namespace)
    self.attributes.append(attributeValues)
    if !self.joined.isEmpty { self.joined += "/" }
    self.joined += name
    self.ends.append(self.joined.endIndex)
    self.text.removeAll(keepingCapacity: true)
    try self.onStart(
      XMLWalker.Element(path: self.path, namespace: namespace, attributes: attributeValues, joined: self.joined, ends: self.ends))
  }

  func characters(_ bytes: UnsafePointer<xmlChar>, _ length: Int) -> Bool {
    guard self.text.count + length <= FormatLimits.maxTextBytes else { return false }
    self.text.append(contentsOf: UnsafeBufferPointer(start: bytes, count: length))
    return true
  }

  func end(depth: Int) throws {
    let text = self.text.withUnsafeBufferPointer(XMLWalker.trimmed)
    defer {
      self.ends.removeLast()
      self.joined.removeSubrange((self.ends.last ?? self.joined.startIndex)...)
      self.path.removeLast()
      self.namespaces.removeLast()
      self.attributes.removeLast()
      self.text.removeAll(keepingCapacity: true)
    }
    try self.onEnd(
      XMLWalker.Element(
        path: self.path, namespace: self.namespaces.last ?? "", attributes: self.attributes.last ?? [:], joined: self.joined,
        ends: self.ends), text)
  }
}

/// The element paths a reader knows, as a tree of names built once: each listed path ends in a
/// node with the reader's action number. While walking, an element's node is found from its
/// parent's by comparing name bytes, so no `String` is made for a name, and an element outside
/// the table (with everything under it) costs one comparison per child of its parent.
struct XMLPathTable: Sendable {
  struct Entry: Sendable {
    /// Names from the root, `/`-separated; `A|B` in a step stands for either name.
    var path: String
    var action: Int32
    /// Whether the element's text is kept and handed over (false for containers).
    var text: Bool

    init(_ path: String, _ action: Int32, text: Bool = true) {
      self.path = path
      self.action = action
      self.text = text
    }
  }

  /// The action handed over for an element outside the table at depth 1 or 2.
  static let unlisted: Int32 = -1
  /// The action of a node that only leads to listed paths.
  static let none: Int32 = 0

  struct Node: Sendable {
    var nameStart: Int
    var nameCount: Int
    /// The name's first eight bytes as one word (``XMLPathTable/prefix(_:_:)``): most names
    /// differ there, so a sibling is usually ruled out by one integer comparison.
    var prefix: UInt64
    var action: Int32
    var keepsText: Bool
    var firstChild: Int32 = -1
    var nextSibling: Int32 = -1
  }

  private(set) var nodes: [Node]
  private(set) var names: [UInt8]

  /// Builds the tree; a path listed twice with different actions is a programming error.
  init(_ entries: [Entry]) {
    // Node 0 stands above the root.
    self.nodes = [Node(nameStart: 0, nameCount: 0, prefix: 0, action: Self.none, keepsText: false)]
    self.names = []
    for entry in entries {
      var paths: [[Substring]] = [[]]
      for step in entry.path.split(separator: "/") {
        let choices = step.split(separator: "|")
        paths = paths.flatMap { prefix in choices.map { prefix + [$0] } }
      }
      for path in paths {
        var node: Int32 = 0
        for name in path { node = self.child(of: node, named: Array(name.utf8)) }
        precondition(
          self.nodes[Int(node)].action == Self.none || self.nodes[Int(node)].action == entry.action,
          "\(entry.path) is listed with two actions")
        self.nodes[Int(node)].action = entry.action
        self.nodes[Int(node)].keepsText = entry.text
      }
    }
  }

  private mutating func child(of parent: Int32, named name: [UInt8]) -> Int32 {
    var child = self.nodes[Int(parent)].firstChild
    var last: Int32 = -1
    while child >= 0 {
      let node = self.nodes[Int(child)]
      if self.names[node.nameStart..<node.nameStart + node.nameCount].elementsEqual(name) { return child }
      last = child
      child = node.nextSibling
    }
    let index = Int32(self.nodes.count)
    let prefix = name.withUnsafeBufferPointer { Self.prefix($0.baseAddress!, $0.count) }
    self.nodes.append(Node(nameStart: self.names.count, nameCount: name.count, prefix: prefix, action: Self.none, keepsText: false))
    self.names.append(contentsOf: name)
    if last >= 0 { self.nodes[Int(last)].nextSibling = index } else { self.nodes[Int(parent)].firstChild = index }
    return index
  }

  /// Up to the first eight bytes of a name, little-endian, zero-padded.
  @inline(__always)
  static func prefix(_ name: UnsafePointer<UInt8>, _ length: Int) -> UInt64 {
    var word: UInt64 = 0
    for index in 0..<min(8, length) { word |= UInt64(name[index]) << (8 * UInt64(index)) }
    return word
  }

  func name(of node: Int32) -> String {
    let node = self.nodes[Int(node)]
    return String(decoding: self.names[node.nameStart..<node.nameStart + node.nameCount], as: UTF8.self)
  }
}

/// A reader driven by an ``XMLPathTable``.
protocol XMLTableHandler: AnyObject {
  /// A listed element opens (or, with ``XMLPathTable/unlisted``, an element outside the table
  /// at depth 1 or 2).
  func start(_ action: Int32, _ element: XMLOpening) throws
  /// A listed element closes, with its text when its entry keeps text (else empty).
  func end(_ action: Int32, _ text: String) throws
}

/// Walks by table: keeps the open elements' node numbers, and text only under a node that keeps
/// it. Its buffers are allocated once, at their limits, and never grow.
final class TableSink: XMLSink {
  private let table: XMLPathTable
  /// The table's nodes and names, copied where reading them costs no reference counting.
  private let nodes: UnsafeMutableBufferPointer<XMLPathTable.Node>
  private let names: UnsafeMutableBufferPointer<UInt8>
  private let handler: any XMLTableHandler
  /// Node numbers of the open elements that are in the table, from the root down.
  private let stack: UnsafeMutablePointer<Int32>
  private let textBuffer: UnsafeMutablePointer<UInt8>
  /// Per node: the child matched last under it (-1: none yet). Files write elements in schema
  /// order, so the sibling after it is the likeliest next element.
  private let lastMatched: UnsafeMutablePointer<Int32>
  /// [listed depth, depth below the last listed element, text length, whether text is kept]
  private let counters: UnsafeMutablePointer<Int>
  /// The name of the outermost open element outside the table, for error messages.
  private var unlistedName = ""

  init(table: XMLPathTable, handler: any XMLTableHandler) {
    self.table = table
    self.handler = handler
    self.nodes = .allocate(capacity: table.nodes.count)
    _ = self.nodes.initialize(from: table.nodes)
    self.names = .allocate(capacity: max(1, table.names.count))
    _ = self.names.initialize(from: table.names)
    self.lastMatched = .allocate(capacity: table.nodes.count)
    self.lastMatched.initialize(repeating: -1, count: table.nodes.count)
    self.stack = .allocate(capacity: FormatLimits.maxXMLDepth + 1)
    self.stack.initialize(repeating: 0, count: FormatLimits.maxXMLDepth + 1)
    self.textBuffer = .allocate(capacity: FormatLimits.maxTextBytes)
    self.counters = .allocate(capacity: 4)
    self.counters.initialize(repeating: 0, count: 4)
  }

  deinit {
    self.nodes.deallocate()
    self.names.deallocate()
    self.stack.deallocate()
    self.lastMatched.deallocate()
    self.textBuffer.deallocate()
    self.counters.deallocate()
  }

  var location: String {
    var names = (0..<self.counters[0]).map { self.table.name(of: self.stack[$0 + 1]) }
    if self.counters[1] > 0 { names.append(self.unlistedName) }
    if self.counters[1] > 1 { names.append("…") }
    return names.joined(separator: "/")
  }

  func start(_ element: XMLOpening) throws {
    self.counters[2] = 0
    self.counters[3] = 0
    if self.counters[1] > 0 {
      self.counters[1] += 1
      return
    }
    let listed = self.counters[0]
    let node = self.child(of: self.stack[listed], element.localName, element.nameLength)
    guard node >= 0 else {
      self.counters[1] = 1
      self.unlistedName = element.name
      if element.depth <= 2 { try self.handler.start(XMLPathTable.unlisted, element) }
      return
    }
    self.counters[0] = listed + 1
    self.stack[listed + 1] = node
    let entry = self.nodes[Int(node)]
    self.counters[3] = entry.keepsText ? 1 : 0
    if entry.action != XMLPathTable.none { try self.handler.start(entry.action, element) }
  }

  func characters(_ bytes: UnsafePointer<xmlChar>, _ length: Int) -> Bool {
    guard self.counters[3] != 0 else { return true }
    let count = self.counters[2]
    guard count + length <= FormatLimits.maxTextBytes else { return false }
    (self.textBuffer + count).update(from: bytes, count: length)
    self.counters[2] = count + length
    return true
  }

  func end(depth: Int) throws {
    // Text after this element belongs to its parent again (kept if the parent keeps text).
    defer { self.counters[2] = 0 }
    if self.counters[1] > 0 {
      self.counters[1] -= 1
      if self.counters[1] == 0 { self.restoreParentText() }
      return
    }
    let listed = self.counters[0]
    let entry = self.nodes[Int(self.stack[listed])]
    self.counters[0] = listed - 1
    self.restoreParentText()
    guard entry.action != XMLPathTable.none else { return }
    let text = entry.keepsText ? XMLWalker.trimmed(UnsafeBufferPointer(start: self.textBuffer, count: self.counters[2])) : ""
    do {
      try self.handler.end(entry.action, text)
    } catch var error as FormatError where error.location.isEmpty {
      // The element that closed, not its parent.
      self.counters[0] = listed
      error.location = self.location
      self.counters[0] = listed - 1
      throw error
    }
  }

  private func restoreParentText() {
    let listed = self.counters[0]
    self.counters[3] = listed > 0 && self.nodes[Int(self.stack[listed])].keepsText ? 1 : 0
  }

  /// The child of `parent` with this name, or -1.
  private func child(of parent: Int32, _ name: UnsafePointer<UInt8>, _ length: Int) -> Int32 {
    let prefix = XMLPathTable.prefix(name, length)
    let last = self.lastMatched[Int(parent)]
    if last >= 0 {
      let next = self.nodes[Int(last)].nextSibling
      if next >= 0, self.matches(next, name, length, prefix) {
        self.lastMatched[Int(parent)] = next
        return next
      }
    }
    var child = self.nodes[Int(parent)].firstChild
    while child >= 0 {
      if self.matches(child, name, length, prefix) {
        self.lastMatched[Int(parent)] = child
        return child
      }
      child = self.nodes[Int(child)].nextSibling
    }
    return -1
  }

  @inline(__always)
  private func matches(_ index: Int32, _ name: UnsafePointer<UInt8>, _ length: Int, _ prefix: UInt64) -> Bool {
    let node = self.nodes[Int(index)]
    guard node.nameCount == length, node.prefix == prefix else { return false }
    return length <= 8 || memcmp(self.names.baseAddress! + node.nameStart + 8, name + 8, length - 8) == 0
  }
}
