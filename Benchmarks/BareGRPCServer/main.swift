// A bare grpc-swift-2 server for `make bench-grpc`: the framework's own cost per call, with
// nothing of BankLink's. HTTP/2 over mutual TLS (the transport's default configuration, no
// interceptors), answering the unary methods the benchmark calls on banklinkd
// (`/grpc.health.v1.Health/Check`, `WhoAmI`, `GetBalance`, `CreatePayment`) with an empty
// message, as `../shared/tools/grpcload/noop_server` (C++) does. Requests are taken as raw
// bytes, so no protobuf decoding either.
//
//   BareGRPCServer --listen 127.0.0.1:0 --ca CA --cert CERT --key KEY
//
// Prints `listening on PORT` once it serves; stops on SIGTERM or SIGINT.
// `BANKLINK_GLOBAL_EXECUTOR=loops` makes the event loops Swift's global executor (as banklinkd
// can), for the executor comparison.
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import NIOPosix

/// Bytes in, bytes out: no message type.
struct RawBytes: MessageSerializer, MessageDeserializer {
  func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
  func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
    serializedMessageBytes.withUnsafeBytes { Array($0) }
  }
}

/// Answers each method it registers with an empty message.
struct NoopService: RegistrableRPCService {
  static let methods = [
    MethodDescriptor(fullyQualifiedService: "grpc.health.v1.Health", method: "Check"),
    MethodDescriptor(fullyQualifiedService: "banklink.v1.AdminService", method: "WhoAmI"),
    MethodDescriptor(fullyQualifiedService: "banklink.v1.AccountService", method: "GetBalance"),
    MethodDescriptor(fullyQualifiedService: "banklink.v1.PaymentService", method: "CreatePayment"),
  ]

  func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
    for method in Self.methods {
      router.registerHandler(forMethod: method, deserializer: RawBytes(), serializer: RawBytes()) { request, _ in
        _ = try await ServerRequest(stream: request)
        return StreamingServerResponse(single: ServerResponse(message: []))
      }
    }
  }
}

func argument(_ name: String) -> String? {
  let arguments = CommandLine.arguments
  guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
  return arguments[index + 1]
}

if ProcessInfo.processInfo.environment["BANKLINK_GLOBAL_EXECUTOR"] == "loops" {
  NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
}
guard let listen = argument("--listen"), let separator = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: separator)...]),
  let ca = argument("--ca"), let cert = argument("--cert"), let key = argument("--key")
else {
  FileHandle.standardError.write(Data("usage: BareGRPCServer --listen HOST:PORT --ca CA --cert CERT --key KEY\n".utf8))
  exit(2)
}
let transport = HTTP2ServerTransport.Posix(
  address: .ipv4(host: String(listen[..<separator]), port: port),
  transportSecurity: .mTLS(certificateChain: [.file(path: cert, format: .pem)], privateKey: .file(path: key, format: .pem)) { tls in
    tls.trustRoots = .certificates([.file(path: ca, format: .pem)])
    tls.clientCertificateVerification = .noHostnameVerification
  })
let server = GRPCServer(transport: transport, services: [NoopService()])
signal(SIGTERM, SIG_IGN)
signal(SIGINT, SIG_IGN)
let stops = [SIGTERM, SIGINT].map { number in
  let source = DispatchSource.makeSignalSource(signal: number, queue: .main)
  source.setEventHandler { server.beginGracefulShutdown() }
  source.resume()
  return source
}
try await withThrowingDiscardingTaskGroup { group in
  group.addTask { try await server.serve() }
  if let address = try await transport.listeningAddress.ipv4 {
    FileHandle.standardOutput.write(Data("listening on \(address.port)\n".utf8))
  }
}
_ = stops
