import BankLinkCore
import BankLinkStore

/// A burst of rejections: many payments refused by the bank in a short window usually means a
/// problem on our side of the connection (a message format, a mandate, a cut-off), not one bad
/// creditor account, and needs a person before the next payment run. Each rejection already
/// raises its own `bank_rejection` alert; this raises one `rejection_burst` per episode on top.
///
/// The recent rejection times and whether an episode is open are kept in `meta`
/// (`rejection_burst`) and written in the rejection's own transaction, so a restart neither
/// forgets a burst nor raises it twice.
public enum RejectionBurst {
  static let key = Array("rejection_burst".utf8)
  static let recordFormat: UInt8 = 1

  /// Notes one rejection or return applied in `txn`; raises the burst alert when it makes
  /// `Limits.rejectionBurstCount` within the window and no episode is open.
  public static func note(paymentID: String, accountID: String, at now: Instant, txn: inout WriteTransaction) throws {
    var open = false
    var times: [Int64] = []
    if let bytes = try txn.get(Self.key, in: .meta) {
      var reader = RecordReader(bytes)
      guard try reader.readUInt8() == Self.recordFormat else {
        throw StoreError(code: .corrupted, message: "unknown rejection burst record format")
      }
      open = try reader.readUInt8() == 1
      for _ in 0..<min(Int(try reader.readUInt32()), Limits.rejectionBurstCount) { times.append(try reader.readInt64()) }
      try reader.finish()
    }
    let nowMs = now.millisecondsSinceEpoch
    let windowMs = Limits.rejectionBurstWindowSeconds * 1_000
    times = times.filter { nowMs - $0 < windowMs && $0 <= nowMs }
    times.append(nowMs)
    if times.count > Limits.rejectionBurstCount { times.removeFirst(times.count - Limits.rejectionBurstCount) }
    if !open && times.count >= Limits.rejectionBurstCount {
      open = true
      let minutes = Limits.rejectionBurstWindowSeconds / 60
      try AlertLog.raise(
        &txn, at: now, severity: .critical, kind: .rejectionBurst, paymentID: paymentID, accountID: accountID,
        message: "the bank rejected or returned \(times.count) payments within \(minutes) minutes; check the connection's formats and mandates before the next run",
        details: ["count": String(times.count), "window_seconds": String(Limits.rejectionBurstWindowSeconds), "last_payment": paymentID])
    } else if open && times.count <= Limits.rejectionBurstCount / 2 {
      open = false
    }
    var writer = RecordWriter(capacity: 16 + 8 * times.count)
    writer.write(Self.recordFormat)
    writer.write(UInt8(open ? 1 : 0))
    writer.write(UInt32(times.count))
    for time in times { writer.write(time) }
    try txn.put(Self.key, writer.bytes, in: .meta)
  }
}
