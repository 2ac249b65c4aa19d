import BankLinkCore
import BankLinkStore
import Foundation

/// The one format of every `page_token` this server issues.
///
/// A token is URL-safe base64 without padding of a short record: a format byte, the list the
/// token belongs to, then the position in that list (a key, a sequence, or a list's own fields)
/// in the store's record encoding. Tokens are opaque to clients: a token from another list, a
/// token edited by hand or one from an older format is refused as `INVALID_ARGUMENT` naming
/// `page_token`, never reinterpreted. Tokens do not outlive a format change; a client that meets
/// the refusal starts again from the first page.
enum PageToken {
  static let format: UInt8 = 2

  /// The list a token continues.
  enum List: UInt8 {
    case accounts = 1
    case transactions = 2
    case payments = 3
    case pendingApprovals = 4
    case principals = 5
    case auditEntries = 6
    case alerts = 7
    case shadowDifferences = 8
    case statements = 9
    case statementEntries = 10
    case reconciliationReport = 11
  }

  static func encode(_ list: List, _ position: (inout RecordWriter) -> Void) -> String {
    var writer = RecordWriter(capacity: 64)
    writer.write(Self.format)
    writer.write(list.rawValue)
    position(&writer)
    return Data(writer.bytes).base64EncodedString()
      .replacingOccurrences(of: "+", with: "-")
      .replacingOccurrences(of: "/", with: "_")
      .replacingOccurrences(of: "=", with: "")
  }

  /// The position in `list`, or INVALID_ARGUMENT for anything this server did not issue for it.
  static func decode<Position>(
    _ token: String, _ list: List, _ position: (inout RecordReader) throws -> Position?
  ) throws -> Position {
    let refused = APIError.invalidArgument("page_token", "not a token issued by this server for this list")
    guard token.utf8.count <= Limits.maxPageTokenLength else { throw refused }
    var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while base64.utf8.count % 4 != 0 { base64 += "=" }
    guard let data = Data(base64Encoded: base64) else { throw refused }
    var reader = RecordReader(Array(data))
    do {
      guard try reader.readUInt8() == Self.format, try reader.readUInt8() == list.rawValue,
        let decoded = try position(&reader)
      else { throw refused }
      try reader.finish()
      return decoded
    } catch {
      throw refused
    }
  }

  // MARK: Lists ordered by a string key (payment ids, account ids, identities)

  static func encode(_ list: List, after key: String) -> String {
    Self.encode(list) { $0.write(key) }
  }

  /// The key a page continues after; at most `maxBytes` bytes and never empty.
  static func key(_ token: String, _ list: List, maxBytes: Int) throws -> String {
    try Self.decode(token, list) { reader in
      let key = try reader.readString()
      return key.isEmpty || key.utf8.count > maxBytes ? nil : key
    }
  }

  // MARK: Lists ordered by a sequence (audit entries, alerts)

  static func encode(_ list: List, after sequence: UInt64) -> String {
    Self.encode(list) { $0.write(sequence) }
  }

  static func sequence(_ token: String, _ list: List) throws -> UInt64 {
    try Self.decode(token, list) { try $0.readUInt64() }
  }
}
