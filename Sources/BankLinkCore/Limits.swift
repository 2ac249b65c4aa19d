/// Every limit of the daemon, in one place, each with the reason for its value.
///
/// Changing a limit is a product decision: the tests and docs/configuration.md refer to these
/// names rather than to literal numbers.
public enum Limits {
  /// Largest gRPC request message accepted by any method (bytes): the transport's own bound.
  /// Payment batches are the largest single messages; statement files arrive as a stream of
  /// chunks of at most ``maxStatementChunkBytes``.
  public static let maxRequestMessageBytes = 16 * 1024 * 1024

  /// Largest chunk of a statement file in one `ImportStatement` message (bytes): big enough that
  /// a file of hundreds of MiB takes few messages, small enough that a chunk in flight is cheap.
  public static let maxStatementChunkBytes = 4 * 1024 * 1024

  /// Largest statement file accepted (bytes), 2 GiB: a camt.053 of a million entries is about
  /// 800 MiB. The file is spooled to the data directory while it arrives, so this bounds disk
  /// use per import, not memory.
  public static let maxStatementFileBytes: Int64 = 2 << 30

  /// Statement imports storing at the same time; more wait their turn. Imports are serialised
  /// so that deduplication of one file's entries sees every earlier file's.
  public static let maxConcurrentStatementUploads = 4

  /// Entries written per transaction while a large statement is stored (the statement becomes
  /// visible only in the import's last transaction, so readers never see half of a file).
  public static let statementEntriesPerCommit = 5_000
  /// Transaction details held for one commit of a statement import: an entry may carry up to
  /// `FormatLimits.maxDetailsPerEntry`, so entries alone would let 5,000 batch bookings hold
  /// fifty million details in memory.
  public static let statementDetailsPerCommit = 50_000

  /// Reconciliation-break alerts raised by one import; further breaks are counted in the last.
  public static let maxBreakAlertsPerImport = 20

  /// Largest fee tolerance `reconciliation.fee_tolerance_minor` accepts (minor units): a
  /// tolerance this wide would let a payment match an entry far from its amount.
  public static let maxFeeToleranceMinor: Int64 = 1_000_000

  /// Widest value-date window of a heuristic match (`reconciliation.date_window_days`).
  public static let maxReconciliationDateWindowDays = 31

  /// Longest file name kept with an imported statement (bytes): a file system's own limit.
  public static let maxFileNameLength = 255

  /// Entries per page of `GetStatement` (default and maximum).
  public static let defaultStatementEntriesPage = 100
  public static let maxStatementEntriesPage = 1_000

  /// Largest request message of every method but those in ``largeRequestMethodPaths``: one
  /// payment instruction at its longest fields is a few KiB.
  public static let maxOrdinaryRequestMessageBytes = 1024 * 1024

  /// Methods whose requests may use ``maxRequestMessageBytes``: statement files, and payment
  /// batches (``maxBatchItems`` instructions of a few hundred bytes to a few KiB each).
  public static let largeRequestMethodPaths: Set<String> = [
    "/banklink.v1.ReconciliationService/ImportStatement",
    "/banklink.v1.PaymentService/CreatePaymentBatch",
    "/banklink.v1.PaymentService/ImportPaymentFile",
  ]

  /// Entries, and open payments, one reconciliation run holds in memory (about 1 KiB each
  /// with their indexes): a larger scope is refused, naming how to narrow it.
  public static let maxReconciliationEntries = 2_000_000

  /// Largest pain.001 payment run `ImportPaymentFile` takes: ``maxBatchItems`` transfers of
  /// up to about 2 KiB of XML each, within ``maxRequestMessageBytes``.
  public static let maxPaymentFileBytes = 12 * 1024 * 1024

  /// The largest request message accepted on the method at `path` (an HTTP/2 `:path`).
  public static func maxRequestMessageBytes(forPath path: String) -> Int {
    Self.largeRequestMethodPaths.contains(path) ? Self.maxRequestMessageBytes : Self.maxOrdinaryRequestMessageBytes
  }

  /// Certificates a client may present in its chain (leaf and intermediates). Real chains have
  /// two or three; the bound caps the work of chain building per handshake.
  public static let maxClientCertificateChainLength = 4

  /// Bytes per message of a `Backup` stream (well under the client's 4 MiB message limit).
  public static let backupChunkBytes = 1 << 20
  /// Longest reason given for a certificate revocation (bytes).
  public static let maxRevocationReasonBytes = 512
  /// Longest reason quoted in a log line (bytes, escaped).
  public static let maxLoggedReasonBytes = 512

  /// Concurrent HTTP/2 streams one client connection may open. Bounds the work one caller can
  /// put in flight; load generators open more connections instead.
  public static let maxConcurrentStreamsPerConnection = 256

  /// How long SIGTERM/SIGINT waits for in-flight calls and streams to finish before cancelling
  /// them. systemd's default `TimeoutStopSec` is 90 s; this stays well inside it.
  public static let shutdownDrainSeconds = 10

  /// After ``shutdownDrainSeconds``, how long services that were cancelled may take to return
  /// before the daemon stops waiting for them and exits.
  public static let shutdownCancellationSeconds = 5

  /// How long the server lets open connections drain on shutdown before closing them: inside
  /// ``shutdownDrainSeconds``, leaving time for the other services to stop.
  public static let connectionDrainTimeoutMilliseconds = 7_000

  /// Default LMDB map size (MiB) when the configuration does not say. LMDB reserves address
  /// space, not disk, so a generous default costs nothing until used.
  public static let defaultMapSizeMiB = 1024

  /// Highest CPU number `storage.writer_cpus` accepts (Linux's CPU_SETSIZE is 1024).
  public static let maxCPUIndex = 1023

  /// Smallest accepted LMDB map size (MiB): below this the environment cannot hold its own
  /// metadata and the first sync would fail.
  public static let minMapSizeMiB = 1

  /// Largest accepted LMDB map size (MiB), 1 TiB: a guard against a unit mistake (bytes given as
  /// MiB) reserving absurd address space.
  public static let maxMapSizeMiB = 1024 * 1024

  /// Named databases the LMDB environment may hold. Each costs a slot in the environment's
  /// table; the store opens its own fixed set and this leaves room for later schema versions.
  public static let maxNamedDatabases = 48

  /// Concurrent LMDB read transactions (LMDB's reader table). Must exceed the number of threads
  /// that can read at once: the cooperative pool, the event loops and background services.
  public static let maxReaders = 256

  /// Longest principal identity accepted (bytes; identities are ASCII, see ``IdentityRules``),
  /// from a URI SAN or a common name.
  public static let maxIdentityLength = 256

  /// Longest `tls.trust_domain` (a DNS name: 253 bytes at most, rounded up).
  public static let maxTrustDomainBytes = 255

  /// Largest number of principals in the table. The table is consulted on every call and kept in
  /// memory; thousands are plenty for internal services and operators.
  public static let maxPrincipals = 10_000

  /// Currencies one principal may have an approval limit in (`approval_limits`).
  public static let maxApprovalLimitsPerPrincipal = 32

  /// Largest configuration file read (bytes); anything bigger is a mistake, not a config.
  public static let maxConfigFileBytes = 1024 * 1024
}

extension Limits {
  /// Concurrent `grpc.health.v1.Health/Watch` streams. Probes need a handful; the bound stops a
  /// misbehaving client from pinning memory with idle streams.
  public static let maxHealthWatchers = 64

  /// Concurrent Watch streams one principal may hold: enough for a few probes and a dashboard,
  /// and small enough that one caller cannot take every slot of ``maxHealthWatchers``. Every
  /// server stream to come (alerts) keeps the same two bounds.
  public static let maxHealthWatchersPerPrincipal = 8
}

extension Limits {
  /// Page size used when a List request gives 0.
  public static let defaultPageSize = 100

  /// Largest page any List method returns, whatever the request asks: bounds the memory and
  /// time of one call (1,000 transactions encode to roughly 300 KB).
  public static let maxPageSize = 1_000
  /// A signed checkpoint of the journal's head once this many entries were appended since the
  /// last one…
  public static let journalCheckpointEntries: UInt64 = 1_000
  /// …or once this long passed with any appended (and on shutdown). An export is provably
  /// unrewritten up to its last checkpoint: these bound what is not yet covered.
  public static let journalCheckpointIntervalMilliseconds: Int64 = 60_000
  /// How often the checkpoint service looks at the head (one read of one record).
  public static let journalCheckpointPollMilliseconds: Int64 = 1_000
  /// The longest object name a journal query may ask for (ids are shorter; this bounds the
  /// index read's key).
  public static let maxAuditObjectLength = 256
  /// The longest action name a journal query may ask for (actions are `noun.verb`).
  public static let maxAuditActionLength = 64
  /// Journal entries read when looking up an object's receipt (a payment has one per state it
  /// went through: a dozen at most). Bounds the read, not what is journaled.
  public static let maxJournalEntriesPerObject = 1_000
  /// Entries `VerifyAuditJournal` walks in one read transaction before answering with what it
  /// verified so far (a reader holds old pages from reuse while it runs).
  public static let maxJournalEntriesPerVerification: UInt64 = 10_000_000

  /// Most stored records one List call reads to fill its page. A selective filter over a long
  /// history then returns a short (even empty) page with a token to continue, instead of one
  /// call walking the whole history while it holds an event loop. At least `maxPageSize`, so an
  /// unfiltered page always fills.
  public static let maxListScanRecords = 2 * maxPageSize

  /// Field violations named in one error (message and details): a status travels in HTTP/2
  /// trailers, which stock clients bound to a few KiB; the count of the rest is given.
  public static let maxReportedViolations = 20

  /// Longest page token accepted (bytes of base64 text); real tokens are well under 200.
  public static let maxPageTokenLength = 1_024

  /// Longest account id accepted in a request.
  public static let maxAccountIDLength = 64

  /// Transactions fetched from a bank per request during sync: bounds one write transaction.
  public static let syncBatchSize = 500

  /// How long a `GetBalance(refresh: true)` waits for the bank when the call has no deadline.
  public static let maxRefreshWaitMilliseconds: Int64 = 2_000

  /// Time kept back from the call's deadline for answering from the cache after a slow bank.
  public static let refreshAnswerReserveMilliseconds: Int64 = 50

  /// Upper bound on one bank call during background sync.
  public static let syncCallTimeoutMilliseconds: Int64 = 5_000

  /// Longest wait between sync attempts after repeated bank failures (exponential backoff cap).
  public static let maxSyncBackoffMilliseconds: Int64 = 30_000
}

extension Limits {
  /// Feed pages fetched per account in one sync round (× `syncBatchSize` entries).
  public static let maxSyncPagesPerRound = 40

  /// A cached balance older than this is reported `stale` even without a refresh request.
  public static let balanceStaleAfterMilliseconds: Int64 = 60_000
}

extension Limits {
  /// Longest simulated history (days): a year of entries for six accounts seeds in seconds.
  public static let maxSimulatorHistoryDays = 366

  /// Largest configurable simulated bank latency (ms), to keep fault tests bounded.
  public static let maxSimulatedLatencyMilliseconds = 60_000

  /// Shortest pause between sync rounds: protects a real bank from being hammered.
  public static let minSyncIntervalMilliseconds = 100
  /// Longest interval a configuration may set (a day): a slip of units (seconds for
  /// milliseconds) would otherwise leave payments in the outbox for days.
  public static let maxIntervalMilliseconds = 86_400_000
}

extension Limits {
  /// Largest single payment in minor units (10 billion units of the currency, e.g. CNY 10 bn):
  /// beyond any real treasury transfer, and far from Int64 overflow when amounts are summed.
  public static let maxPaymentMinorUnits: Int64 = 1_000_000_000_000

  /// Largest amount or balance magnitude accepted from a bank (minor units): 1,000 × the largest
  /// payment, and still far from Int64 overflow when thousands are summed.
  public static let maxBankAmountMinorUnits: Int64 = 1_000 * maxPaymentMinorUnits

  /// pain.001 `Nm` (Max140Text).
  public static let maxPartyNameLength = 140

  /// pain.001 `Ustrd` remittance information (Max140Text).
  public static let maxRemittanceLength = 140

  /// pain.001 `Othr/Id` (Max34Text).
  public static let maxAccountNumberLength = 34

  /// An IBAN as people print it: 34 characters in groups of four separated by single spaces.
  public static let maxIBANPrintedLength = 34 + 8

  /// UTF-8 bytes one character (Unicode scalar) takes at most: text fields are bounded in
  /// bytes (`maxLength` × this) before their characters are counted.
  public static let maxUTF8BytesPerCharacter = 4
}

extension Limits {
  /// Most write requests committed together in one group commit: bounds the time one commit
  /// holds the writer and the work lost to a single failing commit.
  public static let maxGroupCommitBatch = 256
}

extension Limits {
  /// Longest idempotency key: room for a UUID or an ERP document number with a prefix.
  public static let maxIdempotencyKeyLength = 128

  /// Longest payment id accepted in a request (ids the daemon issues are about 30 characters).
  public static let maxPaymentIDLength = 64
}

extension Limits {
  /// Outbox entries read per submission pass.
  public static let submissionBatchSize = 100
}

extension Limits {
  /// Items in one CreatePaymentBatch: a large payroll run, and the most one group-committed
  /// transaction should carry.
  public static let maxBatchItems = 5_000
  /// Risk rule steps the items of one batch may take together, on the store's one writer
  /// thread: about two seconds, 4,000 steps an item at ``maxBatchItems`` (a rule set of
  /// comparisons and `in` lists takes tens; a regex over a name hundreds). Each payment alone may
  /// take a decision's worth (`RuleLimits.maxDecisionSteps`); a batch whose rules in force need
  /// more is refused (RESOURCE_EXHAUSTED) rather than holding every other write. Shadow rules and
  /// a shadow set have as much again, apart: past it they do not evaluate the rest of the batch.
  public static let maxRiskStepsPerBatch = 20_000_000
}

extension Limits {
  /// Open client connections in all, authenticated or not. Each costs a file descriptor and a
  /// TLS session (tens of KiB); the daemon raises its file limit well above this at start.
  public static let maxConnections = 1_000

  /// Open connections from one source IP address: an internal service needs a handful; the bound
  /// stops one host (or one attacker) from taking every slot of ``maxConnections``.
  public static let maxConnectionsPerAddress = 100

  /// Time from accepting a TCP connection to its first HTTP/2 bytes after the TLS handshake. A
  /// handshake on a LAN takes milliseconds; a connection that never starts TLS is closed then.
  public static let handshakeTimeoutMilliseconds = 10_000

  /// A connection without streams for this long is closed gracefully (GOAWAY). gRPC clients
  /// reconnect on their next call.
  public static let connectionIdleTimeoutMilliseconds = 5 * 60 * 1000

  /// Bytes of unfinished request messages one connection may hold buffered over all its streams:
  /// a few large imports at once, not 256 streams × 16 MiB.
  public static let maxBufferedRequestBytesPerConnection = 32 * 1024 * 1024

  /// Time from the first byte of a request message to its last. A 16 MiB import over a slow
  /// 10 Mbit/s link takes about 14 s.
  public static let messageReceiveTimeoutMilliseconds = 30_000

  /// File descriptors the daemon keeps for itself beyond client connections: LMDB, log files,
  /// event loop and signal descriptors, the listening socket.
  public static let reservedFileDescriptors = 256

  /// Lowest and highest values the configuration accepts for the connection limits.
  public static let connectionLimitRange = 1...100_000
  public static let connectionTimeoutRangeMilliseconds = 100...3_600_000
}

// MARK: Approvals

extension Limits {
  /// Rules in one approval policy: a treasury's matrix is tens of rules; each payment walks the
  /// list once at creation.
  public static let maxPolicyRules = 200
  public static let maxPolicyRuleIDLength = 64
  /// Descriptions and comments.
  public static let maxPolicyTextLength = 256
  /// Values in one match list (currencies, accounts, countries) or named principals of a level.
  public static let maxPolicyMatchValues = 100
  /// Levels of one requirement (maker → checker → treasurer → CFO is four).
  public static let maxApprovalLevels = 5
  public static let maxApprovalsPerLevel = 10
  /// An approval window shorter than a minute cannot be met by people; longer than 30 days
  /// holds funds reserved for too long.
  public static let minApprovalWindowSeconds: Int64 = 60
  public static let maxApprovalWindowSeconds: Int64 = 30 * 86_400
  /// The window of the default requirement (no policy put yet).
  public static let defaultApprovalWindowSeconds: Int64 = 86_400
  /// An approval's comment.
  public static let maxApprovalCommentLength = 256
  /// A signature over an approval digest (an ECDSA P-521 DER signature is under 140 bytes; an
  /// RSA-4096 one is 512).
  public static let maxApprovalSignatureBytes = 1_024

  /// RFC 6238 TOTP as authenticator apps implement it: HMAC-SHA1, 6 digits, 30 s steps, and
  /// one step of clock drift either way.
  public static let otpDigits = 6
  public static let otpStepSeconds: Int64 = 30
  public static let otpAllowedDriftSteps: Int64 = 1
  /// Bytes of an enrolled secret (RFC 4226 recommends 160 bits).
  public static let otpSecretBytes = 20
  /// Wrong codes in a row before the principal's approvals are locked…
  public static let maxOTPFailures = 5
  /// …for this long. Every failure and lockout is journaled.
  public static let otpLockoutSeconds: Int64 = 900
  /// Lockouts in a row (no right code between them) after which the principal's approvals stay
  /// locked until an admin re-enrols their OTP (RFC 4226 §7.3): 4 × 5 wrong codes, about a
  /// 1-in-16,000 chance for a guesser against a 6-digit code and three accepted steps, instead
  /// of five guesses every 15 minutes for ever.
  public static let maxOTPLockouts = 4
}

extension Limits {
  /// How often overdue approvals are expired.
  public static let approvalExpiryPollMilliseconds: Int64 = 5_000
}

extension Limits {
  /// Longest alert message or detail value stored (bytes); longer texts are cut with `…`.
  public static let maxAlertMessageBytes = 1_024
  /// Details (name → value) kept with one alert.
  public static let maxAlertDetails = 16
  /// Concurrent `SubscribeAlerts` streams, and per principal: room for a thousand dashboards
  /// and routers, while one caller cannot take every slot.
  public static let maxAlertSubscribers = 2_048
  public static let maxAlertSubscribersPerPrincipal = 1_024
  /// Of ``maxAlertSubscribers``, the slots only admins and auditors may take: two other callers
  /// at their per-principal limit cannot keep the people who act on alerts from watching them.
  public static let reservedAlertSubscribers = 64
  /// Alerts handed to one stream write: a subscriber that stops reading holds at most this many
  /// (besides its HTTP/2 window), not a whole replay page.
  public static let alertsPerWrite = 32
  /// How far (in alerts) a live subscriber may fall behind the newest alert before its stream
  /// is ended with RESOURCE_EXHAUSTED (it resumes from the last sequence it was sent).
  public static let maxAlertSubscriberLag: UInt64 = 10_000
  /// Alerts read from the store per step of a replay (one short read transaction each).
  public static let alertReplayPageSize = 256
  /// Most recent alerts the hub keeps decoded in memory for live subscribers (a few MB at most).
  public static let alertHubRecent = 4_096
  /// Kinds one alert filter may name (there are fewer kinds; this bounds a repeated field).
  public static let maxAlertFilterKinds = 16
  /// Consecutive sync rounds in which the bank cannot be reached before `bank_unavailable` is
  /// raised, and rounds in which it answers again before the recovery is: one alert per
  /// episode, not one per failed poll.
  public static let bankUnavailableAfterFailedRounds = 3
  public static let bankAvailableAfterRounds = 2
}

extension Limits {
  /// Accounts that may have a balance floor (`alerts.balance_floors`).
  public static let maxBalanceFloors = 1_000
  /// A breached floor counts as recovered once available is this many percent above it, so an
  /// account hovering at its floor does not raise an alert each round.
  public static let balanceFloorRecoveryPercent = 5
  /// A certificate (the daemon's, or a client's on its first call) expiring within this many
  /// days raises a `certificate_expiry` alert; within the second, a critical one.
  public static let certificateExpiryWarningDays = 30
  public static let certificateExpiryCriticalDays = 7
  /// This many payments rejected or returned by the bank within
  /// `rejectionBurstWindowSeconds` raise one `rejection_burst` alert; the episode ends once a
  /// rejection finds at most half as many in the window (hysteresis).
  public static let rejectionBurstCount = 5
  public static let rejectionBurstWindowSeconds: Int64 = 600

  /// How often the daemon looks whether a burst of calls has ended, to give the heap it grew back
  /// to the system then (``HeapTrimService``): glibc keeps freed memory for reuse, so without this
  /// the RSS after a burst stays at the burst's peak (docs/BENCHMARKS.md). Short enough that the
  /// RSS returns soon after the load, long enough that a steady load is never trimmed under.
  public static let heapTrimCheckSeconds = 5
}
