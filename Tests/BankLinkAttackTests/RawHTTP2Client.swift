import BankLinkClient
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization

/// An attacker's HTTP/2 client: mutual TLS with a certificate the CA signed, then streams with
/// whatever headers and bytes the test chooses — nothing a gRPC library would refuse to send.
final class RawHTTP2Client: Sendable {
  /// What came back on one stream.
  struct Response: Sendable {
    var headers: [(String, String)] = []
    var trailers: [(String, String)] = []
    /// The stream was reset by the server (RST_STREAM) with this code.
    var reset: HTTP2ErrorCode?
    /// The bytes of the DATA frames (gRPC-framed messages).
    var body: [UInt8] = []

    var all: [(String, String)] { self.headers + self.trailers }
    var grpcStatus: String? { self.all.first { $0.0 == "grpc-status" }?.1 }
    var grpcMessage: String? { self.all.first { $0.0 == "grpc-message" }?.1 }
    var httpStatus: String? { self.headers.first { $0.0 == ":status" }?.1 }
  }

  /// A frame of the connection itself (stream 0) the server sent.
  enum ConnectionFrame: Sendable, Equatable {
    case goAway(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, debugData: String)
    case ping(ack: Bool)
  }

  let channel: any Channel
  let multiplexer: NIOHTTP2Handler.StreamMultiplexer
  private let recorder: ConnectionFrameRecorder

  /// The GOAWAY and PING frames received so far, in order.
  var connectionFrames: [ConnectionFrame] { self.recorder.frames.withLock { $0 } }
  var goAways: [ConnectionFrame] { self.connectionFrames.filter { if case .goAway = $0 { true } else { false } } }

  private init(channel: any Channel, multiplexer: NIOHTTP2Handler.StreamMultiplexer, recorder: ConnectionFrameRecorder) {
    self.channel = channel
    self.multiplexer = multiplexer
    self.recorder = recorder
  }

  /// Sends a PING on the connection.
  func ping() {
    self.channel.writeAndFlush(HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: 42), ack: false)), promise: nil)
  }

  static func connect(
    host: String, port: Int, configuration: ClientConfiguration, maximumTLSVersion: TLSVersion? = nil
  ) async throws -> RawHTTP2Client {
    var tls = TLSConfiguration.makeClientConfiguration()
    tls.maximumTLSVersion = maximumTLSVersion
    tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(configuration.caPath))
    tls.certificateChain = try NIOSSLCertificate.fromPEMFile(configuration.certificatePath).map { .certificate($0) }
    tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: configuration.keyPath, format: .pem))
    tls.certificateVerification = .noHostnameVerification
    tls.applicationProtocols = ["h2"]
    let context = try NIOSSLContext(configuration: tls)
    // TLS and HTTP/2 go into the pipeline together, before the first byte is read: the
    // server's SETTINGS must reach the HTTP/2 handler, not the end of the pipeline.
    let recorder = ConnectionFrameRecorder()
    let (channel, multiplexer) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .connect(host: host, port: port) { channel in
        channel.eventLoop.makeCompletedFuture { () throws -> ((any Channel), NIOHTTP2Handler.StreamMultiplexer) in
          try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
          // The attacker's side validates nothing: what it sends is for the server to judge.
          var connection = NIOHTTP2Handler.ConnectionConfiguration()
          connection.headerBlockValidation = .disabled
          connection.contentLengthValidation = .disabled
          let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .client, connectionConfiguration: connection, streamConfiguration: .init()
          ) { $0.eventLoop.makeSucceededVoidFuture() }
          try channel.pipeline.syncOperations.addHandler(recorder)
          return (channel, multiplexer)
        }
      }
    return RawHTTP2Client(channel: channel, multiplexer: multiplexer, recorder: recorder)
  }

  /// Standard request headers of a unary gRPC call to `path`, in order, for tests to edit.
  static func grpcHeaders(path: String, authority: String = "localhost") -> [(String, String)] {
    [
      (":method", "POST"), (":scheme", "https"), (":path", path), (":authority", authority),
      ("content-type", "application/grpc"), ("te", "trailers"),
    ]
  }

  /// A gRPC length-prefixed message: flag byte, 4-byte big-endian length, payload.
  static func frame(_ payload: [UInt8], flag: UInt8 = 0) -> [UInt8] {
    let length = UInt32(payload.count)
    return [flag, UInt8(length >> 24), UInt8((length >> 16) & 0xFF), UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF)] + payload
  }

  /// Opens a stream, sends `headers` (validated by nobody) and `body` (if any), ends the stream
  /// (unless `endStream` is false: a client that stops mid-message) and collects the answer
  /// until the server ends or resets it, or `timeout` passes.
  func call(
    headers: [(String, String)],
    body: [UInt8]? = nil,
    endStream: Bool = true,
    trailers: [(String, String)]? = nil,
    timeout: TimeAmount = .seconds(10)
  ) async throws -> Response {
    let stream = try await self.start(headers: headers, body: body, endStream: endStream && trailers == nil, timeout: timeout)
    if let trailers { stream.sendTrailers(trailers) }
    return try await stream.response.get()
  }

  /// A stream started by ``start(headers:body:endStream:timeout:)``: more DATA can be sent on it.
  struct OpenStream: Sendable {
    let channel: any Channel
    let response: EventLoopFuture<Response>

    /// Sends `bytes` in one DATA frame, ending the client's side when `endStream`.
    func send(_ bytes: [UInt8], endStream: Bool) {
      var buffer = self.channel.allocator.buffer(capacity: bytes.count)
      buffer.writeBytes(bytes)
      self.channel.writeAndFlush(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(buffer), endStream: endStream)), promise: nil)
    }

    /// Ends the client's side with a HEADERS frame (trailers).
    func sendTrailers(_ fields: [(String, String)]) {
      var hpack = HPACKHeaders()
      for (name, value) in fields { hpack.add(name: name, value: value) }
      self.channel.writeAndFlush(HTTP2Frame.FramePayload.headers(.init(headers: hpack, endStream: true)), promise: nil)
    }
  }

  /// As ``call(headers:body:endStream:timeout:)``, without waiting for the answer.
  func start(
    headers: [(String, String)],
    body: [UInt8]? = nil,
    endStream: Bool = true,
    timeout: TimeAmount = .seconds(10)
  ) async throws -> OpenStream {
    let promise = self.channel.eventLoop.makePromise(of: Response.self)
    let streamPromise = self.channel.eventLoop.makePromise(of: (any Channel).self)
    self.multiplexer.createStreamChannel(promise: streamPromise) { stream in
      stream.eventLoop.makeCompletedFuture {
        try stream.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
      }
    }
    // A stream the connection cannot open (closed, GOAWAY, stream limit) never runs the
    // initializer: fail the response promise too, or NIO traps on a promise left unfulfilled.
    streamPromise.futureResult.whenFailure { promise.fail($0) }
    let stream = try await streamPromise.futureResult.get()
    var hpack = HPACKHeaders()
    for (name, value) in headers { hpack.add(name: name, value: value) }
    stream.write(HTTP2Frame.FramePayload.headers(.init(headers: hpack, endStream: body == nil && endStream)), promise: nil)
    if let body {
      var buffer = stream.allocator.buffer(capacity: body.count)
      buffer.writeBytes(body)
      stream.write(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(buffer), endStream: endStream)), promise: nil)
    }
    stream.flush()
    // No answer in time: close the stream; the collector then reports what it has (nothing).
    let deadline = stream.eventLoop.scheduleTask(in: timeout) { stream.close(promise: nil) }
    promise.futureResult.whenComplete { _ in deadline.cancel() }
    return OpenStream(channel: stream, response: promise.futureResult)
  }

  func close() async {
    try? await self.channel.close()
  }
}

/// Records the connection's own GOAWAY and PING frames (swift-nio-http2 passes stream 0's frames
/// to the handler behind it).
private final class ConnectionFrameRecorder: ChannelInboundHandler, Sendable {
  typealias InboundIn = HTTP2Frame
  let frames = Mutex<[RawHTTP2Client.ConnectionFrame]>([])

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch self.unwrapInboundIn(data).payload {
    case .goAway(let lastStreamID, let errorCode, let opaqueData):
      let debug = opaqueData.map { String(buffer: $0) } ?? ""
      self.frames.withLock { $0.append(.goAway(lastStreamID: lastStreamID, errorCode: errorCode, debugData: debug)) }
    case .ping(_, let ack):
      self.frames.withLock { $0.append(.ping(ack: ack)) }
    default:
      break
    }
  }
}

/// Collects the HEADERS frames of one stream until it ends.
private final class ResponseCollector: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame.FramePayload

  private let promise: EventLoopPromise<RawHTTP2Client.Response>
  private var response = RawHTTP2Client.Response()
  private var sawHeaders = false
  private var done = false

  init(promise: EventLoopPromise<RawHTTP2Client.Response>) {
    self.promise = promise
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch self.unwrapInboundIn(data) {
    case .headers(let headers):
      let fields = headers.headers.map { ($0.name, $0.value) }
      if self.sawHeaders { self.response.trailers += fields } else { self.response.headers = fields }
      self.sawHeaders = true
      if headers.endStream { self.finish() }
    case .data(let data):
      if case .byteBuffer(let buffer) = data.data { self.response.body += buffer.readableBytesView }
      if data.endStream { self.finish() }
    case .rstStream(let code):
      self.response.reset = code
      self.finish()
    default:
      break
    }
  }

  private func finish() {
    guard !self.done else { return }
    self.done = true
    self.promise.succeed(self.response)
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.finish()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    // A stream error (e.g. a reset) ends the stream; what was collected is the answer.
    self.finish()
  }
}
