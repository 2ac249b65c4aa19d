// The floor under issue 15's "an HTTP/2 handler of our own", for `make bench-grpc`: what a
// unary call costs on this stack's HTTP/2 and TLS (swift-nio, swift-nio-http2, swift-nio-ssl)
// with no gRPC Swift at all. Mutual TLS, the inline stream multiplexer (a child channel per
// stream, as every NIO HTTP/2 server has), and a handler that answers each request, once its
// END_STREAM arrives, with what a gRPC server sends for an empty message: HEADERS (`:status`
// 200, `content-type`), one DATA frame (the 5-byte message prefix) and trailers
// (`grpc-status: 0`). Nothing is parsed or checked (no path, deadline, size limit, metadata or
// authorization): a server that does any of that costs more, so this is what no handler of
// ours on this stack can go under.
//
//   BareNIOHTTP2Server --listen 127.0.0.1:0 --ca CA --cert CERT --key KEY
//
// Prints `listening on PORT` once it serves; stops on SIGTERM or SIGINT.
import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL

/// Answers every stream with an empty gRPC message and status OK.
final class EmptyUnaryAnswer: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias OutboundOut = HTTP2Frame.FramePayload

  static let responseHeaders: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
  static let trailers: HPACKHeaders = ["grpc-status": "0"]

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch self.unwrapInboundIn(data) {
    case .headers(let headers) where headers.endStream: self.answer(context)
    case .data(let data) where data.endStream: self.answer(context)
    default: break
    }
  }

  private func answer(_ context: ChannelHandlerContext) {
    context.write(self.wrapOutboundOut(.headers(.init(headers: Self.responseHeaders))), promise: nil)
    var prefix = context.channel.allocator.buffer(capacity: 5)
    prefix.writeInteger(UInt8(0))
    prefix.writeInteger(UInt32(0))
    context.write(self.wrapOutboundOut(.data(.init(data: .byteBuffer(prefix)))), promise: nil)
    context.writeAndFlush(self.wrapOutboundOut(.headers(.init(headers: Self.trailers, endStream: true))), promise: nil)
  }
}

func argument(_ name: String) -> String? {
  let arguments = CommandLine.arguments
  guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
  return arguments[index + 1]
}

guard let listen = argument("--listen"), let separator = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: separator)...]),
  let ca = argument("--ca"), let cert = argument("--cert"), let key = argument("--key")
else {
  FileHandle.standardError.write(Data("usage: BareNIOHTTP2Server --listen HOST:PORT --ca CA --cert CERT --key KEY\n".utf8))
  exit(2)
}
var tls = TLSConfiguration.makeServerConfiguration(
  certificateChain: try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
tls.trustRoots = .file(ca)
tls.certificateVerification = .noHostnameVerification
tls.applicationProtocols = ["h2"]
let context = try NIOSSLContext(configuration: tls)

let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
  .serverChannelOption(.backlog, value: 256)
  .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
  .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
  .childChannelInitializer { channel in
    do {
      try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
    } catch {
      return channel.eventLoop.makeFailedFuture(error)
    }
    return channel.configureHTTP2Pipeline(mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()) { stream in
      stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(EmptyUnaryAnswer()) }
    }.map { _ in }
  }
  .bind(host: String(listen[..<separator]), port: port).get()
FileHandle.standardOutput.write(Data("listening on \(channel.localAddress?.port ?? 0)\n".utf8))

signal(SIGTERM, SIG_IGN)
signal(SIGINT, SIG_IGN)
let stops = [SIGTERM, SIGINT].map { number in
  let source = DispatchSource.makeSignalSource(signal: number, queue: .main)
  source.setEventHandler { channel.close(promise: nil) }
  source.resume()
  return source
}
try await channel.closeFuture.get()
_ = stops
