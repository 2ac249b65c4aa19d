import Metrics
import BankLinkCore
internal import CLMDB
import Synchronization

/// Runs write transactions from many concurrent callers, batching those that arrive together
/// into one LMDB write transaction and one synced commit (group commit). Each caller's work runs
/// in its own nested transaction, so a caller whose closure throws rolls back only its own
/// writes. A caller is resumed only after the commit that holds its writes is on disk: nothing
/// acknowledged is lost.
///
/// With `groupCommit` off every call gets its own synced commit, for measuring the difference.
public final class GroupCommitWriter: Sendable {
  /// Writes per group commit, and the time from the transaction's start to its synced commit.
  static let batchSize = Recorder(label: "banklink_store_commit_batch_size", aggregate: true)
  static let commitDuration = Metrics.Timer(label: "banklink_store_commit_duration_seconds")

  public struct Configuration: Sendable {
    public var groupCommit: Bool
    public var maxBatch: Int

    public init(groupCommit: Bool = true, maxBatch: Int = Limits.maxGroupCommitBatch) {
      self.groupCommit = groupCommit
      self.maxBatch = max(1, maxBatch)
    }
  }

  /// Counters for tests and metrics.
  public struct Statistics: Sendable, Hashable {
    public var writes = 0
    public var commits = 0
    public var largestBatch = 0
  }

  private struct Pending: Sendable {
    /// Runs the caller's closure in a nested transaction; returns what resumes the caller.
    let run: @Sendable (inout WriteTransaction) -> @Sendable () -> Void
    let fail: @Sendable (any Error) -> Void
  }

  private struct State {
    var pending: [Pending] = []
    var draining = false
    var statistics = Statistics()
  }

  public let store: Store
  public let configuration: Configuration
  private let state = Mutex(State())
  // The store's writer thread: LMDB allows one write transaction at a time, and a transaction
  // must begin and commit on the same thread (each drain runs entirely inside one job). Sharing
  // it with ``Store/write(_:)`` keeps all writers of the environment in line.
  private var writerThread: WriterThread { self.store.writerThread }

  public init(store: Store, configuration: Configuration = .init()) {
    self.store = store
    self.configuration = configuration
  }

  public var statistics: Statistics { self.state.withLock { $0.statistics } }

  /// Runs `body` in a write transaction and returns once its effects are durably committed.
  /// If `body` throws, none of its writes are kept and the error is rethrown.
  public func write<Result: Sendable>(
    _ body: @escaping @Sendable (inout WriteTransaction) throws -> Result
  ) async throws -> Result {
    // The caller's request id goes with its work to the writer thread (audit records keep it).
    let requestID = RequestContext.requestID
    return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Result, any Error>) in
      let pending = Pending(
        run: { txn in
          do {
            let result = try RequestContext.$requestID.withValue(requestID) { try txn.withNestedTransaction(body) }
            return { continuation.resume(returning: result) }
          } catch {
            return { continuation.resume(throwing: error) }
          }
        },
        fail: { error in continuation.resume(throwing: error) }
      )
      let startDrain = self.state.withLock { state -> Bool in
        state.pending.append(pending)
        if state.draining { return false }
        state.draining = true
        return true
      }
      if startDrain {
        self.writerThread.submit { self.drain() }
      }
    }
  }

  /// Commits one batch, then queues itself again behind whatever else waits on the writer thread
  /// (``Store/write(_:)`` callers), so a steady stream of group commits cannot starve them.
  private func drain() {
    let batch = self.state.withLock { state -> [Pending] in
      guard !state.pending.isEmpty else {
        state.draining = false
        return []
      }
      let size = self.configuration.groupCommit ? min(self.configuration.maxBatch, state.pending.count) : 1
      let batch = Array(state.pending.prefix(size))
      state.pending.removeFirst(size)
      return batch
    }
    if batch.isEmpty { return }
    do {
      let started = ContinuousClock.now
      let completions = try self.store.withWriteTransaction { txn in
        batch.map { $0.run(&txn) }
      }
      Self.commitDuration.recordNanoseconds((ContinuousClock.now - started).nanoseconds)
      Self.batchSize.record(batch.count)
      self.state.withLock {
        $0.statistics.writes += batch.count
        $0.statistics.commits += 1
        $0.statistics.largestBatch = max($0.statistics.largestBatch, batch.count)
      }
      for completion in completions { completion() }
    } catch {
      // The commit failed: nothing of the batch is written; every caller learns why.
      for pending in batch { pending.fail(error) }
    }
    self.writerThread.submit { self.drain() }
  }
}
