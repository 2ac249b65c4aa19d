import BankLinkCore
import BankLinkPKI
import BankLinkProto
@testable import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import Testing

@Suite("Approval records on a real LMDB environment: the policy cache, the release check against the journal")
struct ApprovalStoreTests {
  static func policy(approvers: [String]) throws -> ApprovalPolicy {
    let message = ApprovalTests.twoLevels(firstLevel: approvers, secondLevel: ["carol"])
    guard case .success(let policy) = ApprovalPolicy.from(message) else { throw PolicyViolations(violations: []) }
    return policy
  }

  @Test("a policy read in a transaction that then aborted is never served for the version another policy takes")
  func abortedPolicyIsNotCached() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 16))
      let policies = ApprovalPolicyStore()
      let now = Instant(millisecondsSinceEpoch: 1_796_342_400_000)
      struct Aborted: Error {}
      // P is put and read (so cached) as version 1, in a transaction that aborts.
      #expect(throws: Aborted.self) {
        try store.withWriteTransaction { txn in
          _ = try policies.put(try Self.policy(approvers: ["mallory"]), expectedVersion: 0, by: "admin", at: now, txn: &txn)
          #expect(try policies.current(in: txn)?.rules.first?.requirement.levels.first?.principals == ["mallory"])
          throw Aborted()
        }
      }
      // Q takes version 1 for real: Q is what is in force.
      try store.withWriteTransaction { txn in
        _ = try policies.put(try Self.policy(approvers: ["alice"]), expectedVersion: 0, by: "admin", at: now, txn: &txn)
      }
      let current = try store.withReadTransaction { try policies.current(in: $0) }
      #expect(current?.version == 1)
      #expect(current?.rules.first?.requirement.levels.first?.principals == ["alice"], "\(String(describing: current))")
    }
  }

  @Test("release check: an altered instruction re-signed over its new digest, or stripped of its approval record, is blocked")
  func releaseCheckAgainstTheJournal() async throws {
    try await ApprovalTests.withLedger { server, ledger, clock, approver, key, secret, vault in
      var ids: [String] = []
      for (index, amount) in [Int64(200_000), 300_000].enumerated() {
        let created = try await ledger.create(PaymentLedger.Fixture.instruction(amount), idempotencyKey: "rj-\(index)", creator: "erp")
        clock.advance(milliseconds: Limits.otpStepSeconds * 1000)
        _ = try await ApprovalTests.approveOnLedger(
          ledger, created.payment.id, approver: approver, key: key, secret: secret, vault: vault, at: clock.now)
        ids.append(created.payment.id)
      }
      let store = ledger.writer.store
      try store.withWriteTransaction { txn in
        for id in ids {
          var payment = try Payment(record: try #require(try txn.get(Array(id.utf8), in: .payments)))
          payment.instruction.creditor.accountNumber = "6222 0000 9999 0001"
          try txn.put(Array(id.utf8), payment.record, in: .payments)
          if id == ids[0] {
            // Re-signed over the altered instruction's digest, so every signature verifies.
            var state = try #require(try ApprovalState.load(id, in: txn))
            let digest = ApprovalDigest.digest(paymentID: id, instruction: payment.instruction, policyVersion: state.policyVersion, level: 1)
            state.approvals[0].signature = try CertificateSignatures.sign(digest, with: key)
            try state.save(id, txn: &txn)
          } else {
            // Its approval record removed: a payment that needed none, as far as the record goes.
            _ = try txn.delete(Array(id.utf8), in: .approvals)
          }
        }
      }
      #expect(try await ledger.claimForSubmission(limit: 10).isEmpty)
      let resigned = try #require(try ledger.payment(ids[0]))
      #expect(resigned.status == .blocked && resigned.statusReason.contains("not the one journaled"), "\(resigned.statusReason)")
      let stripped = try #require(try ledger.payment(ids[1]))
      #expect(stripped.status == .blocked && stripped.statusReason.contains("approval record is missing"), "\(stripped.statusReason)")
      _ = server
    }
  }
}
