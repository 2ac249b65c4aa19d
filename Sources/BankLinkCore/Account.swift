/// A point in time as milliseconds since the Unix epoch (UTC). The domain core never reads a
/// clock: callers pass the current instant in.
public struct Instant: Sendable, Hashable, Comparable, CustomStringConvertible {
  public var millisecondsSinceEpoch: Int64

  public init(millisecondsSinceEpoch: Int64) {
    self.millisecondsSinceEpoch = millisecondsSinceEpoch
  }

  public static func < (lhs: Instant, rhs: Instant) -> Bool {
    lhs.millisecondsSinceEpoch < rhs.millisecondsSinceEpoch
  }

  public func adding(milliseconds: Int64) -> Instant {
    Instant(millisecondsSinceEpoch: self.millisecondsSinceEpoch + milliseconds)
  }

  /// Milliseconds from `other` to `self` (negative when `other` is later).
  public func milliseconds(since other: Instant) -> Int64 {
    self.millisecondsSinceEpoch - other.millisecondsSinceEpoch
  }

  public var description: String { "\(self.millisecondsSinceEpoch)ms" }

  /// Midnight UTC of an ISO 8601 calendar date (`2026-12-03`): the inverse of ``isoDate``. Nil
  /// when `text` is not a valid date.
  public init?(isoDate text: String) {
    guard PaymentValidation.isISODate(text) else { return nil }
    let parts = text.split(separator: "-").compactMap { Int64($0) }
    // Days-from-civil (Howard Hinnant's algorithm), the inverse of the one in `isoDate`.
    let (year, month, day) = (parts[0], parts[1], parts[2])
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    self.init(millisecondsSinceEpoch: (era * 146_097 + doe - 719_468) * 86_400_000)
  }

  /// The UTC calendar date of this instant as ISO 8601 `YYYY-MM-DD`.
  public var isoDate: String {
    let days = Int64((Double(self.millisecondsSinceEpoch) / 86_400_000).rounded(.down))
    // Civil-from-days (Howard Hinnant's algorithm), exact for the proleptic Gregorian calendar.
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
    func pad(_ value: Int64, _ width: Int) -> String {
      let text = String(value)
      return String(repeating: "0", count: max(0, width - text.count)) + text
    }
    return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))"
  }

  /// ISO 8601 `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds).
  public var isoTimestamp: String {
    let milliseconds = self.millisecondsSinceEpoch
    var seconds = milliseconds >= 0 ? milliseconds / 1000 : (milliseconds - 999) / 1000
    seconds = ((seconds % 86_400) + 86_400) % 86_400
    func pad(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
    return "\(self.isoDate)T\(pad(seconds / 3600)):\(pad(seconds / 60 % 60)):\(pad(seconds % 60))Z"
  }
}

/// Lifecycle status of an account at its bank.
public enum AccountStatus: String, Sendable, Hashable, CaseIterable {
  case active
  /// Debits are refused by the bank (e.g. a judicial freeze).
  case frozen
  case closed
}

/// An enterprise account at a bank.
public struct Account: Sendable, Hashable {
  /// Stable identifier used by every call (e.g. "icbc-cny-001").
  public var id: String
  /// The bank's account number (domestic format).
  public var number: String
  /// IBAN where the account has one; empty otherwise.
  public var iban: String
  public var displayName: String
  public var bankBIC: String
  public var bankName: String
  public var currency: CurrencyCode
  public var status: AccountStatus

  public init(
    id: String, number: String, iban: String = "", displayName: String, bankBIC: String, bankName: String,
    currency: CurrencyCode, status: AccountStatus = .active
  ) {
    self.id = id
    self.number = number
    self.iban = iban
    self.displayName = displayName
    self.bankBIC = bankBIC
    self.bankName = bankName
    self.currency = currency
    self.status = status
  }
}

/// The booked balance of an account as the bank reported it.
public struct LedgerBalance: Sendable, Hashable {
  public var accountID: String
  /// Booked balance; may be negative for an overdraft.
  public var ledger: Money
  /// The bank's time for the balance.
  public var asOf: Instant

  public init(accountID: String, ledger: Money, asOf: Instant) {
    self.accountID = accountID
    self.ledger = ledger
    self.asOf = asOf
  }
}

/// Whether money left or arrived on an account.
public enum Direction: String, Sendable, Hashable, CaseIterable {
  case debit
  case credit
}

/// A party on the other side of a transaction.
public struct Counterparty: Sendable, Hashable {
  public var name: String
  public var accountNumber: String
  public var bankBIC: String
  public var bankName: String

  public init(name: String, accountNumber: String, bankBIC: String, bankName: String) {
    self.name = name
    self.accountNumber = accountNumber
    self.bankBIC = bankBIC
    self.bankName = bankName
  }
}

/// A booked bank entry.
public struct BookedTransaction: Sendable, Hashable {
  /// Unique per bank; stable across re-deliveries (the cache deduplicates on it).
  public var id: String
  public var accountID: String
  /// Positive amount; see `direction`.
  public var amount: Money
  public var direction: Direction
  public var bookingTime: Instant
  /// ISO 8601 date on which the entry takes value.
  public var valueDate: String
  public var counterparty: Counterparty
  public var endToEndID: String
  public var bankReference: String
  public var description: String

  public init(
    id: String, accountID: String, amount: Money, direction: Direction, bookingTime: Instant, valueDate: String,
    counterparty: Counterparty, endToEndID: String, bankReference: String, description: String
  ) {
    self.id = id
    self.accountID = accountID
    self.amount = amount
    self.direction = direction
    self.bookingTime = bookingTime
    self.valueDate = valueDate
    self.counterparty = counterparty
    self.endToEndID = endToEndID
    self.bankReference = bankReference
    self.description = description
  }

  /// The signed effect on the ledger balance, in minor units.
  public var signedMinorUnits: Int64 {
    self.direction == .credit ? self.amount.minorUnits : -self.amount.minorUnits
  }
}
