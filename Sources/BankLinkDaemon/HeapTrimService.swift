import BankLinkCore
import CBankLinkThreads
import ServiceLifecycle

/// Gives the heap a burst of calls grew back to the system once the burst is over.
///
/// glibc keeps memory it freed for reuse, so after a burst of calls served by gRPC Swift (each
/// call's task holds tens of KB of async frames while it lives) the daemon's RSS stayed at the
/// burst's peak. Every ``Limits/heapTrimCheckSeconds`` this looks at how many calls were
/// started; when some were in the previous period and none in this one, the load has ended and
/// it trims the heap once (`malloc_trim`, ``banklink_release_free_heap``). It never trims under
/// a steady load, where the memory would only be faulted back in.
struct HeapTrimService: Service {
  let interval: Duration
  /// Calls started since the daemon started (any monotonic count of calls).
  let callsStarted: @Sendable () -> Int

  init(interval: Duration = .seconds(Limits.heapTrimCheckSeconds), callsStarted: @escaping @Sendable () -> Int) {
    self.interval = interval
    self.callsStarted = callsStarted
  }

  /// Whether a period in which `delta` calls started, after one in which `previousDelta` did,
  /// ends a burst.
  static func burstEnded(previousDelta: Int, delta: Int) -> Bool {
    previousDelta > 0 && delta == 0
  }

  func run() async throws {
    var last = self.callsStarted()
    var lastDelta = 0
    while !Task.isCancelled && !Task.isShuttingDownGracefully {
      try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
      if Task.isCancelled || Task.isShuttingDownGracefully { return }
      let now = self.callsStarted()
      let delta = now - last
      if Self.burstEnded(previousDelta: lastDelta, delta: delta) {
        _ = banklink_release_free_heap()
      }
      (last, lastDelta) = (now, delta)
    }
  }
}
