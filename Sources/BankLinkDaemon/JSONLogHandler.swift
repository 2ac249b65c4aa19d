import Foundation
import Logging
import Synchronization

/// One JSON object per line on standard error (`log_format: "json"`), for journald, Loki or any
/// log pipeline: `time` (RFC 3339, UTC, milliseconds), `level`, `logger`, `message`, then the
/// metadata's keys (`request_id`, `identity`, `method`, `payment_id`, … where the line has them).
/// Keys are sorted; values are strings, escaped as JSON requires, so a metadata value cannot
/// start a new line or forge a field.
public struct JSONLogHandler: LogHandler {
  public var logLevel: Logger.Level = .info
  public var metadata: Logger.Metadata = [:]
  public var metadataProvider: Logger.MetadataProvider?
  let label: String
  let output: @Sendable (String) -> Void

  public init(label: String, metadataProvider: Logger.MetadataProvider? = nil, output: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
    self.label = label
    self.metadataProvider = metadataProvider
    self.output = output
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { self.metadata[key] }
    set { self.metadata[key] = newValue }
  }

  /// Serialises whole lines: two threads logging at once never interleave within a line.
  private static let lock = Mutex(())

  public static let standardError: @Sendable (String) -> Void = { line in
    Self.lock.withLock { _ in FileHandle.standardError.write(Data(line.utf8)) }
  }

  public func log(
    level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?, source: String, file: String, function: String,
    line: UInt
  ) {
    var fields = self.metadata
    if let provided = self.metadataProvider?.get() { fields.merge(provided) { _, new in new } }
    if let explicit { fields.merge(explicit) { _, new in new } }
    var out = "{\"time\":\"" + Self.timestamp(Date()) + "\",\"level\":\"" + level.rawValue + "\",\"logger\":"
    Self.appendString(self.label, to: &out)
    out += ",\"message\":"
    Self.appendString(message.description, to: &out)
    for key in fields.keys.sorted() where !["time", "level", "logger", "message"].contains(key) {
      out += ","
      Self.appendString(key, to: &out)
      out += ":"
      Self.appendString(Self.flatten(fields[key]!), to: &out)
    }
    out += "}\n"
    self.output(out)
  }

  static func flatten(_ value: Logger.Metadata.Value) -> String {
    switch value {
    case .string(let text): text
    case .stringConvertible(let convertible): convertible.description
    case .array(let values): "[" + values.map(Self.flatten).joined(separator: ", ") + "]"
    case .dictionary(let values): "{" + values.keys.sorted().map { "\($0): \(Self.flatten(values[$0]!))" }.joined(separator: ", ") + "}"
    }
  }

  static func appendString(_ text: String, to out: inout String) {
    out += "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029:
        out += String(format: "\\u%04x", scalar.value)
      default: out.unicodeScalars.append(scalar)
      }
    }
    out += "\""
  }

  static func timestamp(_ date: Date) -> String {
    date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
  }
}
