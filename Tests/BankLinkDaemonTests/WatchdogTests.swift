import BankLinkDaemon
import BankLinkStore
import BankLinkTestSupport
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import Testing

/// The systemd watchdog pings only while the store's writer and the event loops answer.
@Suite("systemd watchdog")
struct WatchdogTests {
  @Test("the ping interval is half of WATCHDOG_USEC, for this process only")
  func interval() {
    #expect(WatchdogService.pingInterval(environment: ["WATCHDOG_USEC": "30000000"]) == .seconds(15))
    #expect(WatchdogService.pingInterval(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "\(getpid())"]) == .seconds(15))
    #expect(WatchdogService.pingInterval(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"]) == nil)
    #expect(WatchdogService.pingInterval(environment: ["WATCHDOG_USEC": "0"]) == nil)
    #expect(WatchdogService.pingInterval(environment: [:]) == nil)
  }

  @Test("WATCHDOG=1 stops while the writer is stuck in a transaction or an event loop is blocked, and resumes after")
  func stalls() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.appending("data"), mapSizeMiB: 16))
      let writer = GroupCommitWriter(store: store)
      let loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      var logger = Logger(label: "watchdog-test")
      logger.logLevel = .critical
      let service = WatchdogService(
        interval: .milliseconds(200), notifier: SystemdNotifier(socketPath: socket.path), writer: writer, eventLoops: loops, logger: logger)
      let running = Task { try await service.run() }
      defer { running.cancel() }

      /// Pings received during `seconds` (after discarding what was queued before).
      func pings(during seconds: Double) async throws -> Int {
        while socket.receive(timeoutSeconds: 0) != nil {}
        try await Task.sleep(for: .seconds(seconds))
        var count = 0
        while let message = socket.receive(timeoutSeconds: 0) { if message == "WATCHDOG=1" { count += 1 } }
        return count
      }
      /// Whether `count` pings arrive within `seconds` (generous: the suite runs beside others).
      func pingsArrive(_ count: Int, within seconds: Int) async -> Bool {
        while socket.receive(timeoutSeconds: 0) != nil {}
        var seen = 0
        let deadline = ContinuousClock.now.advanced(by: .seconds(seconds))
        while seen < count, ContinuousClock.now < deadline {
          if await socket.next(timeoutSeconds: 1) == "WATCHDOG=1" { seen += 1 }
        }
        return seen >= count
      }

      #expect(await pingsArrive(3, within: 20), "pings while healthy")

      // The writer thread blocked inside a transaction: once it is, and a probe started before
      // it has had its interval, no ping may come.
      let writerEntered = DispatchSemaphore(value: 0)
      let writerHeld = DispatchSemaphore(value: 0)
      let stuck = Task {
        try await writer.write { _ in
          writerEntered.signal()
          writerHeld.wait()
        }
      }
      try await offPool { writerEntered.wait() }
      try await Task.sleep(for: .milliseconds(1500))
      #expect(try await pings(during: 2) == 0, "no ping while the writer is stuck")
      writerHeld.signal()
      try await stuck.value
      #expect(await pingsArrive(3, within: 20), "pings again once the writer answers")

      // One event loop blocked.
      let loopEntered = DispatchSemaphore(value: 0)
      let loopHeld = DispatchSemaphore(value: 0)
      loops.next().execute {
        loopEntered.signal()
        loopHeld.wait()
      }
      try await offPool { loopEntered.wait() }
      // A probe launched before the loop was blocked may still finish (it passed that loop
      // already) and earn one last ping; under a loaded suite its task can run late, so wait
      // several intervals before counting.
      try await Task.sleep(for: .milliseconds(1500))
      #expect(try await pings(during: 2) == 0, "no ping while an event loop is blocked")
      loopHeld.signal()
      #expect(await pingsArrive(3, within: 20), "pings again once the loops answer")
      running.cancel()
      _ = await running.result
      try await loops.shutdownGracefully()
    }
  }
}
