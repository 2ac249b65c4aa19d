import BankLinkCore
import BankLinkStore

/// How urgent an alert is. Ordered: a filter on a minimum severity keeps it and those above.
public enum AlertSeverity: Int, Sendable, Hashable, Comparable, CaseIterable {
  case info = 1
  case warning = 2
  case critical = 3

  public static func < (lhs: AlertSeverity, rhs: AlertSeverity) -> Bool { lhs.rawValue < rhs.rawValue }

  public var name: String {
    switch self {
    case .info: "info"
    case .warning: "warning"
    case .critical: "critical"
    }
  }
}

/// What an alert is about (docs/alerts.md lists what raises each).
public enum AlertKind: String, Sendable, Hashable, CaseIterable {
  case riskHit = "risk_hit"
  case anomaly
  case balanceThreshold = "balance_threshold"
  case bankRejection = "bank_rejection"
  case reconciliationBreak = "reconciliation_break"
  case authenticationFailure = "authentication_failure"
  case bankUnavailable = "bank_unavailable"
  case tampering
  case certificateExpiry = "certificate_expiry"
  case rejectionBurst = "rejection_burst"
  case bankFileQuarantined = "bank_file_quarantined"
  case configurationRefused = "configuration_refused"
}

/// One stored alert.
public struct Alert: Sendable, Hashable {
  /// Gap-free, from 1, in commit order.
  public var sequence: UInt64
  public var time: Instant
  public var severity: AlertSeverity
  public var kind: AlertKind
  public var paymentID: String
  public var accountID: String
  public var message: String
  public var details: [String: String]
  public var acknowledgedBy: String = ""
  public var acknowledgedAt: Instant?
  public var acknowledgeComment: String = ""
}

/// Which alerts a subscriber or a list wants.
public struct AlertFilter: Sendable, Hashable {
  public var minSeverity: AlertSeverity = .info
  /// Empty: every kind.
  public var kinds: Set<AlertKind> = []
  /// Empty: every account.
  public var accountID = ""
  public var unacknowledgedOnly = false

  public init() {}

  public func matches(_ alert: Alert) -> Bool {
    alert.severity >= self.minSeverity && (self.kinds.isEmpty || self.kinds.contains(alert.kind))
      && (self.accountID.isEmpty || alert.accountID.utf8.elementsEqual(self.accountID.utf8))
      && (!self.unacknowledgedOnly || alert.acknowledgedBy.isEmpty)
  }
}

/// The alert log (`alerts`): every alert stored durably with a gap-free sequence number, **in
/// the write transaction of its cause** (a blocked payment and its alert commit together, or
/// neither does). Subscribers read it after commit (``AlertHub``), so nothing is delivered that
/// could still roll back.
public enum AlertLog {
  static let headKey = Array("alert_head".utf8)
  static let recordFormat: UInt8 = 1

  /// Appends an alert inside the caller's transaction; returns its sequence.
  @discardableResult
  public static func raise(
    _ txn: inout WriteTransaction, at time: Instant, severity: AlertSeverity, kind: AlertKind, paymentID: String = "",
    accountID: String = "", message: String, details: [String: String] = [:]
  ) throws -> UInt64 {
    let sequence = try Self.head(txn) + 1
    let alert = Alert(
      sequence: sequence, time: time, severity: severity, kind: kind, paymentID: paymentID, accountID: accountID,
      message: LogText.prefix(message, maxBytes: Limits.maxAlertMessageBytes),
      details: details.mapValues { LogText.prefix($0, maxBytes: Limits.maxAlertMessageBytes) })
    try Self.save(alert, txn: &txn)
    var head = RecordWriter(capacity: 8)
    head.write(sequence)
    try txn.put(Self.headKey, head.bytes, in: .meta)
    return sequence
  }

  /// The last sequence assigned; 0 before the first alert.
  public static func head(_ txn: some ReadableTransaction) throws -> UInt64 {
    guard let bytes = try txn.get(Self.headKey, in: .meta) else { return 0 }
    var reader = RecordReader(bytes)
    let sequence = try reader.readUInt64()
    try reader.finish()
    return sequence
  }

  public static func alert(_ sequence: UInt64, in txn: some ReadableTransaction) throws -> Alert? {
    try txn.get(Self.key(sequence), in: .alerts).map { try Self.decode(sequence: sequence, $0) }
  }

  /// Alerts after `after` that match `filter`, oldest first: at most `limit`, reading at most
  /// `scanLimit` records. `scannedThrough` is the last sequence read (the cursor to continue
  /// from, whether or not it matched); `more` whether records are left after it.
  public static func page(
    after: UInt64, limit: Int, scanLimit: Int, filter: AlertFilter, in txn: some ReadableTransaction
  ) throws -> (alerts: [Alert], scannedThrough: UInt64, more: Bool) {
    var alerts: [Alert] = []
    var scanned = 0
    var through = after
    var more = false
    try txn.scan(.alerts, from: Self.key(after + 1)) { key, value in
      if alerts.count == limit || scanned == scanLimit {
        more = true
        return false
      }
      scanned += 1
      var reader = RecordReader(key)
      let sequence = try reader.readUInt64()
      let alert = try Self.decode(sequence: sequence, value)
      through = sequence
      if filter.matches(alert) { alerts.append(alert) }
      return true
    }
    return (alerts, through, more)
  }

  static func key(_ sequence: UInt64) -> [UInt8] {
    var writer = RecordWriter(capacity: 8)
    writer.write(sequence)
    return writer.bytes
  }

  static func save(_ alert: Alert, txn: inout WriteTransaction) throws {
    var writer = RecordWriter(capacity: 128 + alert.message.utf8.count)
    writer.write(Self.recordFormat)
    writer.write(alert.time.millisecondsSinceEpoch)
    writer.write(UInt8(alert.severity.rawValue))
    writer.write(alert.kind.rawValue)
    writer.write(alert.paymentID)
    writer.write(alert.accountID)
    writer.write(alert.message)
    writer.write(UInt32(alert.details.count))
    for (name, value) in alert.details.sorted(by: { $0.key < $1.key }) {
      writer.write(name)
      writer.write(value)
    }
    writer.write(alert.acknowledgedBy)
    writer.write(alert.acknowledgedAt?.millisecondsSinceEpoch ?? 0)
    writer.write(alert.acknowledgeComment)
    try txn.put(Self.key(alert.sequence), writer.bytes, in: .alerts)
  }

  static func decode(sequence: UInt64, _ bytes: [UInt8]) throws -> Alert {
    var reader = RecordReader(bytes)
    guard try reader.readUInt8() == Self.recordFormat else { throw StoreError(code: .corrupted, message: "unknown alert record format") }
    let time = Instant(millisecondsSinceEpoch: try reader.readInt64())
    guard let severity = AlertSeverity(rawValue: Int(try reader.readUInt8())), let kind = AlertKind(rawValue: try reader.readString())
    else { throw StoreError(code: .corrupted, message: "alert \(sequence) has an unknown severity or kind") }
    let paymentID = try reader.readString()
    let accountID = try reader.readString()
    let message = try reader.readString()
    var details: [String: String] = [:]
    for _ in 0..<min(Int(try reader.readUInt32()), Limits.maxAlertDetails) {
      let name = try reader.readString()
      details[name] = try reader.readString()
    }
    var alert = Alert(
      sequence: sequence, time: time, severity: severity, kind: kind, paymentID: paymentID, accountID: accountID, message: message,
      details: details)
    alert.acknowledgedBy = try reader.readString()
    let acknowledgedAt = try reader.readInt64()
    alert.acknowledgedAt = alert.acknowledgedBy.isEmpty ? nil : Instant(millisecondsSinceEpoch: acknowledgedAt)
    alert.acknowledgeComment = try reader.readString()
    try reader.finish()
    return alert
  }
}
