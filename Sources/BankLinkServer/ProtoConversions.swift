import BankLinkCore
import BankLinkJournal
import Foundation
import BankLinkProto
import SwiftProtobuf

/// Mapping between domain values and banklink.v1 messages.
extension Instant {
  var timestamp: Google_Protobuf_Timestamp {
    let milliseconds = self.millisecondsSinceEpoch
    let seconds = milliseconds >= 0 ? milliseconds / 1000 : (milliseconds - 999) / 1000
    return Google_Protobuf_Timestamp(seconds: seconds, nanos: Int32((milliseconds - seconds * 1000) * 1_000_000))
  }

  /// Nil when the timestamp is outside the range protobuf allows (years 1-9999) or malformed.
  init?(_ timestamp: Google_Protobuf_Timestamp) {
    guard (-62_135_596_800...253_402_300_799).contains(timestamp.seconds),
      (0..<1_000_000_000).contains(timestamp.nanos)
    else { return nil }
    self.init(millisecondsSinceEpoch: timestamp.seconds * 1000 + Int64(timestamp.nanos / 1_000_000))
  }
}

extension Google_Protobuf_Duration {
  init(milliseconds: Int64) {
    self.init(seconds: milliseconds / 1000, nanos: Int32((milliseconds % 1000) * 1_000_000))
  }
}

extension Banklink_V1_Money {
  init(_ money: Money) {
    self.init()
    self.minorUnits = money.minorUnits
    self.currencyCode = money.currency.code
  }
}

extension Banklink_V1_Account {
  init(_ account: Account) {
    self.init()
    self.accountID = account.id
    self.accountNumber = account.number
    self.iban = account.iban
    self.displayName = account.displayName
    self.bankBic = account.bankBIC
    self.bankName = account.bankName
    self.currencyCode = account.currency.code
    self.status =
      switch account.status {
      case .active: .active
      case .frozen: .frozen
      case .closed: .closed
      }
  }
}

extension Banklink_V1_Counterparty {
  init(_ counterparty: Counterparty) {
    self.init()
    self.name = counterparty.name
    self.accountNumber = counterparty.accountNumber
    self.bankBic = counterparty.bankBIC
    self.bankName = counterparty.bankName
  }
}

extension Banklink_V1_Transaction {
  init(_ transaction: BookedTransaction) {
    self.init()
    self.transactionID = transaction.id
    self.accountID = transaction.accountID
    self.amount = Banklink_V1_Money(transaction.amount)
    self.direction = transaction.direction == .credit ? .credit : .debit
    self.bookingTime = transaction.bookingTime.timestamp
    self.valueDate = transaction.valueDate
    self.counterparty = Banklink_V1_Counterparty(transaction.counterparty)
    self.endToEndID = transaction.endToEndID
    self.bankReference = transaction.bankReference
    self.description_p = transaction.description
  }
}

extension Banklink_V1_Receipt {
  init(_ receipt: JournalReceipt) {
    self.init()
    self.journalSequence = receipt.sequence
    self.entryHash = Data(receipt.entryHash)
  }
}

extension Banklink_V1_AuditEntry {
  init(_ entry: AuditEntry) {
    self.init()
    self.sequence = entry.sequence
    self.time = entry.time.timestamp
    self.principal = entry.principal
    self.action = entry.action
    self.object = entry.object
    self.payloadDigest = Data(entry.payloadDigest)
    self.previousHash = Data(entry.previousHash)
    self.entryHash = Data(entry.entryHash)
    self.payload = entry.payload
  }
}
