import BankLinkCore
import GRPCCore
import Metrics

/// Counts every RPC by method and status code and times it by method (swift-metrics; exported
/// by the daemon in the Prometheus format when `metrics.listen` is set): the outermost
/// interceptor, so calls refused by authorization are counted too. A streaming response is timed
/// and counted when its last message is written.
public struct MetricsInterceptor: ServerInterceptor {
  static let requests = "banklink_rpc_requests_total"
  static let duration = "banklink_rpc_duration_seconds"

  public init() {}

  /// Status codes as gRPC names them (`grpc_code` in other servers' metrics).
  static let codeNames: [Int: String] = [
    1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND", 6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
  ]

  static func record(_ method: MethodDescriptor, _ code: RPCError.Code?, since start: ContinuousClock.Instant) {
    let name = method.fullyQualifiedMethod
    let codeName = code.map { Self.codeNames[$0.rawValue] ?? "UNKNOWN" } ?? "OK"
    Counter(label: Self.requests, dimensions: [("method", name), ("code", codeName)]).increment()
    Metrics.Timer(label: Self.duration, dimensions: [("method", name)]).recordNanoseconds((ContinuousClock.now - start).nanoseconds)
  }

  static func code(of error: any Error) -> RPCError.Code {
    if let error = error as? RPCError { return error.code }
    if let convertible = error as? any RPCErrorConvertible { return convertible.rpcErrorCode }
    return .unknown
  }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let start = ContinuousClock.now
    let method = context.descriptor
    var response: StreamingServerResponse<Output>
    do {
      response = try await next(request, context)
    } catch {
      Self.record(method, Self.code(of: error), since: start)
      throw error
    }
    switch response.accepted {
    case .failure(let error):
      Self.record(method, error.code, since: start)
    case .success(var contents):
      let producer = contents.producer
      contents.producer = { writer in
        do {
          let trailers = try await producer(writer)
          Self.record(method, nil, since: start)
          return trailers
        } catch {
          Self.record(method, Self.code(of: error), since: start)
          throw error
        }
      }
      response.accepted = .success(contents)
    }
    return response
  }
}
