import Foundation

/// A directory under the system temp dir, removed by ``remove()``.
public struct TemporaryDirectory: Sendable {
  public let path: String

  public init(prefix: String = "banklink-test") throws {
    var base = NSTemporaryDirectory()
    while base.count > 1 && base.hasSuffix("/") { base.removeLast() }
    let template = base + "/\(prefix)-XXXXXX"
    var bytes = Array(template.utf8CString)
    guard let result = mkdtemp(&bytes) else {
      throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: template])
    }
    self.path = String(cString: result)
  }

  public func appending(_ component: String) -> String {
    self.path + "/" + component
  }

  public func remove() {
    try? FileManager.default.removeItem(atPath: self.path)
  }
}

/// Runs `body` with a fresh temporary directory, removed afterwards.
public func withTemporaryDirectory<Result>(
  _ body: (TemporaryDirectory) async throws -> Result
) async throws -> Result {
  let directory = try TemporaryDirectory()
  defer { directory.remove() }
  return try await body(directory)
}
