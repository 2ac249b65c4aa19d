/// A named LMDB database inside the store's environment.
///
/// A store opens exactly the databases its configuration lists (the daemon: ``Database/all``);
/// a module that needs a new database adds it here (and bumps ``Store/schemaVersion`` if
/// existing data changes shape).
public struct Database: Hashable, Sendable, CustomStringConvertible {
  public let name: String
  /// FNV-1a of `name`, computed once: every read and write finds its LMDB handle by it
  /// (``DatabaseHandles``) instead of hashing the name each time.
  let fingerprint: UInt64

  public init(_ name: String) {
    self.name = name
    self.fingerprint = Self.fingerprint(of: name)
  }

  static func fingerprint(of name: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in name.utf8 {
      hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
    }
    return hash
  }

  public static func == (lhs: Database, rhs: Database) -> Bool {
    lhs.fingerprint == rhs.fingerprint && lhs.name == rhs.name
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(self.fingerprint)
  }

  /// Store metadata: the schema version and other environment-wide records.
  public static let meta = Database("meta")
  /// Principals managed at run time (overrides and additions to the configured table).
  public static let principals = Database("principals")

  /// Cached accounts, by account id.
  public static let accounts = Database("accounts")
  /// Cached ledger balances and their sync state, by account id.
  public static let balances = Database("balances")
  /// Cached booked transactions, by (account id, booking time, arrival sequence).
  public static let transactions = Database("transactions")
  /// Transaction id → key in ``transactions``: deduplicates re-delivered entries.
  public static let transactionIDs = Database("transaction_ids")
  /// Per-account sync cursors into the bank's transaction feed.
  public static let syncCursors = Database("sync_cursors")

  /// Payments by their time-ordered id.
  public static let payments = Database("payments")
  /// (creator identity, 0x00, idempotency key) → SHA-256 fingerprint of the canonical request
  /// and the payment id (records written by earlier builds hold the whole request in hex; both
  /// forms are read).
  public static let idempotency = Database("idempotency")
  /// Account id → total minor units reserved by its payments in flight.
  public static let reservations = Database("reservations")
  /// The audit journal: hash-chained entries by sequence number (BankLinkJournal).
  public static let audit = Database("audit")
  /// (object, 0x00, sequence) → empty: the journal entries about one object, in order.
  public static let auditByObject = Database("audit_by_object")
  /// Messages for the bank, written with the state change that causes them, by sequence.
  public static let outbox = Database("outbox")
  /// EndToEndId → payment id, for applying the bank's status reports.
  public static let paymentsByEndToEnd = Database("payments_by_end_to_end")
  /// Payment id → minor units it still reserves (absent once released).
  public static let paymentReservations = Database("payment_reservations")
  /// EndToEndId → format byte and booking time of the debit carrying it in the account cache
  /// (format 1, written by earlier builds: `[1]`, no time).
  public static let bookedEndToEnd = Database("booked_end_to_end")
  /// (account id, 0x00, EndToEndId) → booking time: a settled payment whose debit is booked but
  /// not yet included in the cached balance; its reservation is released by the balance write
  /// that includes it.
  public static let awaitingLedger = Database("awaiting_ledger")

  /// Payment id → approval state: the pinned requirement and the approvals given, each with
  /// its signature and certificate.
  public static let approvals = Database("approvals")
  /// Payment id → empty: payments waiting for approval, in creation order.
  public static let pendingApprovals = Database("pending_approvals")
  /// Deadline ms, payment id → empty: the expiry queue.
  public static let approvalDeadlines = Database("approval_deadlines")
  /// Version → approval policy (protobuf); the current version is in `meta`.
  public static let approvalPolicies = Database("approval_policies")
  /// Principal → OTP secret, sealed with AES-GCM under the configured key.
  public static let otpSecrets = Database("otp_secrets")
  /// Principal → last accepted OTP step, failures in a row, lockout.
  public static let otpState = Database("otp_state")

  /// Alerts by their gap-free sequence (8-byte big-endian); the last sequence is in `meta`.
  public static let alerts = Database("alerts")

  /// Risk rule sets by version (8-byte big-endian) as `RuleSet` protobuf; `meta`
  /// `rule_set_version` names the one in force.
  public static let ruleSets = Database("rule_sets")
  /// Per account, payments counted in time buckets: account, 0x00, granularity ("m" minute,
  /// "h" hour), bucket index (8 bytes) → count and sum of minor units.
  public static let riskBuckets = Database("risk_buckets")
  /// Per account and creditor (normalised account and BIC): first time paid and count.
  public static let riskCreditors = Database("risk_creditors")
  /// Per account, creditor and amount: times of recent payments (duplicate detection).
  public static let riskRecent = Database("risk_recent")
  /// Per account: the amount baseline (count, exponentially weighted mean and variance).
  public static let riskBaselines = Database("risk_baselines")
  /// Per payment: the risk decision made at creation and the variables it was made on.
  public static let riskDecisions = Database("risk_decisions")
  /// Per shadow rule set version: its totals, hits per rule, and the payments on which it would
  /// have decided otherwise than the active set (ShadowReports in BankLinkServer).
  public static let riskShadow = Database("risk_shadow")

  /// Stored bank statements by their sequence (8-byte big-endian): header, balances, counts,
  /// continuity breaks, and whether the import that wrote them has finished.
  public static let statements = Database("statements")
  /// Account id, 0x00, statement sequence → empty: an account's statements in import order.
  public static let statementsByAccount = Database("statements_by_account")
  /// Statement sequence (8 bytes), entry index (4 bytes) → one booked, pending or information
  /// entry with its transaction details.
  public static let statementEntries = Database("statement_entries")
  /// Account id, 0x00, dedup key → entry key: the same entry imported twice is stored once. The
  /// key is the bank's reference (AcctSvcrRef) with the entry's status, else a digest of the
  /// entry's canonical fields.
  public static let statementEntryKeys = Database("statement_entry_keys")
  /// SHA-256 of a statement file → what its import stored: the same file is imported once.
  public static let statementFiles = Database("statement_files")

  /// Entry key (statement sequence, index) → its match: method, score, reason, payments.
  public static let reconMatches = Database("recon_matches")
  /// Payment id → the key of the entry it is matched to (a payment is matched once).
  public static let reconPaymentMatches = Database("recon_payment_matches")
  /// Reconciliation reports by sequence: scope, totals, who ran it.
  public static let reconReports = Database("recon_reports")
  /// Report sequence, item index → one line: a match, an unmatched entry, an unmatched payment.
  public static let reconReportItems = Database("recon_report_items")

  /// Revoked client certificates: `serial/<hex>`, `sha256/<hex>` or `identity/<identity>` → who
  /// revoked it, when and why (`RevokeCertificate`).
  public static let revocations = Database("revocations")

  /// Every database of the daemon's current schema.
  public static let all: [Database] = [
    .meta, .principals, .accounts, .balances, .transactions, .transactionIDs, .syncCursors,
    .payments, .idempotency, .reservations, .audit, .auditByObject, .outbox, .paymentsByEndToEnd, .paymentReservations,
    .bookedEndToEnd, .awaitingLedger, .approvals, .pendingApprovals, .approvalDeadlines, .approvalPolicies,
    .otpSecrets, .otpState, .alerts, .ruleSets, .riskBuckets, .riskCreditors, .riskRecent, .riskBaselines,
    .riskDecisions, .riskShadow, .statements, .statementsByAccount, .statementEntries, .statementEntryKeys,
    .statementFiles, .reconMatches, .reconPaymentMatches, .reconReports, .reconReportItems, .revocations,
  ]

  public var description: String { self.name }
}

/// A store's LMDB handles by database: a small open-addressed table keyed by the databases'
/// fingerprints, looked up on every read and write (a `Dictionary` hashed the name each time:
/// a few per cent of a reconciliation run's CPU).
struct DatabaseHandles: Sendable {
  /// By slot: the database's fingerprint, its name and handle; `dbis[slot] == nil`: empty.
  private let fingerprints: [UInt64]
  private let names: [String]
  private let dbis: [UInt32?]
  private let mask: Int

  init(_ handles: [Database: UInt32]) {
    // At most half full, so a probe ends soon at an empty slot.
    var capacity = 8
    while capacity < 2 * handles.count { capacity *= 2 }
    var fingerprints = [UInt64](repeating: 0, count: capacity)
    var names = [String](repeating: "", count: capacity)
    var dbis = [UInt32?](repeating: nil, count: capacity)
    for (database, dbi) in handles {
      var slot = Int(truncatingIfNeeded: database.fingerprint) & (capacity - 1)
      while dbis[slot] != nil { slot = (slot + 1) & (capacity - 1) }
      fingerprints[slot] = database.fingerprint
      names[slot] = database.name
      dbis[slot] = dbi
    }
    self.fingerprints = fingerprints
    self.names = names
    self.dbis = dbis
    self.mask = capacity - 1
  }

  subscript(database: Database) -> UInt32? {
    var slot = Int(truncatingIfNeeded: database.fingerprint) & self.mask
    while let dbi = self.dbis[slot] {
      if self.fingerprints[slot] == database.fingerprint, self.names[slot] == database.name { return dbi }
      slot = (slot + 1) & self.mask
    }
    return nil
  }
}
