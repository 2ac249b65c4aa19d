import BankLinkBanks
import BankLinkCore
import BankLinkStore
import GRPCCore
import GRPCProtobuf
import Logging

/// The one place where failures become gRPC statuses. Bad input names its field in a
/// google.rpc.BadRequest; nothing internal leaks as UNKNOWN.
enum APIError {
  static let domain = "banklink.v1"

  /// INVALID_ARGUMENT naming the field, with a BadRequest field violation.
  static func invalidArgument(_ field: String, _ description: String) -> GoogleRPCStatus {
    GoogleRPCStatus(
      code: .invalidArgument,
      message: "\(field): \(description)",
      details: [.badRequest(violations: [.init(field: field, description: description)])]
    )
  }

  static func notFound(_ resource: String, _ name: String) -> GoogleRPCStatus {
    GoogleRPCStatus(
      code: .notFound,
      message: "\(resource) '\(LogText.prefix(name))' not found",
      details: [.resourceInfo(type: resource, name: LogText.prefix(name), errorDescription: "not found")]
    )
  }

  static func unavailable(_ message: String, reason: String) -> GoogleRPCStatus {
    GoogleRPCStatus(
      code: .unavailable,
      message: message,
      details: [.errorInfo(reason: reason, domain: domain)]
    )
  }

  /// Where internal failures are logged in full (the client gets a short text and an id).
  static let logger = Logger(label: "banklinkd.errors")

  /// Maps a storage failure. The store's own text (paths, configuration keys, LMDB codes) is
  /// logged at error level with a correlation id and never sent: the client gets
  /// RESOURCE_EXHAUSTED (the store is full) or INTERNAL, a short message and the id, which an
  /// operator finds in the log.
  static func storage(_ error: StoreError) -> GoogleRPCStatus {
    let incident = Self.incidentID()
    Self.logger.error(
      "storage failure answered to a client", metadata: ["incident": "\(incident)", "code": "\(error.code)", "error": "\(error.message)"])
    if error.code == .mapFull {
      return GoogleRPCStatus(
        code: .resourceExhausted,
        message: "the daemon's store is full; an operator must enlarge it (incident \(incident))",
        details: [.errorInfo(reason: "STORAGE_FULL", domain: domain, metadata: ["incident": incident])]
      )
    }
    return GoogleRPCStatus(
      code: .internalError,
      message: "internal storage failure (incident \(incident))",
      details: [.errorInfo(reason: "STORAGE_FAILURE", domain: domain, metadata: ["incident": incident])]
    )
  }

  /// A short random id tying a client's error to the server's log line.
  static func incidentID() -> String {
    String(UInt64.random(in: 0...UInt64.max), radix: 16)
  }
}

/// Runs a synchronous store operation, mapping ``StoreError`` to its gRPC status.
func withStore<Result>(_ body: () throws -> Result) throws -> Result {
  do {
    return try body()
  } catch let error as StoreError {
    throw APIError.storage(error)
  }
}
