import BankLinkCore
import BankLinkPKI
import Foundation
import GRPCCore
import Synchronization
import Logging

/// Gives every call a request id (``RequestContext``): the client's `x-request-id` metadata when
/// it is acceptable (1–64 of `A-Z a-z 0-9 . _ : -`), else a new UUID. The id is returned in the
/// response's initial metadata (or the error's metadata), is on every log line written during the
/// call, and is kept in the audit records the call appends. The outermost interceptor.
public struct RequestIDInterceptor: ServerInterceptor {
  public static let metadataKey = "x-request-id"

  /// Counts the calls it sees (nil: none), for ``GatewayServer/callsStarted``.
  let calls: CallCount?

  public init() {
    self.calls = nil
  }

  init(counting calls: CallCount) {
    self.calls = calls
  }

  /// A count of calls, shared between the interceptor and the server.
  final class CallCount: Sendable {
    let value = Atomic<Int>(0)
  }

  /// The id of a call whose client offered `offered`: that one when acceptable, else a new UUID
  /// (also for the unary fast path, ``UnaryFastPath``).
  static func requestID(offered: String?) -> String {
    offered.flatMap { RequestContext.isAcceptable($0) ? $0 : nil } ?? Self.newID()
  }

  /// A random (version 4) UUID, lower-case, as `UUID().uuidString.lowercased()` writes it — but
  /// from the system's random generator (`getrandom`): Foundation's `UUID()` opens, reads and
  /// closes `/dev/urandom` on every call here, which was several per cent of a fast call's CPU.
  static func newID() -> String {
    var generator = SystemRandomNumberGenerator()
    var high = generator.next() as UInt64
    var low = generator.next() as UInt64
    high = (high & ~0xF000) | 0x4000  // version 4
    low = (low & ~(0xC000 << 48)) | (0x8000 << 48)  // variant 10
    let hex = Array("0123456789abcdef".utf8)
    return String(unsafeUninitializedCapacity: 36) { out in
      var index = 0
      func put(_ value: UInt64, digits: Int) {
        for shift in stride(from: (digits - 1) * 4, through: 0, by: -4) {
          out[index] = hex[Int((value >> UInt64(shift)) & 0xF)]
          index += 1
        }
      }
      func dash() {
        out[index] = UInt8(ascii: "-")
        index += 1
      }
      put(high >> 32, digits: 8)
      dash()
      put((high >> 16) & 0xFFFF, digits: 4)
      dash()
      put(high & 0xFFFF, digits: 4)
      dash()
      put(low >> 48, digits: 4)
      dash()
      put(low & 0xFFFF_FFFF_FFFF, digits: 12)
      return index
    }
  }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    self.calls?.value.add(1, ordering: .relaxed)
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
