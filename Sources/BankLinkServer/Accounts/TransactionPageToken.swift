import BankLinkCore
import BankLinkStore
import Foundation

/// The opaque `page_token` of ListTransactions.
///
/// It freezes the query on its first page — account, time range (an open end becomes "now" at
/// that moment), direction — and records the position of the last entry returned. Later pages
/// continue strictly after that position inside the frozen range, so entries that arrive while a
/// client pages never cause duplicates or shift entries across page boundaries (no gaps).
struct TransactionPageToken: Equatable {
  static let format: UInt8 = 1

  var accountID: String
  var start: Instant
  var end: Instant
  /// 0 both, 1 debit, 2 credit.
  var direction: UInt8
  var after: AccountCache.Position

  var encoded: String {
    var writer = RecordWriter(capacity: 64)
    writer.write(Self.format)
    writer.write(self.accountID)
    writer.write(self.start.millisecondsSinceEpoch)
    writer.write(self.end.millisecondsSinceEpoch)
    writer.write(self.direction)
    writer.write(self.after.bookingTime.millisecondsSinceEpoch)
    writer.write(self.after.sequence)
    return Data(writer.bytes).base64EncodedString()
      .replacingOccurrences(of: "+", with: "-")
      .replacingOccurrences(of: "/", with: "_")
      .replacingOccurrences(of: "=", with: "")
  }

  /// Nil for anything this server did not issue.
  init?(encoded text: String) {
    guard text.count <= Limits.maxPageTokenLength else { return nil }
    var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while base64.count % 4 != 0 { base64 += "=" }
    guard let data = Data(base64Encoded: base64) else { return nil }
    var reader = RecordReader(Array(data))
    do {
      guard try reader.readUInt8() == Self.format else { return nil }
      self.accountID = try reader.readString()
      self.start = Instant(millisecondsSinceEpoch: try reader.readInt64())
      self.end = Instant(millisecondsSinceEpoch: try reader.readInt64())
      self.direction = try reader.readUInt8()
      self.after = AccountCache.Position(
        bookingTime: Instant(millisecondsSinceEpoch: try reader.readInt64()),
        sequence: try reader.readUInt64()
      )
      try reader.finish()
    } catch {
      return nil
    }
    guard self.direction <= 2, self.start <= self.end else { return nil }
  }

  init(accountID: String, start: Instant, end: Instant, direction: UInt8, after: AccountCache.Position) {
    self.accountID = accountID
    self.start = start
    self.end = end
    self.direction = direction
    self.after = after
  }
}
