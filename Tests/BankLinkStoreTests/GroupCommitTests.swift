import BankLinkCore
import BankLinkStore
import BankLinkTestSupport
import Testing

@Suite("Group commit")
struct GroupCommitTests {
  static func key(_ index: Int) -> [UInt8] { Array("k\(index)".utf8) }

  static func writeConcurrently(_ writer: GroupCommitWriter, count: Int, failing: Set<Int> = []) async throws -> [Int: Bool] {
    struct Refused: Error {}
    return await withTaskGroup(of: (Int, Bool).self) { group in
      for index in 0..<count {
        group.addTask {
          do {
            try await writer.write { txn in
              try txn.put(Self.key(index), Array("v\(index)".utf8), in: .principals)
              if failing.contains(index) { throw Refused() }
            }
            return (index, true)
          } catch {
            return (index, false)
          }
        }
      }
      var outcomes: [Int: Bool] = [:]
      for await (index, ok) in group { outcomes[index] = ok }
      return outcomes
    }
  }

  @Test("concurrent writes share commits; a failing writer rolls back only its own writes")
  func batches() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 16))
      let writer = GroupCommitWriter(store: store)
      let failing: Set<Int> = [3, 50, 99]
      let outcomes = try await Self.writeConcurrently(writer, count: 200, failing: failing)
      #expect(outcomes.filter { !$0.value }.map(\.key).sorted() == failing.sorted())
      let stats = writer.statistics
      #expect(stats.writes == 200)
      #expect(stats.commits < 200, "200 concurrent writes should share commits, got \(stats.commits)")
      try store.withReadTransaction { txn in
        for index in 0..<200 {
          let value = try txn.get(Self.key(index), in: .principals)
          #expect((value != nil) == !failing.contains(index), "key \(index)")
        }
      }
    }
  }

  @Test("with group commit off, every write is its own commit")
  func oneCommitPerWrite() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 16))
      let writer = GroupCommitWriter(store: store, configuration: .init(groupCommit: false))
      _ = try await Self.writeConcurrently(writer, count: 50)
      #expect(writer.statistics.commits == 50)
      #expect(writer.statistics.largestBatch == 1)
    }
  }

  @Test("a failed commit fails every write of its batch, and the store keeps working")
  func failedCommit() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: Limits.minMapSizeMiB))
      let writer = GroupCommitWriter(store: store)
      let big = [UInt8](repeating: 1, count: 300 * 1024)
      var failures = 0
      for index in 0..<8 {
        do {
          try await writer.write { txn in try txn.put(Self.key(index), big, in: .principals) }
        } catch let error as StoreError {
          #expect(error.code == .mapFull)
          failures += 1
        }
      }
      #expect(failures > 0)
      let kept = try store.withReadTransaction { txn in try txn.get(Self.key(0), in: .principals) }
      #expect(kept == big)
    }
  }
}
