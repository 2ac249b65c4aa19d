import BankLinkBanks
import BankLinkStore
import GRPCCore
import GRPCProtobuf

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
      message: "\(resource) '\(name)' not found",
      details: [.resourceInfo(type: resource, name: name, errorDescription: "not found")]
    )
  }

  static func unavailable(_ message: String, reason: String) -> GoogleRPCStatus {
    GoogleRPCStatus(
      code: .unavailable,
      message: message,
      details: [.errorInfo(reason: reason, domain: domain)]
    )
  }

  /// Maps a storage failure: map full is an operating condition the admin can fix
  /// (RESOURCE_EXHAUSTED names the setting); anything else is INTERNAL with the store's text.
  static func storage(_ error: StoreError) -> GoogleRPCStatus {
    if error.code == .mapFull {
      return GoogleRPCStatus(
        code: .resourceExhausted,
        message: error.message,
        details: [.errorInfo(reason: "STORAGE_FULL", domain: domain)]
      )
    }
    return GoogleRPCStatus(
      code: .internalError,
      message: "storage failure: \(error.message)",
      details: [.errorInfo(reason: "STORAGE_FAILURE", domain: domain)]
    )
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
