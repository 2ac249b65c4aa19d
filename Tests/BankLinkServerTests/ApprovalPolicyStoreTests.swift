import BankLinkCore
import BankLinkProto
@testable import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import Testing

@Suite("Approval policy store on a real LMDB environment")
struct ApprovalPolicyStoreTests {
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
}
