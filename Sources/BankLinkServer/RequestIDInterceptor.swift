import BankLinkCore
import BankLinkPKI
import Foundation
import GRPCCore
import Logging

/// Gives every call a request id (``RequestContext``): the client's `x-request-id` metadata when
/// it is acceptable (1–64 of `A-Z a-z 0-9 . _ : -`), else a new UUID. The id is returned in the
/// response's initial metadata (or the error's metadata), is on every log line written during the
/// call, and is kept in the audit records the call appends. The outermost interceptor.
public struct RequestIDInterceptor: ServerInterceptor {
  public static let metadataKey = "x-request-id"

  public init() {}

  /// The id of a call whose client offered `offered`: that one when acceptable, else a new UUID
  /// (also for the unary fast path, ``UnaryFastPath``).
  static func requestID(offered: String?) -> String {
    offered.flatMap { RequestContext.isAcceptable($0) ? $0 : nil } ?? UUID().uuidString.lowercased()
  }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let id = Self.requestID(offered: request.metadata[stringValues: Self.metadataKey].first { _ in true })
    var response: StreamingServerResponse<Output>
    do {
      response = try await RequestContext.$requestID.withValue(id) {
        try await RequestContext.$method.withValue(context.descriptor.fullyQualifiedMethod) { try await next(request, context) }
      }
    } catch var error as RPCError {
      error.metadata.addString(id, forKey: Self.metadataKey)
      throw error
    }
    switch response.accepted {
    case .failure(var error):
      error.metadata.addString(id, forKey: Self.metadataKey)
      response.accepted = .failure(error)
    case .success(var contents):
      contents.metadata.addString(id, forKey: Self.metadataKey)
      let producer = contents.producer
      let method = context.descriptor.fullyQualifiedMethod
      contents.producer = { writer in
        try await RequestContext.$requestID.withValue(id) { try await RequestContext.$method.withValue(method) { try await producer(writer) } }
      }
      response.accepted = .success(contents)
    }
    return response
  }
}

extension RequestIDInterceptor {
  /// Adds the call's `request_id`, `method` and caller `identity` to every log line written while
  /// a call is served (installed with `LoggingSystem.bootstrap` by banklinkd).
  public static let loggingMetadata = Logger.MetadataProvider {
    var metadata: Logger.Metadata = [:]
    if let id = RequestContext.requestID { metadata["request_id"] = .string(id) }
    if let method = RequestContext.method { metadata["method"] = .string(method) }
    if let caller = Caller.current { metadata["identity"] = .string(caller.peer.identity) }
    return metadata
  }
}
