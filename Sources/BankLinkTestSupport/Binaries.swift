import Foundation
import Synchronization

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

/// How long ``runProgram(_:_:environment:timeoutSeconds:)`` lets a program run by default.
public let defaultProgramTimeoutSeconds = 120

/// Runs a program to completion and returns its exit status and output. Both pipes are drained
/// at once (a child that fills one while the other is read would block forever), and a program
/// still running after `timeoutSeconds` is killed: the result then says so in `stderr` and the
/// status is SIGKILL's, so the calling test fails instead of hanging the run.
public func runProgram(
  _ path: String,
  _ arguments: [String],
  environment: [String: String]? = nil,
  timeoutSeconds: Int = defaultProgramTimeoutSeconds
) throws -> (status: Int32, stdout: String, stderr: String) {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: path)
  process.arguments = arguments
  if let environment { process.environment = environment }
  let out = Pipe()
  let err = Pipe()
  process.standardOutput = out
  process.standardError = err
  try TestProcesses.launch(process, logToFile: false)
  let drained = DispatchGroup()
  let collected = Mutex<(stdout: Data, stderr: Data)>((Data(), Data()))
  for (pipe, isStdout) in [(out, true), (err, false)] {
    drained.enter()
    Thread.detachNewThread {
      let data = pipe.fileHandleForReading.readDataToEndOfFile()
      collected.withLock { if isStdout { $0.stdout = data } else { $0.stderr = data } }
      drained.leave()
    }
  }
  var timedOut = false
  if drained.wait(timeout: .now() + .seconds(timeoutSeconds)) == .timedOut {
    timedOut = true
    kill(process.processIdentifier, SIGKILL)
    _ = drained.wait(timeout: .now() + .seconds(10))
  }
  process.waitUntilExit()
  let (stdout, stderr) = collected.withLock { ($0.stdout, $0.stderr) }
  var errorText = String(decoding: stderr, as: UTF8.self)
  if timedOut { errorText += "\n[runProgram: \(path) killed after \(timeoutSeconds) s]" }
  return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), errorText)
}

/// Long-lived child processes of the tests (daemons): their output goes to a log file rather
/// than the test runner's own stdout and stderr — a child that outlives a crashed or failed
/// test must not hold `swift test`'s output pipes open, or the run never ends — and their
/// process ids are appended to `BANKLINK_TEST_PIDS_FILE` when it is set, so that
/// `scripts/run-tests.sh` can end any left running.
public enum TestProcesses {
  /// Where daemon logs are kept, at debug level, when set (see ``RunningDaemon/start``).
  public static let logDirectoryVariable = "BANKLINK_TEST_LOG_DIR"

  /// Starts `process`. With `logToFile` (daemons), its stdout and stderr go to a log file in
  /// the temporary directory (its path is returned) — Foundation's default is the test
  /// runner's own; without, the caller has set its own handles (pipes it drains).
  @discardableResult
  public static func launch(_ process: Process, logToFile: Bool = true) throws -> String? {
    var logPath: String?
    if logToFile {
      let name = URL(fileURLWithPath: process.executableURL?.path ?? "child").lastPathComponent
      // With BANKLINK_TEST_LOG_DIR (make test), the logs are kept there for the secret check
      // that runs after the suite (scripts/check-log-secrets.sh).
      let directory = ProcessInfo.processInfo.environment[Self.logDirectoryVariable] ?? NSTemporaryDirectory()
      let path = directory + "/\(name)-\(getpid())-\(UUID().uuidString.prefix(8)).log"
      _ = FileManager.default.createFile(atPath: path, contents: nil)
      guard let handle = FileHandle(forWritingAtPath: path) else {
        throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
      }
      process.standardOutput = handle
      process.standardError = handle
      process.standardInput = FileHandle.nullDevice
      logPath = path
    }
    try process.run()
    if let file = ProcessInfo.processInfo.environment["BANKLINK_TEST_PIDS_FILE"],
      let handle = FileHandle(forWritingAtPath: file)
    {
      handle.seekToEndOfFile()
      handle.write(Data("\(process.processIdentifier)\n".utf8))
      try? handle.close()
    }
    return logPath
  }
}
