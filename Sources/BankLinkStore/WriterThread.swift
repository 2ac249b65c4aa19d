internal import CBankLinkThreads
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One dedicated OS thread that runs jobs one at a time in submission order: where the store's
/// write transactions happen (LMDB allows one at a time, and a transaction must begin and commit
/// on one thread).
///
/// A thread of its own, rather than a dispatch queue, so that it can be named (`banklink-writer`
/// in `top -H` and `perf`) and placed: every synced commit sleeps in `fdatasync` several times
/// and each wake-up preempts whatever runs on its CPU — on a busy event loop's CPU, about twice
/// per payment. ``Store/Configuration/writerCPUs`` keeps it on CPUs of its own.
final class WriterThread: Sendable {
  /// What the thread and its submitters share (the thread holds this, not the WriterThread, so
  /// releasing the WriterThread stops it).
  private final class Queue: Sendable {
    let jobs = Mutex<[(@Sendable () -> Void)?]>([])
    /// Signalled once per submitted job (and once for the stop request).
    let wakeup = DispatchSemaphore(value: 0)

    func append(_ job: (@Sendable () -> Void)?) {
      self.jobs.withLock { $0.append(job) }
      self.wakeup.signal()
    }
  }

  private let queue = Queue()

  /// Starts the thread; with `cpus` non-empty it runs only on those CPUs. Throws
  /// ``StoreError`` `.invalidArgument` when the thread cannot be placed there (a CPU that does
  /// not exist or that this process may not use).
  init(name: String, cpus: [Int]) throws {
    let placed = DispatchSemaphore(value: 0)
    let placement = Mutex<Int32>(0)
    let body: @Sendable () -> Void = { [queue] in
      _ = banklink_name_current_thread(name)
      if !cpus.isEmpty {
        var rc = cpus.map(Int32.init).withUnsafeBufferPointer { banklink_pin_current_thread($0.baseAddress, Int32($0.count)) }
        // The kernel accepts a list when any of its CPUs is usable and drops the rest: read the
        // placement back so that a CPU that does not exist is refused, not silently ignored.
        if rc == 0 && Set(currentThreadCPUs()) != Set(cpus) { rc = EINVAL }
        placement.withLock { $0 = rc }
      }
      placed.signal()
      while true {
        queue.wakeup.wait()
        // nil is the stop request, queued behind every job submitted before it.
        guard let job = queue.jobs.withLock({ $0.removeFirst() }) else { return }
        job()
      }
    }
    try Self.spawn(body)
    placed.wait()
    let rc = placement.withLock { $0 }
    if rc != 0 {
      self.stop()
      throw StoreError(
        code: .invalidArgument,
        message: "storage.writer_cpus: cannot run the writer thread on CPUs \(cpus): \(String(cString: strerror(rc)))",
        returnCode: rc
      )
    }
  }

  deinit {
    self.stop()
  }

  /// Runs `job` on the thread after every job submitted before it.
  func submit(_ job: @escaping @Sendable () -> Void) {
    self.queue.append(job)
  }

  /// Lets the thread finish the jobs already submitted and end.
  func stop() {
    self.queue.append(nil)
  }

  private final class Body {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
  }

  private static func spawn(_ body: @escaping @Sendable () -> Void) throws {
    let context = Unmanaged.passRetained(Body(body)).toOpaque()
    let rc = banklink_thread_start({ context in
      Unmanaged<Body>.fromOpaque(context!).takeRetainedValue().run()
    }, context)
    guard rc == 0 else {
      Unmanaged<Body>.fromOpaque(context).release()
      throw StoreError(code: .other, message: "cannot start the writer thread: \(String(cString: strerror(rc)))", returnCode: rc)
    }
  }
}

/// The CPUs the calling thread may run on (for tests and diagnostics).
public func currentThreadCPUs() -> [Int] {
  var cpus = [Int32](repeating: 0, count: 1024)
  let count = cpus.withUnsafeMutableBufferPointer { banklink_current_thread_cpus($0.baseAddress, Int32($0.count)) }
  guard count > 0 else { return [] }
  return cpus.prefix(Int(count)).map(Int.init)
}
