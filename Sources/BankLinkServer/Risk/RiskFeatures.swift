import BankLinkCore
import BankLinkStore
import Foundation

/// What the rules know about a payment's account besides the payment itself, computed inside
/// the creating transaction from what earlier payments left in LMDB (this payment not included)
/// and recorded with the decision, so that a backtest re-evaluates a candidate rule set on
/// exactly what the rules saw.
public struct FeatureSnapshot: Sendable, Hashable {
  public var count1h: Int64 = 0
  public var count24h: Int64 = 0
  public var count7d: Int64 = 0
  public var sum1h: Int64 = 0
  public var sum24h: Int64 = 0
  public var sum7d: Int64 = 0
  /// No earlier payment from this account went to this creditor.
  public var firstTimeCreditor = true
  /// Whole days since the creditor was first paid from this account; -1 when never.
  public var daysSinceCreditorFirstPaid: Int64 = -1
  /// Earlier payments to the same creditor with the same amount within 24 hours.
  public var duplicates24h: Int64 = 0
  /// Hour of day (0–23) and weekday (0 = Sunday) of the creation time in the risk time zone.
  public var hour: Int64 = 0
  public var weekday: Int64 = 0
  /// Payments in the account's amount baseline.
  public var historyCount: Int64 = 0
  /// Exponentially weighted mean and standard deviation of earlier amounts (minor units).
  public var amountMean: Double = 0
  public var amountStddev: Double = 0
  /// (amount − mean) / stddev; 0 until the baseline has ``RiskFeatures/minimumHistory`` payments.
  public var amountZScore: Double = 0
  /// The account's balances when the payment was created.
  public var ledger: Int64 = 0
  public var available: Int64 = 0

  public init() {}

  static let recordFormat: UInt8 = 1

  func write(to writer: inout RecordWriter) {
    writer.write(Self.recordFormat)
    for value in [self.count1h, self.count24h, self.count7d, self.sum1h, self.sum24h, self.sum7d] { writer.write(value) }
    writer.write(UInt8(self.firstTimeCreditor ? 1 : 0))
    for value in [self.daysSinceCreditorFirstPaid, self.duplicates24h, self.hour, self.weekday, self.historyCount] { writer.write(value) }
    for value in [self.amountMean, self.amountStddev, self.amountZScore] { writer.write(value.bitPattern) }
    writer.write(self.ledger)
    writer.write(self.available)
  }

  init(from reader: inout RecordReader) throws {
    guard try reader.readUInt8() == Self.recordFormat else { throw StoreError(code: .corrupted, message: "unknown feature record format") }
    self.count1h = try reader.readInt64()
    self.count24h = try reader.readInt64()
    self.count7d = try reader.readInt64()
    self.sum1h = try reader.readInt64()
    self.sum24h = try reader.readInt64()
    self.sum7d = try reader.readInt64()
    self.firstTimeCreditor = try reader.readUInt8() == 1
    self.daysSinceCreditorFirstPaid = try reader.readInt64()
    self.duplicates24h = try reader.readInt64()
    self.hour = try reader.readInt64()
    self.weekday = try reader.readInt64()
    self.historyCount = try reader.readInt64()
    self.amountMean = Double(bitPattern: try reader.readUInt64())
    self.amountStddev = Double(bitPattern: try reader.readUInt64())
    self.amountZScore = Double(bitPattern: try reader.readUInt64())
    self.ledger = try reader.readInt64()
    self.available = try reader.readInt64()
  }
}

/// The per-account features kept incrementally in LMDB, read and updated in the transaction
/// that creates each payment.
///
/// Windows are counted in buckets: the 1-hour window in minute buckets, the 24-hour and 7-day
/// windows in hour buckets (so "24 h" means the current hour and the 23 before it). Reading a
/// window is one cursor walk over at most 60 or 168 buckets, whatever the account's volume.
enum RiskFeatures {
  /// Weight of the newest amount in the exponentially weighted baseline.
  static let baselineWeight = 0.1
  /// Payments the baseline needs before `amount_zscore` is reported (0 before).
  static let minimumHistory: Int64 = 5
  /// Recent times kept per (account, creditor, amount) for duplicate detection.
  static let maxRecentPerKey = 16
  static let duplicateWindowMilliseconds: Int64 = 86_400_000

  static let minuteMilliseconds: Int64 = 60_000
  static let hourMilliseconds: Int64 = 3_600_000

  /// A creditor as the features know it: its account (IBAN or number, spaces removed, upper
  /// case) and BIC — the name is left out (banks pay by account, and names vary in spelling).
  static func creditorKey(_ creditor: Creditor) -> [UInt8] {
    let account = RiskVariables.normalised(creditor.iban.isEmpty ? creditor.accountNumber : creditor.iban)
    return Array(account.utf8) + [0] + Array(RiskVariables.normalisedBIC(creditor.bic).utf8)
  }

  private static func prefix(_ accountID: String) -> [UInt8] { Array(accountID.utf8) + [0] }

  private static func bucketKey(_ accountID: String, _ granularity: UInt8, _ index: Int64) -> [UInt8] {
    var writer = RecordWriter(capacity: 32)
    writer.writeRaw(Self.prefix(accountID))
    writer.write(granularity)
    writer.write(index)
    return writer.bytes
  }

  /// Count and sum of the buckets of `granularity` from `first` through `last`.
  private static func window(
    _ accountID: String, _ granularity: UInt8, from first: Int64, through last: Int64, in txn: some ReadableTransaction
  ) throws -> (count: Int64, sum: Int64) {
    let start = Self.bucketKey(accountID, granularity, first)
    let end = Self.bucketKey(accountID, granularity, last)
    var count: Int64 = 0
    var sum: Int64 = 0
    try txn.scan(.riskBuckets, from: start) { key, value in
      guard key.lexicographicallyPrecedes(end) || key == end else { return false }
      var reader = RecordReader(value)
      count &+= try reader.readInt64()
      sum &+= try reader.readInt64()
      return true
    }
    return (count, sum)
  }

  /// The features of a payment of `amount` to `creditor` from `accountID` at `now`, before it.
  static func snapshot(
    accountID: String, creditor: Creditor, amount: Int64, at now: Instant, timeZone: TimeZone, ledger: Int64, available: Int64,
    in txn: some ReadableTransaction
  ) throws -> FeatureSnapshot {
    var features = FeatureSnapshot()
    features.ledger = ledger
    features.available = available
    let ms = now.millisecondsSinceEpoch
    let minute = ms / Self.minuteMilliseconds
    let hour = ms / Self.hourMilliseconds
    (features.count1h, features.sum1h) = try Self.window(accountID, UInt8(ascii: "m"), from: minute - 59, through: minute, in: txn)
    (features.count24h, features.sum24h) = try Self.window(accountID, UInt8(ascii: "h"), from: hour - 23, through: hour, in: txn)
    (features.count7d, features.sum7d) = try Self.window(accountID, UInt8(ascii: "h"), from: hour - 167, through: hour, in: txn)

    let creditorKey = Self.prefix(accountID) + Self.creditorKey(creditor)
    if let (first, _) = try Self.pair(creditorKey, in: .riskCreditors, txn) {
      features.firstTimeCreditor = false
      features.daysSinceCreditorFirstPaid = max(0, (ms - first) / 86_400_000)
    }
    if let bytes = try txn.get(Self.recentKey(creditorKey, amount), in: .riskRecent) {
      features.duplicates24h = Int64(try Self.decodeTimes(bytes).filter { ms - $0 < Self.duplicateWindowMilliseconds }.count)
    }
    let local = ms / 1000 + Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(ms / 1000))))
    let (days, secondOfDay) = (local >= 0 ? local / 86_400 : (local - 86_399) / 86_400, ((local % 86_400) + 86_400) % 86_400)
    features.hour = secondOfDay / 3600
    features.weekday = ((days + 4) % 7 + 7) % 7  // 1970-01-01 was a Thursday

    if let bytes = try txn.get(Array(accountID.utf8), in: .riskBaselines) {
      var reader = RecordReader(bytes)
      features.historyCount = try reader.readInt64()
      features.amountMean = Double(bitPattern: try reader.readUInt64())
      let variance = Double(bitPattern: try reader.readUInt64())
      features.amountStddev = variance > 0 ? variance.squareRoot() : 0
      if features.historyCount >= Self.minimumHistory, features.amountStddev > 0 {
        features.amountZScore = (Double(amount) - features.amountMean) / features.amountStddev
      }
    }
    return features
  }

  /// Adds a payment to the account's features (after its decision was taken on them).
  static func record(
    accountID: String, creditor: Creditor, amount: Int64, at now: Instant, txn: inout WriteTransaction
  ) throws {
    let ms = now.millisecondsSinceEpoch
    for (granularity, index) in [(UInt8(ascii: "m"), ms / Self.minuteMilliseconds), (UInt8(ascii: "h"), ms / Self.hourMilliseconds)] {
      let key = Self.bucketKey(accountID, granularity, index)
      let (count, sum) = try Self.pair(key, in: .riskBuckets, txn) ?? (0, 0)
      try txn.put(key, Self.pair(count &+ 1, sum &+ amount), in: .riskBuckets)
    }

    let creditorKey = Self.prefix(accountID) + Self.creditorKey(creditor)
    let (first, paid) = try Self.pair(creditorKey, in: .riskCreditors, txn) ?? (ms, 0)
    try txn.put(creditorKey, Self.pair(first, paid &+ 1), in: .riskCreditors)

    let recentKey = Self.recentKey(creditorKey, amount)
    var times = try txn.get(recentKey, in: .riskRecent).map(Self.decodeTimes) ?? []
    times = times.filter { ms - $0 < Self.duplicateWindowMilliseconds }
    times.append(ms)
    var recent = RecordWriter(capacity: 8 * Self.maxRecentPerKey)
    for time in times.suffix(Self.maxRecentPerKey) { recent.write(time) }
    try txn.put(recentKey, recent.bytes, in: .riskRecent)

    var count: Int64 = 0
    var mean = 0.0
    var variance = 0.0
    if let bytes = try txn.get(Array(accountID.utf8), in: .riskBaselines) {
      var reader = RecordReader(bytes)
      count = try reader.readInt64()
      mean = Double(bitPattern: try reader.readUInt64())
      variance = Double(bitPattern: try reader.readUInt64())
    }
    let x = Double(amount)
    if count == 0 {
      mean = x
      variance = 0
    } else {
      // Exponentially weighted mean and variance (West's incremental form).
      let difference = x - mean
      let increment = Self.baselineWeight * difference
      mean += increment
      variance = (1 - Self.baselineWeight) * (variance + difference * increment)
    }
    var baseline = RecordWriter(capacity: 24)
    baseline.write(count &+ 1)
    baseline.write(mean.bitPattern)
    baseline.write(variance.bitPattern)
    try txn.put(Array(accountID.utf8), baseline.bytes, in: .riskBaselines)
  }

  /// The two integers of a bucket (count, sum) or creditor (first paid, count) record.
  private static func pair(_ key: [UInt8], in database: Database, _ txn: some ReadableTransaction) throws -> (Int64, Int64)? {
    guard let bytes = try txn.get(key, in: database) else { return nil }
    var reader = RecordReader(bytes)
    return (try reader.readInt64(), try reader.readInt64())
  }

  private static func pair(_ first: Int64, _ second: Int64) -> [UInt8] {
    var writer = RecordWriter(capacity: 16)
    writer.write(first)
    writer.write(second)
    return writer.bytes
  }

  private static func recentKey(_ creditorKey: [UInt8], _ amount: Int64) -> [UInt8] {
    var writer = RecordWriter(capacity: creditorKey.count + 9)
    writer.writeRaw(creditorKey)
    writer.write(UInt8(0))
    writer.write(amount)
    return writer.bytes
  }

  private static func decodeTimes(_ bytes: [UInt8]) throws -> [Int64] {
    var reader = RecordReader(bytes)
    var times: [Int64] = []
    while !reader.isAtEnd { times.append(try reader.readInt64()) }
    return times
  }
}
