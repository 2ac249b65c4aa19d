import BankLinkCore
import BankLinkStore
import GRPCCore

/// One subscriber's delivery loop (`SubscribeAlerts`, and the fan-out benchmark): everything
/// committed after the cursor, page by page from the store, then `caughtUp` once, then each
/// wake-up's new alerts, until the subscription ends (shutdown) or `send` throws (the client
/// went away). A live subscriber more than ``Limits/maxAlertSubscriberLag`` behind the newest
/// alert is ended with RESOURCE_EXHAUSTED naming the sequence to resume after.
public enum AlertFeed {
  public static func run(
    store: Store, hub: AlertHub, subscription: AlertHub.Subscription, after start: UInt64, filter: AlertFilter,
    send: ([Alert]) async throws -> Void, caughtUp: (UInt64) async throws -> Void
  ) async throws {
    var cursor = start
    var wakeups = subscription.wakeups.makeAsyncIterator()
    var live = false
    while true {
      while true {
        // New alerts from the hub's ring when it holds them (one read of the store for every
        // subscriber); the store otherwise (a replay, or a subscriber behind the ring).
        let page: (alerts: [Alert], scannedThrough: UInt64, more: Bool)
        if let recent = hub.recent(after: cursor, limit: Limits.alertReplayPageSize) {
          page = (recent.filter(filter.matches), recent.last?.sequence ?? cursor, recent.count == Limits.alertReplayPageSize)
        } else {
          page = try withStore {
            try store.withReadTransaction { txn in
              try AlertLog.page(
                after: cursor, limit: Limits.alertReplayPageSize, scanLimit: Limits.alertReplayPageSize, filter: filter, in: txn)
            }
          }
        }
        // Writes of up to ``Limits/alertsPerWrite`` alerts: a subscriber that fell behind (a busy
        // daemon, a slow network) catches up in fewer, larger writes — one flush, one TLS record
        // each — so the cost per alert falls as the load rises, while one that stopped reading
        // holds at most one such write, not the whole page.
        var start = 0
        while start < page.alerts.count {
          let end = min(start + Limits.alertsPerWrite, page.alerts.count)
          try await send(Array(page.alerts[start..<end]))
          start = end
        }
        cursor = page.scannedThrough
        if !page.more { break }
        if live, hub.head > cursor, hub.head - cursor > Limits.maxAlertSubscriberLag {
          throw RPCError(
            code: .resourceExhausted,
            message: "this subscriber fell more than \(Limits.maxAlertSubscriberLag) alerts behind; resume with after_sequence \(cursor)")
        }
      }
      if !live {
        live = true
        try await caughtUp(cursor)
      }
      // Shutdown finishes the stream: the call ends cleanly and the client resumes elsewhere.
      guard await wakeups.next() != nil else { return }
    }
  }
}
