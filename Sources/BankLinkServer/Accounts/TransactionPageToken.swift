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
  var accountID: String
  var start: Instant
  var end: Instant
  /// 0 both, 1 debit, 2 credit.
  var direction: UInt8
  var after: AccountCache.Position

  var encoded: String {
    PageToken.encode(.transactions) { writer in
      writer.write(self.accountID)
      writer.write(self.start.millisecondsSinceEpoch)
      writer.write(self.end.millisecondsSinceEpoch)
      writer.write(self.direction)
      writer.write(self.after.bookingTime.millisecondsSinceEpoch)
      writer.write(self.after.sequence)
    }
  }

  /// INVALID_ARGUMENT (`page_token`) for anything this server did not issue.
  init(encoded text: String) throws {
    self = try PageToken.decode(text, .transactions) { reader in
      let token = TransactionPageToken(
        accountID: try reader.readString(),
        start: Instant(millisecondsSinceEpoch: try reader.readInt64()),
        end: Instant(millisecondsSinceEpoch: try reader.readInt64()),
        direction: try reader.readUInt8(),
        after: AccountCache.Position(
          bookingTime: Instant(millisecondsSinceEpoch: try reader.readInt64()),
          sequence: try reader.readUInt64()))
      return token.direction <= 2 && token.start <= token.end ? token : nil
    }
  }

  init(accountID: String, start: Instant, end: Instant, direction: UInt8, after: AccountCache.Position) {
    self.accountID = accountID
    self.start = start
    self.end = end
    self.direction = direction
    self.after = after
  }
}
