import Foundation

/// Runs blocking work (parsing or hashing a large file, synchronous LMDB writes) on a thread of
/// its own rather than on the cooperative pool, whose few threads (two on a 2-core host) would
/// otherwise stop serving RPCs for as long as the work takes.
public func onOwnThread<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
  try await withCheckedThrowingContinuation { continuation in
    let thread = Thread {
      continuation.resume(with: Swift.Result { try body() })
    }
    thread.stackSize = 8 << 20
    thread.start()
  }
}
