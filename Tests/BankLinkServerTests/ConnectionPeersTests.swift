@testable import BankLinkServer
import BankLinkTestSupport
import Foundation
import NIOCore
import NIOEmbedded
import SwiftASN1
import Synchronization
import Testing
import X509

@Suite("The connection registry: one connection never finds another's certificate")
struct ConnectionPeersTests {
  static func channel(remote: String, remotePort: Int, local: String, localPort: Int) throws -> EmbeddedChannel {
    let channel = EmbeddedChannel()
    // As accepted sockets carry them: the host is the address text.
    channel.remoteAddress = try SocketAddress.makeAddressResolvingHost(remote, port: remotePort)
    channel.localAddress = try SocketAddress.makeAddressResolvingHost(local, port: localPort)
    return channel
  }

  @Test("the same client address and port reaching two of the daemon's addresses are two connections, each with its own certificate")
  func sameRemoteTwoLocals() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let viewer = try Certificate(pemEncoded: String(contentsOfFile: try pki.client(commonName: "viewer").certificatePath, encoding: .utf8))
      let admin = try Certificate(pemEncoded: String(contentsOfFile: try pki.client(commonName: "admin").certificatePath, encoding: .utf8))
      let peers = ConnectionPeers()
      // One client host and source port (a NAT, or Linux reusing a port for another
      // destination), to the daemon's two addresses on a wildcard listener.
      let first = try Self.channel(remote: "10.0.0.9", remotePort: 50_000, local: "10.0.0.5", localPort: 8443)
      let second = try Self.channel(remote: "10.0.0.9", remotePort: 50_000, local: "192.168.1.5", localPort: 8443)
      let viewerPeer = peers.open(first)
      viewerPeer.certificate.withLock { $0 = viewer }
      let adminPeer = peers.open(second)
      adminPeer.certificate.withLock { $0 = admin }
      #expect(peers.peer(remotePeer: "ipv4:10.0.0.9:50000", localPeer: "ipv4:10.0.0.5:8443")?.leaf == viewer)
      #expect(peers.peer(remotePeer: "ipv4:10.0.0.9:50000", localPeer: "ipv4:192.168.1.5:8443")?.leaf == admin)
      // Closing one leaves the other as it was.
      try await second.close()
      second.embeddedEventLoop.run()
      #expect(peers.peer(remotePeer: "ipv4:10.0.0.9:50000", localPeer: "ipv4:192.168.1.5:8443") == nil)
      #expect(peers.peer(remotePeer: "ipv4:10.0.0.9:50000", localPeer: "ipv4:10.0.0.5:8443")?.leaf == viewer)
      // Two open connections with both ends the same (impossible for TCP; if ever): neither
      // keeps a certificate, rather than one getting the other's.
      let twin = try Self.channel(remote: "10.0.0.9", remotePort: 50_000, local: "10.0.0.5", localPort: 8443)
      #expect(!peers.open(twin).registered)
      #expect(peers.peer(remotePeer: "ipv4:10.0.0.9:50000", localPeer: "ipv4:10.0.0.5:8443")?.leaf == nil)
      _ = try? await first.close()
    }
  }
}
