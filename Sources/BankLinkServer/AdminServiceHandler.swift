import BankLinkCore
import Crypto
import BankLinkJournal
import BankLinkPKI
import BankLinkStore
import Foundation
import BankLinkProto
import GRPCCore
import GRPCProtobuf
import SwiftProtobuf

/// `banklink.v1.AdminService`.
struct AdminServiceHandler: Banklink_V1_AdminService.SimpleServiceProtocol {
  typealias Method = Banklink_V1_AdminService.Method

  /// The daemon's store, where the journal is.
  let store: Store
  /// The payment ledger: approval policy and OTP enrolment live beside the payments.
  let payments: PaymentLedger
  /// Seals OTP secrets; nil when no key is configured.
  let vault: OTPVault?
  /// Who may call the daemon.
  let principals: PrincipalDirectory
  /// Changes principals at run time.
  let registry: PrincipalRegistry
  /// The identities a certificate can present (trust domain): a principal outside it is refused.
  let identityPolicy: PeerIdentity.Policy
  /// The daemon's own certificate (replaced on reload): checkpoints are checked with it.
  let certificate: ServerCertificate
  var checkpoints: JournalCheckpoint.Verifier? { self.certificate.current.verifier }
  /// Revoked certificates, checked on every call.
  let revocations: CertificateRevocations
  /// The daemon's configuration reload (as on SIGHUP).
  let reload: ConfigurationReloadHook

  func whoAmI(request: Banklink_V1_WhoAmIRequest, context: ServerContext) async throws -> Banklink_V1_WhoAmIResponse {
    Self.whoAmI(try Caller.required())
  }

  /// What `WhoAmI` answers `caller` (also from the unary fast path, ``UnaryFastPath``).
  static func whoAmI(_ caller: Caller) -> Banklink_V1_WhoAmIResponse {
    .with {
      $0.identity = caller.peer.identity
      $0.identitySource = caller.peer.source.rawValue
      $0.roles = caller.principal.roles.sorted().map(Banklink_V1_Role.init)
      $0.certificateSerial = caller.peer.serialNumberHex
      $0.certificateNotAfter = Google_Protobuf_Timestamp(date: caller.peer.notValidAfter)
      $0.certificateSubject = caller.peer.subject
    }
  }

  func getApprovalPolicy(
    request: Banklink_V1_GetApprovalPolicyRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ApprovalPolicy {
    // Version 0: no policy put yet; the configured threshold applies (docs/approvals.md).
    let policy = try withStore { try self.store.withReadTransaction { try self.payments.policies.current(in: $0) } }
    return policy.map(Banklink_V1_ApprovalPolicy.init) ?? Banklink_V1_ApprovalPolicy()
  }

  func putApprovalPolicy(
    request: Banklink_V1_PutApprovalPolicyRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_PutApprovalPolicyResponse {
    let caller = try Caller.required()
    if !request.requestID.isEmpty { try validIdempotencyKey(request.requestID, field: "request_id") }
    guard request.hasPolicy else { throw APIError.invalidArgument("policy", "is required") }
    let policy: ApprovalPolicy
    switch ApprovalPolicy.from(request.policy) {
    case .success(let value): policy = value
    case .failure(let problems): throw badRequest(problems.violations)
    }
    let violations = policy.violations()
    guard violations.isEmpty else { throw badRequest(violations) }
    let now = self.payments.now()
    let policies = self.payments.policies
    do {
      let (stored, receipt) = try await self.payments.writer.write { txn in
        try policies.put(policy, expectedVersion: request.expectedVersion, by: caller.principal.identity, at: now, txn: &txn)
      }
      return .with {
        $0.policy = Banklink_V1_ApprovalPolicy(stored)
        $0.receipt = Banklink_V1_Receipt(receipt)
      }
    } catch let conflict as PolicyConflict {
      throw GoogleRPCStatus(
        code: .aborted,
        message: "expected_version \(conflict.expected) is not the policy in force (version \(conflict.current)); read it again",
        details: [])
    } catch let error as StoreError {
      throw APIError.storage(error)
    }
  }

  func listPrincipals(
    request: Banklink_V1_ListPrincipalsRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ListPrincipalsResponse {
    let size = try pageSize(request.pageSize)
    let after =
      request.pageToken.isEmpty ? nil : try PageToken.key(request.pageToken, .principals, maxBytes: Limits.maxIdentityLength)
    // Identities are ASCII (IdentityRules): String order is byte order here.
    let all = self.principals.current.principals
    let remaining = after.map { last in all.drop(while: { $0.identity <= last }) } ?? all[...]
    let page = Array(remaining.prefix(size))
    let enrolled = try withStore {
      try self.store.withReadTransaction { txn in
        try Set(page.filter { try txn.get(Array($0.identity.utf8), in: .otpSecrets) != nil }.map(\.identity))
      }
    }
    return .with {
      $0.principals = page.map { principal in
        var listed = Banklink_V1_Principal(principal, otpEnrolled: enrolled.contains(principal.identity))
        listed.revoked = self.revocations.isRevoked(identity: principal.identity)
        return listed
      }
      if remaining.count > page.count, let last = page.last {
        $0.nextPageToken = PageToken.encode(.principals, after: last.identity)
      }
    }
  }


  func setPrincipalRoles(
    request: Banklink_V1_SetPrincipalRolesRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_SetPrincipalRolesResponse {
    let caller = try Caller.required()
    if !request.requestID.isEmpty { try validIdempotencyKey(request.requestID, field: "request_id") }
    var violations: [FieldViolation] = []
    switch IdentityRules.check(request.identity) {
    case .failure(let problem):
      violations.append(.init(field: "identity", description: "\(problem)"))
    case .success(.uri(_, let authority)):
      if let domain = self.identityPolicy.trustDomain, !authority.utf8.elementsEqual(domain.utf8) {
        violations.append(.init(field: "identity", description: "is outside the trust domain '\(domain)': no certificate could present it"))
      }
    case .success(.name):
      break
    }
    var roles: Set<Role> = []
    for (index, value) in request.roles.enumerated() {
      guard let role = Role(value) else {
        violations.append(.init(field: "roles[\(index)]", description: "is not a role (\(value))"))
        continue
      }
      if !roles.insert(role).inserted {
        violations.append(.init(field: "roles[\(index)]", description: "\(role.rawValue) is listed twice"))
      }
    }
    var limits: [CurrencyCode: Int64] = [:]
    if request.approvalLimits.count > Limits.maxApprovalLimitsPerPrincipal {
      violations.append(.init(
        field: "approval_limits", description: "at most \(Limits.maxApprovalLimitsPerPrincipal) currencies, got \(request.approvalLimits.count)"))
    } else {
      for (index, limit) in request.approvalLimits.enumerated() {
        let field = "approval_limits[\(index)]"
        guard let currency = CurrencyCode(limit.currencyCode) else {
          violations.append(.init(field: field + ".currency_code", description: "must be three upper-case letters (ISO 4217)"))
          continue
        }
        guard limit.minorUnits > 0, limit.minorUnits <= Limits.maxBankAmountMinorUnits else {
          violations.append(.init(
            field: field + ".minor_units",
            description: "must be between 1 and \(Limits.maxBankAmountMinorUnits); leave the currency out for no limit"))
          continue
        }
        if limits.updateValue(limit.minorUnits, forKey: currency) != nil {
          violations.append(.init(field: field + ".currency_code", description: "\(currency.code) is listed twice"))
        }
      }
    }
    guard violations.isEmpty else { throw badRequest(violations) }
    do {
      let change = try await self.mappingStorage {
        try await self.registry.setRoles(request.identity, roles: roles, approvalLimits: limits, by: caller.principal)
      }
      let enrolled = try withStore {
        try self.store.withReadTransaction { try $0.get(Array(request.identity.utf8), in: .otpSecrets) != nil }
      }
      return .with {
        $0.principal = Banklink_V1_Principal(change.principal, otpEnrolled: enrolled)
        $0.receipt = Banklink_V1_Receipt(change.receipt)
      }
    } catch let refusal as PrincipalRegistry.Refusal {
      switch refusal {
      case .selfGrant(let message):
        throw GoogleRPCStatus(
          code: .permissionDenied, message: message,
          details: [.errorInfo(reason: "SELF_GRANT", domain: APIError.domain)])
      case .lastAdmin(let message):
        throw GoogleRPCStatus(
          code: .failedPrecondition, message: message,
          details: [.errorInfo(reason: "LAST_ADMIN", domain: APIError.domain)])
      case .tooManyPrincipals:
        throw GoogleRPCStatus(
          code: .resourceExhausted, message: "the principals table holds its maximum of \(Limits.maxPrincipals)", details: [])
      }
    }
  }

  func enrollOtp(request: Banklink_V1_EnrollOtpRequest, context: ServerContext) async throws -> Banklink_V1_EnrollOtpResponse {
    let caller = try Caller.required()
    if !request.requestID.isEmpty { try validIdempotencyKey(request.requestID, field: "request_id") }
    guard case .success = IdentityRules.check(request.identity) else {
      throw APIError.invalidArgument("identity", "is not a principal identity")
    }
    guard self.principals.current.principal(for: request.identity) != nil else {
      throw APIError.notFound("principal", request.identity)
    }
    guard let vault = self.vault else {
      throw GoogleRPCStatus(
        code: .failedPrecondition, message: "no OTP key is configured (security.otp_key_file); secrets cannot be stored", details: [])
    }
    let secret = TOTP.newSecret()
    let now = self.payments.now()
    let enrolment = try await self.mappingStorage {
      try await self.payments.enrollOTP(request.identity, secret: secret, vault: vault, by: caller.principal.identity, at: now)
    }
    guard case .enrolled(let receipt) = enrolment else {
      throw GoogleRPCStatus(
        code: .permissionDenied,
        message: "an admin cannot enrol their own OTP (their certificate alone would then hold both factors); another admin enrols it",
        details: [.errorInfo(reason: "SELF_ENROLMENT", domain: APIError.domain)])
    }
    return .with {
      $0.otpauthUri = TOTP.enrolmentURI(secret: secret, principal: request.identity)
      $0.secretBase32 = Base32.encode(secret)
      $0.receipt = Banklink_V1_Receipt(receipt)
    }
  }

  private func mappingStorage<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch let error as StoreError { throw APIError.storage(error) }
  }

  func revokeCertificate(
    request: Banklink_V1_RevokeCertificateRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_RevokeCertificateResponse {
    let caller = try Caller.required()
    if !request.requestID.isEmpty { try validIdempotencyKey(request.requestID, field: "request_id") }
    var violations: [FieldViolation] = []
    var target: CertificateRevocations.Target?
    switch request.target {
    case .serialNumber(let serial):
      if let canonical = CertificateRevocations.canonicalSerial(serial), canonical.utf8.count <= 40 {
        target = .serial(canonical)
      } else {
        violations.append(.init(field: "serial_number", description: "must be a serial number in hex (at most 20 bytes; colons allowed)"))
      }
    case .sha256Fingerprint(let fingerprint):
      if let canonical = CertificateRevocations.canonicalFingerprint(fingerprint) {
        target = .fingerprint(canonical)
      } else {
        violations.append(.init(field: "sha256_fingerprint", description: "must be 64 hex digits (colons allowed)"))
      }
    case .identity(let identity):
      if case .failure(let problem) = IdentityRules.check(identity) {
        violations.append(.init(field: "identity", description: "\(problem)"))
      } else if identity.utf8.elementsEqual(caller.peer.identity.utf8) {
        violations.append(.init(field: "identity", description: "is your own identity: another admin must revoke it"))
      } else {
        target = .identity(identity)
      }
    case nil:
      violations.append(.init(field: "target", description: "name a serial_number, sha256_fingerprint or identity"))
    }
    let reason = request.reason.trimmingCharacters(in: .whitespacesAndNewlines)
    if reason.isEmpty {
      violations.append(.init(field: "reason", description: "is required (kept in the revocation record and the audit journal)"))
    } else if reason.utf8.count > Limits.maxRevocationReasonBytes {
      violations.append(.init(field: "reason", description: "must be at most \(Limits.maxRevocationReasonBytes) bytes"))
    }
    guard violations.isEmpty, let target else { throw badRequest(violations) }
    let (receipt, already): (JournalReceipt?, Bool)
    do {
      (receipt, already) = try await self.mappingStorage {
        try await self.revocations.revoke(
          target, reason: reason, by: caller.principal.identity, writer: self.payments.writer, registry: self.registry,
          at: self.payments.now())
      }
    } catch let refusal as CertificateRevocations.LastAdmin {
      throw GoogleRPCStatus(
        code: .failedPrecondition,
        message: "'\(refusal.identity)' is the last admin whose certificates are not revoked; grant admin to another principal first",
        details: [.errorInfo(reason: "LAST_ADMIN", domain: APIError.domain)])
    }
    return .with {
      if case .identity(let identity) = target {
        let principal = self.principals.current.principal(for: identity) ?? Principal(identity: identity, roles: [])
        $0.principal = Banklink_V1_Principal(principal, otpEnrolled: false)
        $0.principal.revoked = true
      }
      if let receipt { $0.receipt = Banklink_V1_Receipt(receipt) }
      $0.alreadyRevoked = already
    }
  }

  func reloadConfiguration(
    request: Banklink_V1_ReloadConfigurationRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ReloadConfigurationResponse {
    let caller = try Caller.required()
    guard let reload = self.reload.installed else {
      throw RPCError(code: .failedPrecondition, message: "this server was not started from a configuration file; there is nothing to reload")
    }
    switch await reload(caller.principal.identity) {
    case .success(let outcome):
      return .with {
        $0.summary = outcome.summary
        $0.needsRestart = outcome.needsRestart
        $0.receipt = Banklink_V1_Receipt(outcome.receipt)
      }
    case .failure(let refusal):
      throw GoogleRPCStatus(
        code: .failedPrecondition,
        message: "reload refused, the running configuration is unchanged: \(refusal.reason)",
        details: [.badRequest(violations: [.init(field: refusal.key, description: refusal.reason)])])
    }
  }

  func backup(
    request: Banklink_V1_BackupRequest,
    response: RPCWriter<Banklink_V1_BackupChunk>,
    context: ServerContext
  ) async throws {
    let caller = try Caller.required()
    // Journaled before the copy is taken, so the copy holds its own record of who took it.
    let receipt = try await self.mappingStorage {
      try await self.payments.writer.write { txn in
        try AuditJournal.append(
          &txn, at: self.payments.now(), principal: caller.principal.identity, action: "daemon.backup", object: "daemon",
          details: ["compacted": "true"])
      }
    }
    // The copy goes to an unnamed file in the data directory (gone when closed, also after a
    // crash), then is streamed from it: the client's pace never holds LMDB's read snapshot.
    let directory = self.store.configuration.directory
    let descriptor = Self.unnamedFile(in: directory)
    guard descriptor >= 0 else {
      throw RPCError(code: .internalError, message: "cannot create the backup's temporary file in the data directory: \(String(cString: strerror(errno)))")
    }
    defer { close(descriptor) }
    let store = self.store
    try await self.mappingStorage { try await onOwnThread { try store.copy(to: descriptor) } }
    var hash = SHA256()
    var total: UInt64 = 0
    var chunk = [UInt8](repeating: 0, count: Limits.backupChunkBytes)
    while true {
      let count = chunk.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, off_t(total)) }
      if count < 0 {
        if errno == EINTR { continue }
        throw RPCError(code: .internalError, message: "reading the backup copy failed: \(String(cString: strerror(errno)))")
      }
      if count == 0 { break }
      let bytes = chunk[0..<count]
      hash.update(data: bytes)
      total += UInt64(count)
      try await response.write(.with { $0.data = Data(bytes) })
    }
    try await response.write(.with {
      $0.summary = .with {
        $0.bytes = total
        $0.sha256 = Hex.encode(hash.finalize())
        $0.journalHead = receipt.sequence
        $0.schemaVersion = Store.schemaVersion
      }
    })
  }

  /// An unnamed file in `directory` (Linux `O_TMPFILE`; else a named one removed at once).
  static func unnamedFile(in directory: String) -> Int32 {
    // O_TMPFILE is __O_TMPFILE | O_DIRECTORY; Glibc's module does not export the macro.
    let temporaryFile: Int32 = 0o20_000_000 | O_DIRECTORY
    let descriptor = open(directory, temporaryFile | O_RDWR | O_CLOEXEC, 0o600)
    if descriptor >= 0 { return descriptor }
    var template = Array((directory + "/.backup-XXXXXX").utf8CString)
    let named = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    if named >= 0 { template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) } }
    return named
  }

  func listAuditEntries(
    request: Banklink_V1_ListAuditEntriesRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ListAuditEntriesResponse {
    let size = try pageSize(request.pageSize)
    var after = request.afterSequence
    if !request.pageToken.isEmpty {
      after = max(after, try PageToken.sequence(request.pageToken, .auditEntries))
    }
    var filter = AuditFilter()
    if !request.object.isEmpty {
      guard request.object.utf8.count <= Limits.maxAuditObjectLength else {
        throw APIError.invalidArgument("object", "must be at most \(Limits.maxAuditObjectLength) bytes")
      }
      filter.object = request.object
    }
    if !request.principal.isEmpty {
      guard request.principal.utf8.count <= Limits.maxIdentityLength else {
        throw APIError.invalidArgument("principal", "must be at most \(Limits.maxIdentityLength) bytes")
      }
      filter.principal = request.principal
    }
    if !request.action.isEmpty {
      guard request.action.utf8.count <= Limits.maxAuditActionLength else {
        throw APIError.invalidArgument("action", "must be at most \(Limits.maxAuditActionLength) bytes")
      }
      filter.action = request.action
    }
    if request.hasStartTime {
      guard let start = Instant(request.startTime) else { throw APIError.invalidArgument("start_time", "not a valid timestamp") }
      filter.from = start
    }
    if request.hasEndTime {
      guard let end = Instant(request.endTime) else { throw APIError.invalidArgument("end_time", "not a valid timestamp") }
      filter.before = end
    }
    let page = try withStore {
      try self.store.withReadTransaction { txn in
        try AuditQuery.page(filter, after: after, limit: size, scanLimit: Limits.maxListScanRecords, in: txn)
      }
    }
    return .with {
      $0.entries = page.entries.map(Banklink_V1_AuditEntry.init)
      if let resume = page.resumeAfter {
        $0.nextPageToken = PageToken.encode(.auditEntries, after: resume)
      }
    }
  }


  func verifyAuditJournal(
    request: Banklink_V1_VerifyAuditJournalRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_VerifyAuditJournalResponse {
    if request.toSequence != 0 && request.toSequence < request.fromSequence {
      throw APIError.invalidArgument("to_sequence", "must not be below from_sequence")
    }
    let report = try withStore {
      try self.store.withReadTransaction { txn in
        try JournalVerifier.verify(
          from: request.fromSequence, to: request.toSequence, checkpoints: self.checkpoints, in: txn)
      }
    }
    if !report.valid {
      // The journal does not verify: someone altered the data file. Raised once per place it
      // breaks (repeated verifications of the same break do not raise it again).
      let now = self.payments.now()
      let caller = Caller.current?.principal.identity ?? ""
      let key = Array("journal_break/\(report.firstInvalidSequence)".utf8)
      _ = try await self.mappingStorage {
        try await self.payments.writer.write { txn in
          guard try txn.get(key, in: .meta) == nil else { return }
          try txn.put(key, [1], in: .meta)
          try AlertLog.raise(
            &txn, at: now, severity: .critical, kind: .tampering,
            message: "the audit journal does not verify at entry \(report.firstInvalidSequence): \(report.message)",
            details: ["first_invalid_sequence": String(report.firstInvalidSequence), "verified_by": caller])
        }
      }
    }
    return .with {
      $0.valid = report.valid
      $0.entriesVerified = report.entriesVerified
      $0.firstInvalidSequence = report.firstInvalidSequence
      $0.headHash = Data(report.headHash)
      $0.message = report.message
      $0.checkpointsVerified = report.checkpointsVerified
      $0.lastCheckpointSequence = report.lastCheckpoint
      $0.checkpointsOtherCertificate = report.checkpointsOtherCertificate
    }
  }
}

extension Banklink_V1_Principal {
  init(_ principal: Principal, otpEnrolled: Bool) {
    self = .with {
      $0.identity = principal.identity
      $0.roles = principal.roles.sorted().map(Banklink_V1_Role.init)
      $0.approvalLimits = principal.approvalLimits.sorted { $0.key < $1.key }.map { currency, limit in
        .with {
          $0.minorUnits = limit
          $0.currencyCode = currency.code
        }
      }
      $0.otpEnrolled = otpEnrolled
    }
  }
}

extension Banklink_V1_Role {
  init(_ role: Role) {
    switch role {
    case .viewer: self = .viewer
    case .payer: self = .payer
    case .approver: self = .approver
    case .auditor: self = .auditor
    case .admin: self = .admin
    case .reconciler: self = .reconciler
    }
  }
}
