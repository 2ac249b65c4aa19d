import Foundation

/// Locates the `banklinkd`, `banklink` and `banklink-load` executables built next to the test binary
/// (`.build/debug`), or in `BANKLINK_BIN_DIR`. `make test` builds them before running tests.
public enum Binaries {
  public static var directory: String {
    if let overridden = ProcessInfo.processInfo.environment["BANKLINK_BIN_DIR"] {
      return overridden
    }
    return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
  }

  public static var daemon: String { directory + "/banklinkd" }
  public static var cli: String { directory + "/banklink" }
  public static var load: String { directory + "/banklink-load" }
}

/// Runs a program to completion and returns its exit status and output.
public func runProgram(
  _ path: String,
  _ arguments: [String],
  environment: [String: String]? = nil
) throws -> (status: Int32, stdout: String, stderr: String) {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: path)
  process.arguments = arguments
  if let environment { process.environment = environment }
  let out = Pipe()
  let err = Pipe()
  process.standardOutput = out
  process.standardError = err
  try process.run()
  let stdout = out.fileHandleForReading.readDataToEndOfFile()
  let stderr = err.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}
