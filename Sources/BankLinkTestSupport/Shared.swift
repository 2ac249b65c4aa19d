import Synchronization

/// A value shared between the tasks of a test (a load generator and its checker), behind a lock.
public final class Shared<Value: Sendable>: Sendable {
  private let state: Mutex<Value>

  public init(_ value: Value) { self.state = Mutex(value) }

  public func withLock<T: Sendable>(_ body: (inout Value) -> T) -> T { self.state.withLock { body(&$0) } }
}
