import BankLinkCore
import Metrics
import BankLinkStore
import Synchronization

/// Wakes alert subscribers when new alerts are committed.
///
/// Subscribers pull: each reads the alert log from its own cursor (``AlertLog/page``) and waits
/// here when it has caught up. The hub holds no alerts and no per-subscriber queue of them, so a
/// slow subscriber costs only its own position, never the writers' time nor the others'
/// delivery; and because a subscriber reads committed records by sequence, it sees each alert
/// exactly once, in order, across reconnects and restarts.
///
/// After every commit of the store the hub reads the log's head (one small read); when it moved,
/// it reads the new alerts once into a ring of the most recent ones (``Limits/alertHubRecent``)
/// and each waiting subscriber's wake-up stream gets one element (buffering the newest only).
/// Live subscribers take new alerts from the ring instead of each reading the store; one whose
/// cursor is older than the ring reads the store.
public final class AlertHub: Sendable {
  public struct Subscription: Sendable {
    let id: UInt64
    /// One element per head change since the subscriber last looked (coalesced).
    public let wakeups: AsyncStream<Void>
    let hub: AlertHub

    public func cancel() { self.hub.remove(self.id) }
  }

  public enum Refusal: Error, Sendable, Hashable {
    case tooManySubscribers
    case tooManyForPrincipal
    case shuttingDown
  }

  private struct Subscriber {
    var principal: String
    var continuation: AsyncStream<Void>.Continuation
  }

  private struct State {
    var head: UInt64
    /// The most recent alerts, in sequence order, ending at `head` (once any was raised while
    /// this hub ran).
    var recent: [Alert] = []
    var subscribers: [UInt64: Subscriber] = [:]
    var nextID: UInt64 = 1
    var shutDown = false
  }

  let store: Store
  private let state: Mutex<State>

  public init(store: Store) throws {
    self.store = store
    self.state = Mutex(State(head: try store.withReadTransaction { try AlertLog.head($0) }))
    store.onCommit { [weak self] in self?.committed() }
  }

  /// The newest alert's sequence as last seen after a commit.
  public var head: UInt64 { self.state.withLock { $0.head } }

  public var subscriberCount: Int { self.state.withLock { $0.subscribers.count } }

  /// `mayUseReserved`: an admin or auditor, who may take the last
  /// ``Limits/reservedAlertSubscribers`` slots.
  public func subscribe(principal: String, mayUseReserved: Bool = false) throws(Refusal) -> Subscription {
    let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    let id = try self.state.withLock { state throws(Refusal) -> UInt64 in
      if state.shutDown { throw .shuttingDown }
      let slots = Limits.maxAlertSubscribers - (mayUseReserved ? 0 : Limits.reservedAlertSubscribers)
      guard state.subscribers.count < slots else { throw .tooManySubscribers }
      let mine = state.subscribers.values.reduce(0) { $0 + ($1.principal.utf8.elementsEqual(principal.utf8) ? 1 : 0) }
      guard mine < Limits.maxAlertSubscribersPerPrincipal else { throw .tooManyForPrincipal }
      let id = state.nextID
      state.nextID += 1
      state.subscribers[id] = Subscriber(principal: principal, continuation: continuation)
      return id
    }
    return Subscription(id: id, wakeups: stream, hub: self)
  }

  func remove(_ id: UInt64) {
    let removed = self.state.withLock { $0.subscribers.removeValue(forKey: id) }
    removed?.continuation.finish()
  }

  /// Ends every subscription (graceful shutdown): each stream completes after what it has sent.
  public func shutDown() {
    let subscribers = self.state.withLock { state -> [Subscriber] in
      state.shutDown = true
      defer { state.subscribers = [:] }
      return Array(state.subscribers.values)
    }
    for subscriber in subscribers { subscriber.continuation.finish() }
  }

  /// The alerts after `cursor`, at most `limit`, from the ring; nil when the ring does not hold
  /// the one right after `cursor` (the caller reads the store). Empty when `cursor` is the head.
  public func recent(after cursor: UInt64, limit: Int) -> [Alert]? {
    self.state.withLock { state in
      if cursor >= state.head { return [] }
      guard let first = state.recent.first?.sequence, first <= cursor + 1 else { return nil }
      let start = Int(cursor + 1 - first)
      guard start < state.recent.count else { return nil }
      return Array(state.recent[start..<min(state.recent.count, start + limit)])
    }
  }

  /// Alerts raised since the daemon started, by kind and severity (Prometheus).
  static let alertsMetric = "banklink_alerts_total"

  private func committed() {
    let known = self.state.withLock { $0.head }
    // The new alerts, read once for every subscriber (at most the ring's worth of the newest).
    guard
      let (head, fresh) = try? self.store.withReadTransaction({ txn -> (UInt64, [Alert]) in
        let head = try AlertLog.head(txn)
        guard head > known else { return (head, []) }
        let from = max(known, head > UInt64(Limits.alertHubRecent) ? head - UInt64(Limits.alertHubRecent) : 0)
        let page = try AlertLog.page(
          after: from, limit: Limits.alertHubRecent, scanLimit: Limits.alertHubRecent, filter: AlertFilter(), in: txn)
        return (head, page.alerts)
      })
    else { return }
    let (waiting, counted, unread) = self.state.withLock { state -> ([AsyncStream<Void>.Continuation], [Alert], UInt64) in
      guard head > state.head else { return ([], [], 0) }
      // Counted once each, by the call that moves the head past them.
      let counted = fresh.filter { $0.sequence > state.head }
      let unread = head - state.head - UInt64(counted.count)
      // Contiguous with what the ring holds, or the ring starts again from the fresh alerts.
      if let last = state.recent.last?.sequence, let first = fresh.first?.sequence, first == last + 1 {
        state.recent += fresh
      } else {
        state.recent = fresh
      }
      if state.recent.count > Limits.alertHubRecent { state.recent.removeFirst(state.recent.count - Limits.alertHubRecent) }
      state.head = head
      return (state.subscribers.values.map(\.continuation), counted, unread)
    }
    for alert in counted {
      Counter(label: Self.alertsMetric, dimensions: [("kind", alert.kind.rawValue), ("severity", alert.severity.name)]).increment()
    }
    // More alerts in one commit than the ring holds: the oldest are counted without a kind.
    if unread > 0 { Counter(label: Self.alertsMetric, dimensions: [("kind", "burst"), ("severity", "unknown")]).increment(by: Int64(unread)) }
    for continuation in waiting { continuation.yield() }
  }
}
