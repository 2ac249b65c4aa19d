#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Sends sd_notify(3) messages (`READY=1`, `STOPPING=1`, `STATUS=…`) to the socket systemd
/// names in `NOTIFY_SOCKET`, for `Type=notify` units. A plain datagram on a Unix socket: no
/// libsystemd needed.
public struct SystemdNotifier: Sendable {
  public let socketPath: String

  public init(socketPath: String) {
    self.socketPath = socketPath
  }

  /// The notifier for `NOTIFY_SOCKET`, or nil when the daemon does not run under systemd.
  public static func fromEnvironment(_ environment: [String: String]) -> SystemdNotifier? {
    guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty else { return nil }
    return SystemdNotifier(socketPath: path)
  }

  public struct Failure: Error, CustomStringConvertible {
    public var description: String
  }

  /// Sends one notification, e.g. `"READY=1"` or `"STOPPING=1\nSTATUS=draining"`.
  public func notify(_ state: String) throws {
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw Failure(description: "socket(AF_UNIX): \(String(cString: strerror(errno)))") }
    defer { close(fd) }

    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    // A leading '@' names a socket in the abstract namespace: a NUL byte on the wire.
    var pathBytes = Array(self.socketPath.utf8)
    if pathBytes.first == UInt8(ascii: "@") { pathBytes[0] = 0 }
    let capacity = MemoryLayout.size(ofValue: address.sun_path)
    guard pathBytes.count < capacity else {
      throw Failure(description: "NOTIFY_SOCKET path is longer than \(capacity - 1) bytes")
    }
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in
      buffer.copyBytes(from: pathBytes)
    }
    let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count)
    let message = Array(state.utf8)
    let sent = withUnsafePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
        sendto(fd, message, message.count, Int32(MSG_NOSIGNAL), socketAddress, length)
      }
    }
    guard sent == message.count else {
      throw Failure(description: "sendto(\(self.socketPath)): \(String(cString: strerror(errno)))")
    }
  }
}
