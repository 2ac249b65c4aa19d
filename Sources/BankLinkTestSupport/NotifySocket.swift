import Foundation

/// A Unix datagram socket standing in for systemd's notification socket, so tests can read
/// what a daemon sends to `NOTIFY_SOCKET`.
public final class NotifySocket: @unchecked Sendable {
  public let path: String
  private let fd: Int32

  public init(path: String) throws {
    self.path = path
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
    let rc = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    guard rc == 0 else {
      close(fd)
      throw POSIXError(.init(rawValue: errno) ?? .EIO)
    }
    self.fd = fd
  }

  deinit {
    close(self.fd)
    unlink(self.path)
  }

  /// The next datagram, or nil when none arrives within `timeoutSeconds` (0: only one already
  /// waiting; a zero SO_RCVTIMEO would block forever).
  public func receive(timeoutSeconds: Int) -> String? {
    var timeout = timeval(tv_sec: max(0, timeoutSeconds), tv_usec: 0)
    setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = recv(self.fd, &buffer, buffer.count, timeoutSeconds <= 0 ? Int32(MSG_DONTWAIT) : 0)
    guard count > 0 else { return nil }
    return String(decoding: buffer[..<count], as: UTF8.self)
  }
}

/// Runs a blocking call on a thread of its own, so that waiting for a process or a socket never
/// occupies one of the few threads of Swift's cooperative pool (which the servers under test
/// need).
public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
  try await withCheckedThrowingContinuation { continuation in
    let thread = Thread {
      do { continuation.resume(returning: try body()) } catch { continuation.resume(throwing: error) }
    }
    thread.start()
  }
}

extension NotifySocket {
  /// ``receive(timeoutSeconds:)`` without blocking the cooperative pool.
  public func next(timeoutSeconds: Int) async -> String? {
    (try? await offPool { self.receive(timeoutSeconds: timeoutSeconds) }) ?? nil
  }
}
