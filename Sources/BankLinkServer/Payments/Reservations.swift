import BankLinkCore
import BankLinkStore

/// Every piece of reservation arithmetic, in one place.
///
/// A payment reserves its amount against its debtor account from creation until the cached
/// ledger shows the money gone (settled and booked, in a balance that includes the debit) or
/// the payment ends without paying. Available = cached ledger − reserved; it is never
/// overstated:
///
/// - a settled payment's reservation is released only in the same transaction as a cached
///   ledger balance whose as-of time is at or after the booking of its debit (so between a
///   transaction sync and a balance sync, the money is counted twice, never zero times);
/// - a cached balance is never replaced by one with an earlier as-of time;
/// - the per-account total never goes negative and no sum overflows (either is a corrupted
///   store, refused with ``StoreError/Code/corrupted``).
///
/// Databases (see ``Database``): `reservations` (account → total), `payment_reservations`
/// (payment → amount still reserved), `booked_end_to_end` (EndToEndId → booking of the debit),
/// `awaiting_ledger` (account, EndToEndId → booking time of a settled payment's debit that no
/// cached balance includes yet).
enum Reservations {
  // MARK: Reading

  /// Minor units reserved on `accountID` by payments in flight.
  static func reserved(_ accountID: String, _ get: ([UInt8]) throws -> [UInt8]?) throws -> Int64 {
    guard let bytes = try get(Array(accountID.utf8)) else { return 0 }
    var reader = RecordReader(bytes)
    let total = try reader.readInt64()
    guard total >= 0 else {
      throw StoreError(code: .corrupted, message: "negative reservation total on account \(accountID)")
    }
    return total
  }

  /// Ledger − reserved, without overflow.
  static func available(ledger: Int64, reserved: Int64) throws -> Int64 {
    let (value, overflow) = ledger.subtractingReportingOverflow(reserved)
    guard !overflow else {
      throw StoreError(code: .corrupted, message: "available balance overflows: ledger \(ledger) − reserved \(reserved)")
    }
    return value
  }

  static func available(_ accountID: String, txn: WriteTransaction) throws -> Int64 {
    let ledger = try AccountCache.cachedBalance(accountID) { try txn.get($0, in: .balances) }?.balance.ledger.minorUnits ?? 0
    return try available(ledger: ledger, reserved: reserved(accountID) { try txn.get($0, in: .reservations) })
  }

  static func available(_ accountID: String, reading txn: ReadTransaction) throws -> Int64 {
    let ledger = try AccountCache.cachedBalance(accountID) { try txn.get($0, in: .balances) }?.balance.ledger.minorUnits ?? 0
    return try available(ledger: ledger, reserved: reserved(accountID) { try txn.get($0, in: .reservations) })
  }

  // MARK: Reserving and releasing

  private static func adjust(_ accountID: String, by delta: Int64, txn: inout WriteTransaction) throws {
    let current = try reserved(accountID) { try txn.get($0, in: .reservations) }
    let (next, overflow) = current.addingReportingOverflow(delta)
    guard !overflow, next >= 0 else {
      throw StoreError(
        code: .corrupted, message: "reservation total of account \(accountID) would become \(current) + \(delta)")
    }
    var writer = RecordWriter(capacity: 8)
    writer.write(next)
    try txn.put(Array(accountID.utf8), writer.bytes, in: .reservations)
  }

  static func reserve(_ payment: Payment, txn: inout WriteTransaction) throws {
    var amount = RecordWriter(capacity: 8)
    amount.write(payment.instruction.amount.minorUnits)
    try txn.put(Array(payment.id.utf8), amount.bytes, in: .paymentReservations)
    try adjust(payment.instruction.debtorAccountID, by: payment.instruction.amount.minorUnits, txn: &txn)
  }

  /// Releases what `payment` still reserves (nothing if already released). Idempotent.
  private static func release(_ payment: Payment, txn: inout WriteTransaction) throws {
    guard let bytes = try txn.get(Array(payment.id.utf8), in: .paymentReservations) else { return }
    var reader = RecordReader(bytes)
    let amount = try reader.readInt64()
    try txn.delete(Array(payment.id.utf8), in: .paymentReservations)
    try adjust(payment.instruction.debtorAccountID, by: -amount, txn: &txn)
  }

  /// Releases the payment's reservation once it no longer needs one: at once when it ends
  /// without paying; for a settled payment only when the cached balance includes its booked
  /// debit. A settled payment whose debit is booked but not yet in the cached balance is noted
  /// in `awaiting_ledger`, and released by the balance write that includes it
  /// (``releaseIncluded(accountID:asOf:txn:)``). Idempotent; called after every state change
  /// and every booked debit.
  static func releaseIfDue(_ payment: Payment, txn: inout WriteTransaction) throws {
    switch payment.status {
    case .settled:
      guard let booking = try bookedDebit(payment.endToEndID, txn: txn) else { return }
      let asOf = try AccountCache.cachedBalance(payment.instruction.debtorAccountID) { try txn.get($0, in: .balances) }?
        .balance.asOf
      if let asOf, booking <= asOf {
        try release(payment, txn: &txn)
        _ = try txn.delete(awaitingKey(payment.instruction.debtorAccountID, payment.endToEndID), in: .awaitingLedger)
      } else if try txn.get(Array(payment.id.utf8), in: .paymentReservations) != nil {
        var value = RecordWriter(capacity: 8)
        value.write(booking.millisecondsSinceEpoch)
        try txn.put(awaitingKey(payment.instruction.debtorAccountID, payment.endToEndID), value.bytes, in: .awaitingLedger)
      }
    default:
      if !payment.status.holdsReservation { try release(payment, txn: &txn) }
    }
  }

  /// Called in the transaction that stores a balance of `accountID` as of `asOf`: releases every
  /// settled payment whose debit that balance includes.
  static func releaseIncluded(accountID: String, asOf: Instant, txn: inout WriteTransaction) throws {
    let prefix = Array(accountID.utf8) + [0]
    var included: [[UInt8]] = []
    try txn.scan(.awaitingLedger, from: prefix) { key, value in
      guard key.starts(with: prefix) else { return false }
      var reader = RecordReader(value)
      if try reader.readInt64() <= asOf.millisecondsSinceEpoch { included.append(key) }
      return true
    }
    for key in included {
      let endToEndID = Array(key.dropFirst(prefix.count))
      if let paymentID = try txn.get(endToEndID, in: .paymentsByEndToEnd),
        let bytes = try txn.get(paymentID, in: .payments)
      {
        try release(try Payment(record: bytes), txn: &txn)
      }
      try txn.delete(key, in: .awaitingLedger)
    }
  }

  // MARK: Booked debits

  /// Records that the cached ledger history holds a debit carrying `endToEndID`, booked at
  /// `bookingTime`.
  static func noteBookedDebit(_ endToEndID: String, at bookingTime: Instant, txn: inout WriteTransaction) throws {
    // Keep the latest booking seen: a balance must include every debit carrying the id.
    if let known = try bookedDebit(endToEndID, txn: txn), known >= bookingTime { return }
    var value = RecordWriter(capacity: 9)
    value.write(UInt8(2))
    value.write(bookingTime.millisecondsSinceEpoch)
    try txn.put(Array(endToEndID.utf8), value.bytes, in: .bookedEndToEnd)
  }

  /// When the debit carrying `endToEndID` was booked, if the cache holds it. Records of the
  /// first format (`[1]`, no time) were written by builds that released at once; they count as
  /// booked at the epoch, i.e. included in any balance.
  static func bookedDebit(_ endToEndID: String, txn: WriteTransaction) throws -> Instant? {
    guard let bytes = try txn.get(Array(endToEndID.utf8), in: .bookedEndToEnd) else { return nil }
    var reader = RecordReader(bytes)
    switch try reader.readUInt8() {
    case 1: return Instant(millisecondsSinceEpoch: 0)
    case 2: return Instant(millisecondsSinceEpoch: try reader.readInt64())
    default: throw StoreError(code: .corrupted, message: "unknown booked-debit record for \(endToEndID)")
    }
  }

  static func awaitingKey(_ accountID: String, _ endToEndID: String) -> [UInt8] {
    Array(accountID.utf8) + [0] + Array(endToEndID.utf8)
  }
}
