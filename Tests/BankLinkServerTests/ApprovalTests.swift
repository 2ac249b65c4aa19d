import BankLinkClient
import BankLinkCore
import BankLinkJournal
import BankLinkPKI
import BankLinkProto
import BankLinkServer
import BankLinkStore
import Crypto
import SwiftASN1
import BankLinkTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SwiftProtobuf
import Synchronization
import Testing
import X509

/// Approvals end to end over real mutual TLS: policy, separation of duties, levels in order,
/// signatures by the connection's certificate key, one-time passwords accepted once, lockout,
/// races for the last slot, rejection.
@Suite("Approvals")
struct ApprovalTests {
  static let principals = [
    Principal(identity: "erp", roles: [.payer]),
    Principal(identity: "dual", roles: [.payer, .approver]),
    Principal(identity: "alice", roles: [.approver]),
    Principal(identity: "bob", roles: [.approver]),
    Principal(identity: "carol", roles: [.approver]),
    Principal(identity: "admin", roles: [.admin]),
  ]

  typealias Payments = Banklink_V1_PaymentService.Client<HTTP2ClientTransport.Posix>
  typealias Admin = Banklink_V1_AdminService.Client<HTTP2ClientTransport.Posix>

  /// One principal's certificate files, key and (once enrolled) OTP secret.
  struct Person: Sendable {
    var files: ClientIdentityFiles
    var key: Certificate.PrivateKey
    var secret: [UInt8] = []
  }

  /// A server with every principal's certificate, OTP enrolled for the approvers, and `policy`.
  static func withApprovals<T: Sendable>(
    policy: Banklink_V1_ApprovalPolicy?,
    _ body: @Sendable (TestServer, [String: Person]) async throws -> T
  ) async throws -> T {
    try await withTestServer(principals: Self.principals) { server in
      var people: [String: Person] = [:]
      for principal in Self.principals {
        let files = try server.pki.client(commonName: principal.identity)
        people[principal.identity] = Person(
          files: files, key: try Certificate.PrivateKey(pemEncoded: String(contentsOfFile: files.keyPath, encoding: .utf8)))
      }
      let admin = people["admin"]!
      let enrolled = try await withBankLinkClient(server.client(admin.files)) { client in
        let admin = Admin(wrapping: client)
        var secrets: [String: [UInt8]] = [:]
        for name in ["dual", "alice", "bob", "carol"] {
          let response = try await admin.enrollOtp(.with { $0.identity = name })
          #expect(response.otpauthUri.hasPrefix("otpauth://totp/BankLink:\(name)?secret="))
          secrets[name] = try #require(Base32.decode(response.secretBase32))
        }
        if let policy { _ = try await admin.putApprovalPolicy(.with { $0.policy = policy }) }
        return secrets
      }
      for (name, secret) in enrolled { people[name]?.secret = secret }
      return try await body(server, people)
    }
  }

  static func payments<T: Sendable>(_ server: TestServer, _ person: Person, _ body: (Payments) async throws -> T) async throws -> T {
    try await withBankLinkClient(server.client(person.files)) { try await body(Payments(wrapping: $0)) }
  }

  static func create(_ server: TestServer, _ person: Person, key: String, amount: Int64) async throws -> Banklink_V1_Payment {
    try await Self.payments(server, person) {
      try await $0.createPayment(.with { $0.idempotencyKey = key; $0.instruction = PaymentTests.instruction(amount: amount) }).payment
    }
  }

  /// Approves as `person`: fetches the payment, checks the digest it is shown against its own
  /// computation (an approver signs what they verified), signs it, sends the current code.
  static func approve(
    _ server: TestServer, _ person: Person, _ paymentID: String, code: String? = nil, signature: [UInt8]? = nil
  ) async throws -> Banklink_V1_ApprovePaymentResponse {
    try await Self.payments(server, person) { payments in
      let payment = try await payments.getPayment(.with { $0.paymentID = paymentID })
      let signed = try signature ?? CertificateSignatures.sign(Array(payment.approvalDigest), with: person.key)
      return try await payments.approvePayment(.with {
        $0.paymentID = paymentID
        $0.signature = Data(signed)
        $0.otpCode = code ?? TOTP.code(secret: person.secret, step: TOTP.step(at: WallClock.now()))
      })
    }
  }

  static func twoLevels(firstLevel: [String] = ["alice", "bob"], secondLevel: [String], requireOTP: Bool = true) -> Banklink_V1_ApprovalPolicy {
    .with {
      $0.rules = [
        .with {
          $0.id = "large-cny"
          $0.match = .with { $0.minAmountMinor = 100_000; $0.currencyCodes = ["CNY"] }
          $0.requirement = .with {
            $0.levels = [
              .with { $0.requiredApprovals = 1; $0.principals = firstLevel },
              .with { $0.requiredApprovals = 1; $0.principals = secondLevel },
            ]
            $0.approvalWindowSeconds = 3_600
            $0.requireOtp = requireOTP
          }
        }
      ]
    }
  }

  @Test("two levels in order: the creator never approves, one principal counts once, the second level is named; the last approval releases")
  func twoLevelsInOrder() async throws {
    try await Self.withApprovals(policy: Self.twoLevels(firstLevel: ["alice", "bob", "dual"], secondLevel: ["carol"])) { server, people in
      // Under the threshold of the rule: released at once, no approvals.
      let small = try await Self.create(server, people["erp"]!, key: "small", amount: 99_999)
      #expect(small.status == .approved && small.approvalDigest.isEmpty)

      let payment = try await Self.create(server, people["dual"]!, key: "big", amount: 500_000)
      #expect(payment.status == .pendingApproval)
      #expect(payment.approvalDigest.count == 32)
      #expect(payment.hasApprovalDeadline)
      // The digest is the documented one, over the stored instruction, at level 1 of policy version 1.
      let stored = try #require(try server.payments.payment(payment.paymentID))
      #expect(Array(payment.approvalDigest) == ApprovalDigest.digest(
        paymentID: payment.paymentID, instruction: stored.instruction, policyVersion: 1, level: 1))

      // The creator holds the approver role, and still may not approve.
      let own = await #expect(throws: RPCError.self) { _ = try await Self.approve(server, people["dual"]!, payment.paymentID) }
      #expect(own?.code == .permissionDenied && own?.message.contains("separation of duties") == true, "\(String(describing: own))")

      // Level 2 names carol: she may not jump ahead of level 1.
      let early = await #expect(throws: RPCError.self) { _ = try await Self.approve(server, people["carol"]!, payment.paymentID) }
      #expect(early?.code == .permissionDenied, "\(String(describing: early))")

      let first = try await Self.approve(server, people["alice"]!, payment.paymentID)
      #expect(first.payment.status == .pendingApproval)
      #expect(first.payment.approvals.map(\.approver) == ["alice"])
      #expect(first.receipt.journalSequence > 0)
      // alice counts once: not again at level 2 (not named there anyway), and bob is not named.
      let again = await #expect(throws: RPCError.self) { _ = try await Self.approve(server, people["alice"]!, payment.paymentID) }
      #expect(again?.code == .failedPrecondition, "\(String(describing: again))")
      let bob = await #expect(throws: RPCError.self) { _ = try await Self.approve(server, people["bob"]!, payment.paymentID) }
      #expect(bob?.code == .permissionDenied && bob?.message.contains("principal carol") == true, "\(String(describing: bob))")

      // carol sees it as hers to approve; bob does not.
      let carolsQueue = try await Self.payments(server, people["carol"]!) { try await $0.listPendingApprovals(.init()).payments }
      #expect(carolsQueue.map(\.paymentID) == [payment.paymentID])
      let bobsQueue = try await Self.payments(server, people["bob"]!) { try await $0.listPendingApprovals(.init()).payments }
      #expect(bobsQueue.isEmpty)

      let last = try await Self.approve(server, people["carol"]!, payment.paymentID)
      #expect(last.payment.status == .approved)
      #expect(last.payment.approvals.map(\.level) == [1, 2])
      // Released: its outbox entry was written in the same transaction.
      #expect(try server.payments.outbox(limit: 100).contains { $0.entry.paymentID == payment.paymentID })
      // The journal has both approvals, the second with the release.
      let journal = try server.payments.auditEntries(limit: 1_000).filter { $0.object == payment.paymentID }
      // Each refusal is journaled with its reason, by the principal refused.
      #expect(journal.map(\.action) == [
        "payment.created", "payment.approval_refused", "payment.approval_refused", "payment.approval", "payment.approval_refused",
        "payment.approval_refused", "payment.approval",
      ])
      let refusals = journal.filter { $0.action == "payment.approval_refused" }
      #expect(refusals.map(\.principal) == ["dual", "carol", "alice", "bob"])
      #expect(zip(refusals, ["own_payment", "not_eligible", "already_approved", "not_eligible"]).allSatisfy {
        $0.payload.contains(#""reason":"\#($1)""#)
      })
      #expect(journal.last?.payload.contains(#""status":"approved""#) == true)
      #expect(journal.last?.principal == "carol")
    }
  }

  @Test("the signature must be by the connection's certificate key over this payment's digest at this level")
  func signatures() async throws {
    try await Self.withApprovals(policy: Self.twoLevels(secondLevel: ["carol"])) { server, people in
      let payment = try await Self.create(server, people["erp"]!, key: "sig", amount: 500_000)
      // bob's key signing for alice's connection.
      let bobsSignature = try CertificateSignatures.sign(Array(payment.approvalDigest), with: people["bob"]!.key)
      let foreign = await #expect(throws: RPCError.self) {
        _ = try await Self.approve(server, people["alice"]!, payment.paymentID, signature: bobsSignature)
      }
      #expect(foreign?.code == .invalidArgument && foreign?.message.contains("signature") == true)
      // The digest of another payment.
      let other = try await Self.create(server, people["erp"]!, key: "sig-2", amount: 600_000)
      let wrongPayment = try CertificateSignatures.sign(Array(other.approvalDigest), with: people["alice"]!.key)
      let misdirected = await #expect(throws: RPCError.self) {
        _ = try await Self.approve(server, people["alice"]!, payment.paymentID, signature: wrongPayment)
      }
      #expect(misdirected?.code == .invalidArgument)
      // Nothing was recorded, and alice's code was not used up: she approves with it now.
      let now = TOTP.code(secret: people["alice"]!.secret, step: TOTP.step(at: WallClock.now()))
      let approved = try await Self.approve(server, people["alice"]!, payment.paymentID, code: now)
      #expect(approved.payment.approvals.count == 1)
    }
  }

  @Test("a one-time password is accepted once; missing or wrong codes are refused; five wrong in a row lock approvals, journaled")
  func oneTimePasswords() async throws {
    try await Self.withApprovals(policy: Self.twoLevels(secondLevel: ["carol"])) { server, people in
      let alice = people["alice"]!
      let first = try await Self.create(server, people["erp"]!, key: "otp-1", amount: 500_000)
      let second = try await Self.create(server, people["erp"]!, key: "otp-2", amount: 500_000)
      let code = TOTP.code(secret: alice.secret, step: TOTP.step(at: WallClock.now()))
      _ = try await Self.approve(server, alice, first.paymentID, code: code)
      // The same code again, on another payment: a replay.
      let replay = await #expect(throws: RPCError.self) { _ = try await Self.approve(server, alice, second.paymentID, code: code) }
      #expect(replay?.code == .permissionDenied && replay?.message.contains("already used") == true, "\(String(describing: replay))")
      let missing = await #expect(throws: RPCError.self) {
        try await Self.payments(server, alice) { payments in
          _ = try await payments.approvePayment(.with {
            $0.paymentID = second.paymentID
            $0.signature = Data(try CertificateSignatures.sign(Array(second.approvalDigest), with: alice.key))
          })
        }
      }
      #expect(missing?.code == .invalidArgument && missing?.message.contains("otp_code") == true)

      // bob: five wrong codes lock him; then even the right code is refused.
      let bob = people["bob"]!
      var last: RPCError?
      for _ in 0..<Limits.maxOTPFailures {
        last = await #expect(throws: RPCError.self) { _ = try await Self.approve(server, bob, second.paymentID, code: "000000") }
      }
      #expect(last?.message.contains("locked until") == true, "\(String(describing: last))")
      let locked = await #expect(throws: RPCError.self) { _ = try await Self.approve(server, bob, second.paymentID) }
      #expect(locked?.code == .permissionDenied && locked?.message.contains("locked") == true)
      let journal = try server.payments.auditEntries(limit: 1_000).filter { $0.object == "bob" }.map(\.action)
      #expect(journal.filter { $0 == "otp.failed" }.count == Limits.maxOTPFailures - 1)
      #expect(journal.filter { $0 == "otp.locked" }.count == 1)
      let lockouts = try await withBankLinkClient(server.client(people["admin"]!.files)) {
        try await Banklink_V1_MonitoringService.Client(wrapping: $0).listAlerts(.with { $0.kinds = [.authenticationFailure] }).alerts
      }
      #expect(lockouts.count == 1 && lockouts.first?.details["principal"] == "bob" && lockouts.first?.severity == .warning)
      // The refused attempts recorded no approval.
      let payment = try await Self.payments(server, alice) { try await $0.getPayment(.with { $0.paymentID = second.paymentID }) }
      #expect(payment.approvals.isEmpty)
    }
  }

  @Test("an admin cannot enrol their own OTP: refused with SELF_ENROLMENT and journaled, no secret returned or enrolled")
  func noSelfEnrolment() async throws {
    try await Self.withApprovals(policy: nil) { server, people in
      let refused = await #expect(throws: RPCError.self) {
        try await withBankLinkClient(server.client(people["admin"]!.files)) { client in
          _ = try await Admin(wrapping: client).enrollOtp(.with { $0.identity = "admin" })
        }
      }
      #expect(refused?.code == .permissionDenied, "\(String(describing: refused))")
      #expect(try refused?.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first?.reason == "SELF_ENROLMENT")
      let journal = try server.payments.auditEntries(limit: 1_000).filter { $0.object == "admin" }
      #expect(journal.map(\.action) == ["otp.enrol_refused"] && journal.first?.principal == "admin", "\(journal)")
    }
  }

  @Test("two approvers racing for the last approval: exactly one releases the payment, the other is told it no longer waits")
  func raceForLastSlot() async throws {
    let policy = Banklink_V1_ApprovalPolicy.with {
      $0.rules = [.with {
        $0.id = "one"
        $0.match = .with { $0.minAmountMinor = 100_000 }
        $0.requirement = .with {
          $0.levels = [.with { $0.requiredApprovals = 1; $0.roles = [.approver] }]
          $0.approvalWindowSeconds = 3_600
          // Without OTP: each round's codes would be the same step's, refused as replays.
          $0.requireOtp = false
        }
      }]
    }
    try await Self.withApprovals(policy: policy) { server, people in
      for round in 0..<5 {
        let payment = try await Self.create(server, people["erp"]!, key: "race-\(round)", amount: 500_000)
        let outcomes = await withTaskGroup(of: Result<Banklink_V1_ApprovePaymentResponse, any Error>.self) { group in
          for name in ["alice", "bob", "carol"] {
            group.addTask {
              do { return .success(try await Self.approve(server, people[name]!, payment.paymentID, code: "")) } catch { return .failure(error) }
            }
          }
          return await group.reduce(into: []) { $0.append($1) }
        }
        let wins = outcomes.compactMap { try? $0.get() }
        let losses = outcomes.compactMap { outcome -> RPCError? in
          if case .failure(let error) = outcome { return error as? RPCError }
          return nil
        }
        #expect(wins.count == 1, "round \(round): \(outcomes)")
        #expect(losses.count == 2 && losses.allSatisfy { $0.code == .failedPrecondition }, "round \(round): \(losses)")
        #expect(try server.payments.outbox(limit: 1_000).filter { $0.entry.paymentID == payment.paymentID }.count == 1)
      }
    }
  }

  @Test("reject: by an eligible approver with a reason, never the creator; terminal, and the funds come back")
  func reject() async throws {
    try await Self.withApprovals(policy: Self.twoLevels(secondLevel: ["carol"])) { server, people in
      let before = try #require(try server.payments.available(accountID: "icbc-cny-001"))
      let payment = try await Self.create(server, people["dual"]!, key: "rej", amount: 500_000)
      #expect(try server.payments.available(accountID: "icbc-cny-001") == before - 500_000)
      let own = await #expect(throws: RPCError.self) {
        try await Self.payments(server, people["dual"]!) { _ = try await $0.rejectPayment(.with { $0.paymentID = payment.paymentID; $0.reason = "mine" }) }
      }
      #expect(own?.code == .permissionDenied)
      let noReason = await #expect(throws: RPCError.self) {
        try await Self.payments(server, people["bob"]!) { _ = try await $0.rejectPayment(.with { $0.paymentID = payment.paymentID }) }
      }
      #expect(noReason?.code == .invalidArgument && noReason?.message.contains("reason") == true)
      let rejected = try await Self.payments(server, people["bob"]!) {
        try await $0.rejectPayment(.with { $0.paymentID = payment.paymentID; $0.reason = "duplicate of INV-41" })
      }
      #expect(rejected.payment.status == .rejected && rejected.payment.statusReason == "duplicate of INV-41")
      #expect(rejected.receipt.journalSequence > 0)
      #expect(try server.payments.available(accountID: "icbc-cny-001") == before)
      let late = await #expect(throws: RPCError.self) { _ = try await Self.approve(server, people["alice"]!, payment.paymentID) }
      #expect(late?.code == .failedPrecondition)
    }
  }

  @Test("policy: every bad field is named, a shadowed rule is reported, a stale expected_version is refused; payments keep the version they were created under")
  func policy() async throws {
    try await Self.withApprovals(policy: nil) { server, people in
      try await withBankLinkClient(server.client(people["admin"]!.files)) { client in
        let admin = Admin(wrapping: client)
        #expect(try await admin.getApprovalPolicy(.init()).version == 0)
        let bad = Banklink_V1_ApprovalPolicy.with {
          $0.rules = [
            .with {
              $0.id = "wide"
              $0.match = .with { $0.minAmountMinor = 0 }
              $0.requirement = .with { $0.levels = [.with { $0.requiredApprovals = 0 }]; $0.approvalWindowSeconds = 5 }
            },
            .with {
              $0.id = "narrow"
              $0.match = .with { $0.minAmountMinor = 1_000; $0.currencyCodes = ["CNY", "yuan"]; $0.creditorCountries = ["cn"] }
              $0.requirement = .with { $0.levels = [.with { $0.requiredApprovals = 1; $0.principals = ["bad name"] }]; $0.approvalWindowSeconds = 600 }
            },
          ]
        }
        let refused = await #expect(throws: RPCError.self) { _ = try await admin.putApprovalPolicy(.with { $0.policy = bad }) }
        #expect(refused?.code == .invalidArgument)
        let fields = try refused?.unpackGoogleRPCStatus()?.details.compactMap(\.badRequest).flatMap(\.violations).map(\.field) ?? []
        #expect(fields.contains("policy.rules[1].match.currency_codes[1]"), "\(fields)")
        var fixedCurrency = bad
        fixedCurrency.rules[1].match.currencyCodes = ["CNY"]
        let refusedAgain = await #expect(throws: RPCError.self) { _ = try await admin.putApprovalPolicy(.with { $0.policy = fixedCurrency }) }
        let moreFields = try refusedAgain?.unpackGoogleRPCStatus()?.details.compactMap(\.badRequest).flatMap(\.violations).map(\.field) ?? []
        for field in [
          "policy.rules[0].requirement.approval_window_seconds", "policy.rules[0].requirement.levels[0].required_approvals",
          "policy.rules[0].requirement.levels[0].roles", "policy.rules[1].match.creditor_countries[0]",
          "policy.rules[1].requirement.levels[0].principals[0]", "policy.rules[1].match",
        ] {
          #expect(moreFields.contains(field), "\(field) not in \(moreFields)")
        }

        // v1: 2 approvals for everything over 1,000.00; a payment pinned to it.
        let v1 = try await admin.putApprovalPolicy(.with {
          $0.policy = .with {
            $0.rules = [.with {
              $0.id = "two"
              $0.match = .with { $0.minAmountMinor = 100_000 }
              $0.requirement = .with {
                $0.levels = [.with { $0.requiredApprovals = 2; $0.roles = [.approver] }]
                $0.approvalWindowSeconds = 3_600
              }
            }]
          }
        })
        #expect(v1.policy.version == 1 && v1.policy.updatedBy == "admin" && v1.receipt.journalSequence > 0)
        let pinned = try await Self.create(server, people["erp"]!, key: "pinned", amount: 500_000)
        // v2 needs only one; the payment made under v1 still needs two.
        let stale = await #expect(throws: RPCError.self) {
          _ = try await admin.putApprovalPolicy(.with { $0.expectedVersion = 7; $0.policy = v1.policy })
        }
        #expect(stale?.code == .aborted)
        var relaxed = v1.policy
        relaxed.rules[0].requirement.levels[0].requiredApprovals = 1
        let v2 = try await admin.putApprovalPolicy(.with { $0.expectedVersion = 1; $0.policy = relaxed })
        #expect(v2.policy.version == 2)
        let first = try await Self.approve(server, people["alice"]!, pinned.paymentID, code: "")
        #expect(first.payment.status == .pendingApproval)
        let second = try await Self.approve(server, people["bob"]!, pinned.paymentID, code: "")
        #expect(second.payment.status == .approved)
        // A payment made now needs one.
        let fresh = try await Self.create(server, people["erp"]!, key: "fresh", amount: 500_000)
        #expect(try await Self.approve(server, people["alice"]!, fresh.paymentID, code: "").payment.status == .approved)
        #expect(try await admin.getApprovalPolicy(.init()).version == 2)
      }
    }
  }

  // MARK: The ledger with a clock of the test's

  /// A ledger over the test server's store whose clock the test moves; default policy
  /// (version 0) with a threshold of 1,000 units: one approver, OTP, a day's window.
  static func withLedger<T: Sendable>(
    _ body: @Sendable (TestServer, PaymentLedger, TestClock, PaymentLedger.Approver, Certificate.PrivateKey, [UInt8], OTPVault) async throws -> T
  ) async throws -> T {
    try await withTestServer(principals: Self.principals) { server in
      let clock = TestClock(WallClock.now())
      let ledger = PaymentLedger(
        writer: server.payments.writer, configuration: .init(approvalThresholdMajorUnits: 1_000), now: { clock.now })
      let files = try server.pki.client(commonName: "alice")
      let certificate = try Certificate(pemEncoded: String(contentsOfFile: files.certificatePath, encoding: .utf8))
      var serializer = DER.Serializer()
      try serializer.serialize(certificate)
      let approver = PaymentLedger.Approver(
        principal: Principal(identity: "alice", roles: [.approver]), certificate: serializer.serializedBytes,
        publicKey: certificate.publicKey)
      let key = try Certificate.PrivateKey(pemEncoded: String(contentsOfFile: files.keyPath, encoding: .utf8))
      let vault = OTPVault(key: SymmetricKey(size: .bits256))
      let secret = TOTP.newSecret()
      _ = try await ledger.enrollOTP("alice", secret: secret, vault: vault, by: "admin", at: clock.now)
      return try await body(server, ledger, clock, approver, key, secret, vault)
    }
  }

  static func approveOnLedger(
    _ ledger: PaymentLedger, _ id: String, approver: PaymentLedger.Approver, key: Certificate.PrivateKey, secret: [UInt8],
    vault: OTPVault, at time: Instant
  ) async throws -> PaymentLedger.Approved {
    let payment = try #require(try ledger.payment(id))
    let state = try #require(try ledger.approvalState(id))
    let digest = ApprovalDigest.digest(
      paymentID: id, instruction: payment.instruction, policyVersion: state.policyVersion, level: state.currentLevel ?? 1)
    return try await ledger.approve(
      id, by: approver, signature: try CertificateSignatures.sign(digest, with: key),
      otpCode: TOTP.code(secret: secret, step: TOTP.step(at: time)), comment: "", vault: vault)
  }

  @Test("a passed approval window expires the payment and frees its funds, by the expiry pass or by a late approval")
  func expiry() async throws {
    try await Self.withLedger { server, ledger, clock, approver, key, secret, vault in
      let before = try #require(try ledger.available(accountID: "icbc-cny-001"))
      let first = try await ledger.create(PaymentLedger.Fixture.instruction(200_000), idempotencyKey: "exp-1", creator: "erp")
      let second = try await ledger.create(PaymentLedger.Fixture.instruction(300_000), idempotencyKey: "exp-2", creator: "erp")
      #expect(first.payment.status == .pendingApproval)
      #expect(try ledger.available(accountID: "icbc-cny-001") == before - 500_000)
      // A second before the deadline nothing expires.
      clock.advance(milliseconds: Limits.defaultApprovalWindowSeconds * 1000 - 1000)
      #expect(try await ledger.expireOverdue() == 0)
      clock.advance(milliseconds: 2000)
      // The approval arrives late: it expires the payment instead, and says so.
      await #expect(throws: PaymentLedger.ApprovalRefusal.expired) {
        _ = try await Self.approveOnLedger(
          ledger, second.payment.id, approver: approver, key: key, secret: secret, vault: vault, at: clock.now)
      }
      #expect(try ledger.payment(second.payment.id)?.status == .expired)
      #expect(try await ledger.expireOverdue() == 1)
      #expect(try ledger.payment(first.payment.id)?.status == .expired)
      #expect(try ledger.available(accountID: "icbc-cny-001") == before)
      let journal = try ledger.auditEntries(limit: 1_000).filter { $0.action == "payment.expired" }.map(\.object)
      #expect(Set(journal) == [first.payment.id, second.payment.id])
      // Nothing left to list or expire.
      #expect(try ledger.pendingApprovals(for: approver.principal, after: nil, limit: 10).payments.isEmpty)
      #expect(try await ledger.expireOverdue() == 0)
      _ = server
    }
  }

  @Test("lockout after lockout with no right code between them locks approvals until the OTP is enrolled again")
  func otpLockoutsEscalate() async throws {
    try await Self.withLedger { server, ledger, clock, approver, key, secret, vault in
      let id = try await ledger.create(PaymentLedger.Fixture.instruction(200_000), idempotencyKey: "lock-1", creator: "erp").payment.id
      func attempt(_ code: String) async throws -> PaymentLedger.ApprovalRefusal? {
        let payment = try #require(try ledger.payment(id))
        let state = try #require(try ledger.approvalState(id))
        let digest = ApprovalDigest.digest(paymentID: id, instruction: payment.instruction, policyVersion: state.policyVersion, level: 1)
        do {
          _ = try await ledger.approve(
            id, by: approver, signature: try CertificateSignatures.sign(digest, with: key), otpCode: code, comment: "", vault: vault)
          return nil
        } catch let refusal as PaymentLedger.ApprovalRefusal {
          return refusal
        }
      }
      // A right code between lockouts starts the count again.
      for _ in 0..<Limits.maxOTPFailures { _ = try await attempt("000000") }
      clock.advance(milliseconds: Limits.otpLockoutSeconds * 1000 + 1)
      let other = try await ledger.create(PaymentLedger.Fixture.instruction(200_000), idempotencyKey: "lock-2", creator: "erp").payment.id
      _ = try await Self.approveOnLedger(ledger, other, approver: approver, key: key, secret: secret, vault: vault, at: clock.now)
      for lockout in 1...Limits.maxOTPLockouts {
        var last: PaymentLedger.ApprovalRefusal?
        for _ in 0..<Limits.maxOTPFailures { last = try await attempt("000000") }
        guard case .otpRejected(_, let until?) = last else {
          Issue.record("lockout \(lockout): \(String(describing: last))")
          return
        }
        if lockout < Limits.maxOTPLockouts {
          #expect(until == clock.now.adding(milliseconds: Limits.otpLockoutSeconds * 1000), "lockout \(lockout)")
          clock.advance(milliseconds: Limits.otpLockoutSeconds * 1000 + 1)
        } else {
          #expect(until.millisecondsSinceEpoch == Int64.max)
        }
      }
      // Hours later even the right code is refused; the journal says until when.
      clock.advance(milliseconds: 2 * 3_600_000)
      let locked = try await attempt(TOTP.code(secret: secret, step: TOTP.step(at: clock.now)))
      guard case .otpLocked(let until)? = locked, until.millisecondsSinceEpoch == Int64.max else {
        Issue.record("\(String(describing: locked))")
        return
      }
      let journal = try ledger.auditEntries(limit: 1_000).filter { $0.object == "alice" && $0.action == "otp.locked" }
      #expect(journal.count == Limits.maxOTPLockouts + 1 && journal.last?.payload.contains("re-enrolment") == true)
      // Enrolled again by an admin: the new secret's code approves.
      let fresh = TOTP.newSecret()
      _ = try await ledger.enrollOTP("alice", secret: fresh, vault: vault, by: "admin", at: clock.now)
      #expect(try await attempt(TOTP.code(secret: fresh, step: TOTP.step(at: clock.now))) == nil)
      _ = server
    }
  }

  @Test("release check: an approved payment whose stored instruction was altered is blocked, never sent, and journaled")
  func releaseCheck() async throws {
    try await Self.withLedger { server, ledger, clock, approver, key, secret, vault in
      let before = try #require(try ledger.available(accountID: "icbc-cny-001"))
      let honest = try await ledger.create(PaymentLedger.Fixture.instruction(200_000), idempotencyKey: "rc-1", creator: "erp")
      let altered = try await ledger.create(PaymentLedger.Fixture.instruction(300_000), idempotencyKey: "rc-2", creator: "erp")
      let now = clock.now
      _ = try await Self.approveOnLedger(ledger, honest.payment.id, approver: approver, key: key, secret: secret, vault: vault, at: now)
      // The next code for the second approval (a code is accepted once).
      let later = now.adding(milliseconds: Limits.otpStepSeconds * 1000)
      clock.advance(milliseconds: Limits.otpStepSeconds * 1000)
      let approved = try await Self.approveOnLedger(
        ledger, altered.payment.id, approver: approver, key: key, secret: secret, vault: vault, at: later)
      #expect(approved.payment.status == .approved)

      // An insider edits the approved payment in the data file: another beneficiary account.
      var edited = approved.payment
      edited.instruction.creditor.accountNumber = "6222 0000 9999 0001"
      let record = edited.record
      try ledger.writer.store.withWriteTransaction { try $0.put(Array(edited.id.utf8), record, in: .payments) }

      let claimed = try await ledger.claimForSubmission(limit: 10)
      #expect(claimed.map(\.payment.id) == [honest.payment.id])
      let blocked = try #require(try ledger.payment(altered.payment.id))
      #expect(blocked.status == .blocked)
      #expect(blocked.statusReason.contains("signature does not verify"), "\(blocked.statusReason)")
      #expect(try ledger.outbox(limit: 10).allSatisfy { $0.entry.paymentID != altered.payment.id })
      #expect(try ledger.available(accountID: "icbc-cny-001") == before - 200_000)
      let journal = try ledger.auditEntries(limit: 1_000).filter { $0.object == altered.payment.id }.map(\.action)
      #expect(journal.last == "payment.blocked")
      // And raised, in the same transaction, as a critical tampering alert.
      let alerts = try ledger.writer.store.withReadTransaction {
        try AlertLog.page(after: 0, limit: 10, scanLimit: 100, filter: AlertFilter(), in: $0).alerts
      }
      #expect(alerts.contains { $0.kind == .tampering && $0.severity == .critical && $0.paymentID == altered.payment.id })
      _ = server
    }
  }
}

@Suite("Approvals: the policy of the configuration file")
struct ConfiguredPolicyTests {
  @Test("a configured policy is put once as a new version, and not again while its rules are in force")
  func adoptedOnce() async throws {
    try await withTestServer(principals: ApprovalTests.principals) { server in
      let json = try String(contentsOfFile: ConfigurationExample.policyPath, encoding: .utf8)
      guard case .success(let policy) = ApprovalPolicy.parse(json: json) else {
        Issue.record("the example policy does not parse")
        return
      }
      #expect(try await server.payments.adoptConfiguredPolicy(policy) == 1)
      #expect(try await server.payments.adoptConfiguredPolicy(policy) == nil)
      let journal = try server.payments.auditEntries(limit: 100).filter { $0.action == "policy.changed" }
      #expect(journal.count == 1 && journal.first?.principal == "configuration")
      // A payment is now pinned to version 1.
      let created = try await server.payments.create(PaymentLedger.Fixture.instruction(20_000_000), idempotencyKey: "cfg", creator: "erp")
      #expect(try server.payments.approvalState(created.payment.id)?.policyVersion == 1)
    }
  }
}

enum ConfigurationExample {
  static let policyPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("docs/examples/approval-policy.json").path
}

@Suite("Approvals: migration of payments waiting under schema 1")
struct ApprovalMigrationTests {
  @Test("a payment an earlier build left in pending_approval gets the default requirement, a window and a place in the queue")
  func migratesWaitingPayments() async throws {
    try await withTemporaryDirectory { directory in
      let path = directory.appending("data")
      let created = Instant(millisecondsSinceEpoch: 1_764_000_000_000)
      let waiting = Payment(
        id: "pay-s000000000000007", instruction: PaymentLedger.Fixture.instruction(500_000_000), status: .pendingApproval,
        creator: "erp", idempotencyKey: "old", endToEndID: "BL1764000000000007", createdAt: created, updatedAt: created)
      let settled = Payment(
        id: "pay-s000000000000008", instruction: PaymentLedger.Fixture.instruction(100), status: .accepted,
        creator: "erp", idempotencyKey: "old-2", endToEndID: "BL1764000000000008", createdAt: created, updatedAt: created)
      do {
        let old = try Store(configuration: .init(directory: path, mapSizeMiB: 16, schemaVersion: 1))
        try old.withWriteTransaction { txn in
          try txn.put(Array(waiting.id.utf8), waiting.record, in: .payments)
          try txn.put(Array(settled.id.utf8), settled.record, in: .payments)
        }
      }
      let clock = TestClock(WallClock.now())
      let store = try Store(configuration: .init(
        directory: path, mapSizeMiB: 16, migrations: [PaymentLedger.schemaMigration(now: { clock.now })]))
      #expect(store.migratedFrom == 1)
      let ledger = PaymentLedger(writer: GroupCommitWriter(store: store), configuration: .init(), now: { clock.now })
      let state = try #require(try ledger.approvalState(waiting.id))
      #expect(state.policyVersion == 0 && state.requirement.levels.count == 1 && state.requirement.requireOTP)
      #expect(try ledger.approvalState(settled.id) == nil)
      let alice = Principal(identity: "alice", roles: [.approver])
      #expect(try ledger.pendingApprovals(for: alice, after: nil, limit: 10).payments.map(\.0.id) == [waiting.id])
      #expect(try ledger.auditEntries(limit: 10).map(\.action) == ["payment.approval_required"])
      // It expires like any other when its window passes.
      clock.advance(milliseconds: Limits.defaultApprovalWindowSeconds * 1000 + 1)
      #expect(try await ledger.expireOverdue() == 1)
      #expect(try ledger.payment(waiting.id)?.status == .expired)
    }
  }
}

/// A clock the test moves.
final class TestClock: Sendable {
  private let instant: Mutex<Instant>
  init(_ start: Instant) { self.instant = Mutex(start) }
  var now: Instant { self.instant.withLock { $0 } }
  func advance(milliseconds: Int64) { self.instant.withLock { $0 = $0.adding(milliseconds: milliseconds) } }
}

extension PaymentLedger {
  enum Fixture {
    static func instruction(_ amount: Int64) -> PaymentInstruction {
      PaymentInstruction(
        debtorAccountID: "icbc-cny-001",
        creditor: Creditor(name: "Shanghai Huaxin Trading Co., Ltd.", accountNumber: "3100 2011 0904 0012 345", bic: "CMBCCNBS", country: "CN"),
        amount: Money(minorUnits: amount, currency: CurrencyCode("CNY")!), purpose: "INV-2026-0042", requestedExecutionDate: "",
        type: .domestic)
    }
  }
}
