import BankLinkCore
import BankLinkProto
import GRPCCore
import SwiftProtobuf
import Synchronization

/// Serving status reported by `grpc.health.v1.Health`, shared by the service handler and the
/// daemon (which marks everything NOT_SERVING when it starts to drain).
public final class HealthStatus: Sendable {
  typealias Status = Grpc_Health_V1_HealthCheckResponse.ServingStatus

  private struct State {
    var serving = true
    var stopped = false
    var nextWatcherID = 0
    var watchers: [Int: (principal: String, continuation: AsyncStream<Bool>.Continuation)] = [:]
  }

  /// The services reported, besides the overall server status under "".
  let services: Set<String>
  private let state = Mutex(State())

  init(services: Set<String>) {
    self.services = services.union([""])
  }

  public var isServing: Bool { self.state.withLock { $0.serving } }

  /// Marks the server NOT_SERVING and ends every Watch stream: called when draining begins, so
  /// load balancers stop sending new work and no stream holds up the shutdown.
  public func beginShutdown() {
    let watchers = self.state.withLock { state in
      state.serving = false
      state.stopped = true
      defer { state.watchers.removeAll() }
      return state.watchers.values.map(\.continuation)
    }
    for watcher in watchers {
      watcher.yield(false)
      watcher.finish()
    }
  }

  func status(of service: String) -> Status? {
    guard self.services.contains(service) else { return nil }
    return self.isServing ? .serving : .notServing
  }

  /// Why a Watch was not registered.
  enum WatchRefusal: Error, Equatable {
    /// All ``Limits/maxHealthWatchers`` slots are taken.
    case serverFull
    /// This principal holds ``Limits/maxHealthWatchersPerPrincipal`` slots already.
    case principalFull
  }

  /// One registered Watch: its updates, and `end()` to free its slot (idempotent).
  struct Watcher: Sendable {
    let updates: AsyncStream<Bool>
    let continuation: AsyncStream<Bool>.Continuation

    func end() { self.continuation.finish() }
  }

  /// A stream of serving flags for `principal`, starting with the current one. The slot is
  /// freed when the stream ends: the server drains, the watcher calls `end()`, or the consuming
  /// task is cancelled.
  func watch(principal: String) -> Result<Watcher, WatchRefusal> {
    let (stream, continuation) = AsyncStream.makeStream(of: Bool.self, bufferingPolicy: .bufferingNewest(1))
    let registered: Result<Bool, WatchRefusal> = self.state.withLock { state in
      if state.stopped { return .success(false) }
      guard state.watchers.count < Limits.maxHealthWatchers else { return .failure(.serverFull) }
      guard state.watchers.values.lazy.filter({ $0.principal == principal }).count < Limits.maxHealthWatchersPerPrincipal else {
        return .failure(.principalFull)
      }
      let id = state.nextWatcherID
      state.nextWatcherID += 1
      state.watchers[id] = (principal, continuation)
      continuation.onTermination = { [weak self] _ in
        self?.state.withLock { _ = $0.watchers.removeValue(forKey: id) }
      }
      continuation.yield(state.serving)
      return .success(true)
    }
    switch registered {
    case .failure(let refusal):
      return .failure(refusal)
    case .success(false):
      continuation.yield(false)
      continuation.finish()
      return .success(Watcher(updates: stream, continuation: continuation))
    case .success(true):
      return .success(Watcher(updates: stream, continuation: continuation))
    }
  }

  /// Open Watch slots (tests and diagnostics).
  public var watcherCount: Int { self.state.withLock { $0.watchers.count } }
}

/// `grpc.health.v1.Health`: the standard health checking protocol.
struct HealthServiceHandler: Grpc_Health_V1_Health.SimpleServiceProtocol {
  let status: HealthStatus

  func check(
    request: Grpc_Health_V1_HealthCheckRequest,
    context: ServerContext
  ) async throws -> Grpc_Health_V1_HealthCheckResponse {
    try Self.check(request, status: self.status)
  }

  /// What `Check` answers (also from the unary fast path, ``UnaryFastPath``).
  static func check(_ request: Grpc_Health_V1_HealthCheckRequest, status: HealthStatus) throws -> Grpc_Health_V1_HealthCheckResponse {
    guard let serving = status.status(of: request.service) else {
      throw RPCError(code: .notFound, message: "unknown service '\(LogText.prefix(request.service))'")
    }
    return .with { $0.status = serving }
  }

  func list(request: Grpc_Health_V1_HealthListRequest, context: ServerContext) async throws -> Grpc_Health_V1_HealthListResponse {
    var response = Grpc_Health_V1_HealthListResponse()
    for service in self.status.services {
      response.statuses[service] = .with { $0.status = self.status.status(of: service) ?? .unknown }
    }
    return response
  }

  func watch(
    request: Grpc_Health_V1_HealthCheckRequest,
    response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
    context: ServerContext
  ) async throws {
    guard self.status.services.contains(request.service) else {
      try await response.write(.with { $0.status = .serviceUnknown })
      return
    }
    let principal = Caller.current?.principal.identity ?? ""
    let watcher: HealthStatus.Watcher
    switch self.status.watch(principal: principal) {
    case .success(let registered): watcher = registered
    case .failure(.serverFull):
      throw RPCError(code: .resourceExhausted, message: "too many Health/Watch streams (limit \(Limits.maxHealthWatchers))")
    case .failure(.principalFull):
      throw RPCError(
        code: .resourceExhausted,
        message: "too many Health/Watch streams for this caller (limit \(Limits.maxHealthWatchersPerPrincipal) per principal)")
    }
    // gRPC signals a cancelled RPC (the caller went away, its deadline passed, the server is
    // stopping) through the context, not by cancelling this task: end the stream then, so the
    // slot is freed at once.
    defer { watcher.end() }
    try await withRPCCancellationHandler {
      for await serving in watcher.updates {
        try await response.write(.with { $0.status = serving ? .serving : .notServing })
      }
    } onCancelRPC: {
      watcher.end()
    }
  }
}
