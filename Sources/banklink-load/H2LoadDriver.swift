import BankLinkClient
import BankLinkCore
import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL

/// One unary gRPC call as the load driver sends it: the method path and the serialized request.
struct UnaryRequest: Sendable {
  var path: String
  var message: [UInt8]
}

/// The default driver of `banklink bench`: unary gRPC calls written as raw HTTP/2 frames over
/// mutual TLS, straight from an event-loop handler: no task, stream channel or async sequence per
/// call. It costs the load generator a fraction of the CPU per call that a full gRPC client
/// costs, so on a small machine the latencies measured are the daemon's, not the generator's.
/// The daemon sees ordinary gRPC calls (the same frames any gRPC client sends).
struct H2LoadDriver: Sendable {
  let configuration: ClientConfiguration
  let connections: Int
  let shape: LoadShape
  let nextRequest: @Sendable () -> UnaryRequest

  /// How long after the end of the run calls still in flight are waited for before they count
  /// as failed and the connections are closed.
  static let drainGraceSeconds: Int64 = 10

  func run() async throws -> LoadRun.Result {
    guard let target = HostPort(self.configuration.address), target.port > 0 else {
      throw BenchError("address '\(self.configuration.address)' is not HOST:PORT")
    }
    var tls = TLSConfiguration.makeClientConfiguration()
    tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(self.configuration.caPath))
    tls.certificateChain = try NIOSSLCertificate.fromPEMFile(self.configuration.certificatePath).map { .certificate($0) }
    tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: self.configuration.keyPath, format: .pem))
    tls.certificateVerification = .fullVerification
    tls.applicationProtocols = ["h2"]
    let sslContext = try NIOSSLContext(configuration: tls)
    // Name verification: by DNS name where one is given, else by the IP address connected to.
    let hostname: String? = target.bracketed || target.isIPv4Literal ? nil : target.host
    let authority = self.configuration.address

    let group = MultiThreadedEventLoopGroup.singleton
    var channels: [any Channel] = []
    defer { for channel in channels { channel.close(promise: nil) } }
    for _ in 0..<self.connections {
      let channel = try await ClientBootstrap(group: group)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .channelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: hostname))
            try sync.addHandler(NIOHTTP2Handler(mode: .client))
            try sync.addHandler(UnaryLoadHandler(authority: authority))
          }
        }
        .connect(host: target.host, port: target.port)
        .get()
      channels.append(channel)
    }

    let now = NIODeadline.now()
    let measureFrom = now + .nanoseconds(self.shape.warmupNanoseconds)
    let stopAt = measureFrom + .nanoseconds(self.shape.durationNanoseconds)
    let interval: TimeAmount? = self.shape.intervalNanoseconds.map { .nanoseconds($0) }
    var runs: [EventLoopFuture<LoadRun.Result>] = []
    for (index, channel) in channels.enumerated() {
      // Workers are spread over the connections.
      let workers = (0..<self.shape.concurrency).filter { $0 % channels.count == index }
      let plan = UnaryLoadHandler.Plan(
        workers: workers.map { worker in
          now + .nanoseconds(self.shape.startOffsetNanoseconds(worker: worker))
        },
        measureFrom: measureFrom, stopAt: stopAt, interval: interval,
        giveUpAt: stopAt + .seconds(Self.drainGraceSeconds), nextRequest: self.nextRequest
      )
      runs.append(
        channel.eventLoop.flatSubmit {
          do {
            return try channel.pipeline.syncOperations.handler(type: UnaryLoadHandler.self).begin(plan)
          } catch {
            return channel.eventLoop.makeFailedFuture(error)
          }
        }
      )
    }
    var merged = LoadRun.Result(latenciesNanoseconds: [], errors: 0, elapsedSeconds: self.shape.duration, firstError: nil)
    for run in runs {
      let result = try await run.get()
      merged.latenciesNanoseconds += result.latenciesNanoseconds
      merged.errors += result.errors
      merged.firstError = merged.firstError ?? result.firstError
    }
    merged.latenciesNanoseconds.sort()
    return merged
  }
}

/// Drives the calls of one connection from its event loop. Each worker keeps one call in flight
/// (closed loop), or starts one per interval (paced); a call's latency runs from writing its
/// HEADERS frame to reading its trailers, and it counts as failed unless `grpc-status` is 0.
final class UnaryLoadHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  struct Plan: Sendable {
    /// When each worker first starts a call.
    var workers: [NIODeadline]
    var measureFrom: NIODeadline
    var stopAt: NIODeadline
    var interval: TimeAmount?
    var giveUpAt: NIODeadline
    var nextRequest: @Sendable () -> UnaryRequest
  }

  private struct Call {
    var worker: Int
    var start: NIODeadline
    var grpcStatus: Substring?
    var grpcMessage: String?
  }

  private let authority: String
  private var context: ChannelHandlerContext?
  private var plan: Plan?
  private var promise: EventLoopPromise<LoadRun.Result>?
  private var nextStreamID: Int32 = 1
  private var inFlight: [HTTP2StreamID: Call] = [:]
  private var nextStart: [NIODeadline] = []
  private var activeWorkers = 0
  private var unacknowledgedBytes = 0
  /// Set when the daemon sent GOAWAY: the reason no further calls start.
  private var goAway: String?
  /// HTTP/2's initial connection window (RFC 9113, 6.9.2).
  static let connectionWindow = 65_535
  private var result = LoadRun.Result(latenciesNanoseconds: [], errors: 0, elapsedSeconds: 0, firstError: nil)

  init(authority: String) {
    self.authority = authority
    self.result.latenciesNanoseconds.reserveCapacity(1 << 16)
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
  }

  func begin(_ plan: Plan) -> EventLoopFuture<LoadRun.Result> {
    guard let context = self.context else {
      return NIOSingletons.posixEventLoopGroup.any().makeFailedFuture(ChannelError.ioOnClosedChannel)
    }
    let promise = context.eventLoop.makePromise(of: LoadRun.Result.self)
    self.plan = plan
    self.promise = promise
    self.nextStart = plan.workers
    self.activeWorkers = plan.workers.count
    let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
    context.eventLoop.scheduleTask(deadline: plan.giveUpAt) { loopBound.value.giveUp() }
    for worker in plan.workers.indices { self.startWhenDue(worker) }
    if plan.workers.isEmpty { self.finish() }
    return promise.futureResult
  }

  private func startWhenDue(_ worker: Int) {
    guard let context = self.context, let plan = self.plan else { return }
    let due = self.nextStart[worker]
    if due >= plan.stopAt {
      self.retire(worker)
    } else if due > .now() {
      let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
      context.eventLoop.scheduleTask(deadline: due) { loopBound.value.start(worker) }
    } else {
      self.start(worker)
    }
  }

  private func start(_ worker: Int) {
    guard let context = self.context, let plan = self.plan, self.promise != nil else { return }
    guard context.channel.isActive else { return self.fail("connection closed") }
    if let goAway = self.goAway { return self.retireAfterGoAway(worker, goAway) }
    let now = NIODeadline.now()
    guard now < plan.stopAt else { return self.retire(worker) }
    let request = plan.nextRequest()
    let streamID = HTTP2StreamID(self.nextStreamID)
    self.nextStreamID += 2
    let headers: HPACKHeaders = [
      ":method": "POST", ":scheme": "https", ":path": request.path, ":authority": self.authority,
      "content-type": "application/grpc", "te": "trailers",
    ]
    var body = context.channel.allocator.buffer(capacity: 5 + request.message.count)
    body.writeInteger(UInt8(0))  // not compressed
    body.writeInteger(UInt32(request.message.count))
    body.writeBytes(request.message)
    // Latency counts from when the call was due, not when it went out: a paced worker that
    // fell behind (its previous call was slow) charges the wait to the calls that waited.
    self.inFlight[streamID] = Call(worker: worker, start: min(self.nextStart[worker], now))
    context.write(self.wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: headers)))), promise: nil)
    let written = context.eventLoop.makePromise(of: Void.self)
    let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
    // A write fails when the connection is gone: end the run rather than start the next call
    // into the same closed channel (which would fail at once, and again, ...).
    written.futureResult.whenFailure { error in loopBound.value.fail("writing a request failed: \(error)") }
    context.writeAndFlush(
      self.wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .data(.init(data: .byteBuffer(body), endStream: true)))),
      promise: written
    )
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let frame = self.unwrapInboundIn(data)
    switch frame.payload {
    case .headers(let headers):
      if let status = headers.headers.first(name: "grpc-status") {
        self.inFlight[frame.streamID]?.grpcStatus = Substring(status)
        self.inFlight[frame.streamID]?.grpcMessage = headers.headers.first(name: "grpc-message")
      }
      if headers.endStream { self.complete(frame.streamID, error: nil) }
    case .data(let data):
      // Flow control counts the padding and its length byte too (RFC 9113, 6.1).
      self.consumed(data.data.readableBytes + (data.paddingBytes.map { $0 + 1 } ?? 0), context: context)
      if data.endStream { self.complete(frame.streamID, error: nil) }
    case .rstStream(let code):
      self.complete(frame.streamID, error: "stream reset by the daemon (\(code))")
    case .goAway(let lastStreamID, let code, _):
      self.goingAway(lastStreamID: lastStreamID, code: code)
    default:
      break
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.fail("connection closed")
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    self.fail("\(error)")
    context.close(promise: nil)
  }

  /// Without a stream multiplexer nothing returns the connection-level flow-control window to
  /// the daemon: hand back what the responses used once half of the window is gone. (Stream
  /// windows are not returned: a unary response must fit the initial 64 KiB, which every
  /// scenario's does by far.)
  private func consumed(_ bytes: Int, context: ChannelHandlerContext) {
    self.unacknowledgedBytes += bytes
    if self.unacknowledgedBytes >= Self.connectionWindow / 2 {
      let update = HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: self.unacknowledgedBytes))
      self.unacknowledgedBytes = 0
      context.writeAndFlush(self.wrapOutboundOut(update), promise: nil)
    }
  }

  private func complete(_ streamID: HTTP2StreamID, error: String?) {
    guard let call = self.inFlight.removeValue(forKey: streamID), let plan = self.plan else { return }
    let end = NIODeadline.now()
    if call.start >= plan.measureFrom {
      if error == nil && call.grpcStatus == "0" {
        self.result.latenciesNanoseconds.append((end - call.start).nanoseconds)
      } else {
        self.result.errors += 1
      }
    }
    if self.result.firstError == nil, error != nil || call.grpcStatus != "0" {
      self.result.firstError = error ?? "grpc-status \(call.grpcStatus ?? "missing"): \(call.grpcMessage ?? "")"
    }
    if let interval = plan.interval {
      self.nextStart[call.worker] = self.nextStart[call.worker] + interval
    } else {
      self.nextStart[call.worker] = end
    }
    self.startWhenDue(call.worker)
  }

  /// The daemon is closing the connection (GOAWAY): calls it will still answer (ids up to
  /// `lastStreamID`) run to completion; later ones were never processed and count as failed;
  /// no new calls start on this connection.
  private func goingAway(lastStreamID: HTTP2StreamID, code: HTTP2ErrorCode) {
    let reason = "the daemon closed the connection early (GOAWAY \(code))"
    self.goAway = reason
    for streamID in self.inFlight.keys where streamID > lastStreamID {
      self.complete(streamID, error: reason)
    }
  }

  private func retireAfterGoAway(_ worker: Int, _ reason: String) {
    self.result.firstError = self.result.firstError ?? reason
    self.retire(worker)
  }

  /// The worker has started its last call; the run ends when every worker has and no call is
  /// in flight.
  private func retire(_ worker: Int) {
    self.activeWorkers -= 1
    if self.activeWorkers == 0 && self.inFlight.isEmpty { self.finish() }
  }

  /// The daemon went away or the run overran its grace period: calls in flight count as failed.
  private func fail(_ reason: String) {
    guard self.promise != nil else { return }
    if let plan = self.plan {
      self.result.errors += self.inFlight.values.filter { $0.start >= plan.measureFrom }.count
    }
    self.inFlight.removeAll()
    self.result.firstError = self.result.firstError ?? reason
    self.finish()
  }

  private func giveUp() {
    if !self.inFlight.isEmpty { self.fail("calls still in flight \(H2LoadDriver.drainGraceSeconds) s after the run") }
  }

  private func finish() {
    guard let promise = self.promise else { return }
    self.promise = nil
    promise.succeed(self.result)
  }
}

struct BenchError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}
