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
    var watchers: [Int: AsyncStream<Bool>.Continuation] = [:]
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
      return Array(state.watchers.values)
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

  /// A stream of serving flags, starting with the current one; nil when too many are open.
  func watch() -> AsyncStream<Bool>? {
    let (stream, continuation) = AsyncStream.makeStream(of: Bool.self, bufferingPolicy: .bufferingNewest(1))
    let registered: Bool? = self.state.withLock { state in
      if state.stopped { return false }
      guard state.watchers.count < Limits.maxHealthWatchers else { return nil }
      let id = state.nextWatcherID
      state.nextWatcherID += 1
      state.watchers[id] = continuation
      continuation.onTermination = { [weak self] _ in
        self?.state.withLock { _ = $0.watchers.removeValue(forKey: id) }
      }
      continuation.yield(state.serving)
      return true
    }
    switch registered {
    case nil:
      return nil
    case false?:
      continuation.yield(false)
      continuation.finish()
      return stream
    case true?:
      return stream
    }
  }
}

/// `grpc.health.v1.Health`: the standard health checking protocol.
struct HealthServiceHandler: Grpc_Health_V1_Health.SimpleServiceProtocol {
  let status: HealthStatus

  func check(
    request: Grpc_Health_V1_HealthCheckRequest,
    context: ServerContext
  ) async throws -> Grpc_Health_V1_HealthCheckResponse {
    guard let status = self.status.status(of: request.service) else {
      throw RPCError(code: .notFound, message: "unknown service '\(request.service)'")
    }
    return .with { $0.status = status }
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
    guard let updates = self.status.watch() else {
      throw RPCError(code: .resourceExhausted, message: "too many Health/Watch streams (limit \(Limits.maxHealthWatchers))")
    }
    for await serving in updates {
      try await response.write(.with { $0.status = serving ? .serving : .notServing })
    }
  }
}
