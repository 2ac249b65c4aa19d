import BankLinkBanks
import BankLinkCore
import BankLinkProto
import BankLinkServer
import BankLinkTestSupport
import Foundation
import GRPCCore
import NIOCore
import NIOHTTP2
import SwiftProtobuf
import Testing

/// banklinkd's own gRPC transport (GatewayTransport.swift): what it does beyond answering a call
/// — which streams get a task, and the connection's life (drain, idle, client PINGs) — checked
/// from the wire, on both transports where grpc-swift-nio-transport does the same.
@Suite("gRPC transport")
struct GatewayTransportTests {
  static let principals = UnaryFastPathTests.principals

  static func balance(_ account: String, refresh: Bool = false) throws -> [UInt8] {
    RawHTTP2Client.frame(try UnaryFastPathTests.balance(account, refresh: refresh))
  }

  /// A WhoAmI call (the fast path answers it) on `raw`.
  static func whoAmI(_ raw: RawHTTP2Client) async throws -> RawHTTP2Client.Response {
    try await raw.call(headers: RawHTTP2Client.grpcHeaders(path: UnaryFastPathTests.whoAmI), body: RawHTTP2Client.frame([]))
  }

  static func goAway(_ frame: RawHTTP2Client.ConnectionFrame) -> (HTTP2StreamID, HTTP2ErrorCode, String)? {
    if case .goAway(let id, let code, let debug) = frame { return (id, code, debug) }
    return nil
  }

  @Test("a call the fast path answers or the transport refuses gets no task; a call gRPC Swift serves gets one")
  func tasks() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let raw = try await UnaryFastPathTests.viewer(server)
      for _ in 0..<5 {
        let answer = try await raw.call(headers: RawHTTP2Client.grpcHeaders(path: UnaryFastPathTests.getBalance), body: try Self.balance("icbc-cny-001"))
        #expect(answer.grpcStatus == "0", "\(answer.all)")
      }
      // Refused at its HEADERS by the transport: a compression banklinkd does not accept.
      let compressed = try await raw.call(
        headers: RawHTTP2Client.grpcHeaders(path: UnaryFastPathTests.getBalance) + [("grpc-encoding", "gzip")], body: try Self.balance("icbc-cny-001"))
      #expect(compressed.grpcStatus == "12", "\(compressed.all)")
      #expect(compressed.all.contains { $0 == ("grpc-accept-encoding", "identity") }, "\(compressed.all)")
      #expect(server.server.fastPathAnswered == 5)
      #expect(server.server.streamsGivenToGRPCSwift == 0)
      // A refresh asks the bank: gRPC Swift serves it, on a task of its own.
      let refreshed = try await raw.call(
        headers: RawHTTP2Client.grpcHeaders(path: UnaryFastPathTests.getBalance), body: try Self.balance("icbc-cny-001", refresh: true))
      #expect(refreshed.grpcStatus == "0", "\(refreshed.all)")
      #expect(server.server.streamsGivenToGRPCSwift == 1)
      #expect(server.server.fastPathAnswered == 5)
      await raw.close()
    }
  }

  @Test(
    "a request refused at its HEADERS while the client is still sending: the answer, then the stream ends (it takes no more DATA)",
    arguments: GatewayServer.Transport.allCases)
  func refusedStreamEnds(transport: GatewayServer.Transport) async throws {
    try await withTestServer(principals: Self.principals, configure: { $0.transport = transport }) { server in
      let raw = try await UnaryFastPathTests.viewer(server)
      let headers = RawHTTP2Client.grpcHeaders(path: UnaryFastPathTests.getBalance).filter { $0.0 != "content-type" } + [("content-type", "text/plain")]
      let stream = try await raw.start(headers: headers, body: [0, 0, 0], endStream: false)
      let answer = try await stream.response.get()
      #expect(answer.httpStatus == "415", "\(answer.all)")
      // Without a reset the stream would stay half-open until the client ends it.
      var waited = 0
      while stream.channel.isActive && waited < 40 {
        try await Task.sleep(for: .milliseconds(50))
        waited += 1
      }
      #expect(!stream.channel.isActive, "the refused stream is still open")
      #expect(try await Self.whoAmI(raw).grpcStatus == "0")
      await raw.close()
    }
  }

  static let subscribeAlerts = "/banklink.v1.MonitoringService/SubscribeAlerts"
  static let importStatement = "/banklink.v1.ReconciliationService/ImportStatement"

  @Test(
    "a call gRPC Swift serves is cancelled when its grpc-timeout passes: an alert watch, which never ends by itself, ends",
    arguments: GatewayServer.Transport.allCases)
  func deadline(transport: GatewayServer.Transport) async throws {
    try await withTestServer(principals: Self.principals, configure: { $0.transport = transport }) { server in
      let raw = try await UnaryFastPathTests.viewer(server)
      // Without a deadline the watch stays open (here until the raw client gives up after 1 s).
      let open = try await raw.call(headers: RawHTTP2Client.grpcHeaders(path: Self.subscribeAlerts), body: RawHTTP2Client.frame([]), timeout: .seconds(1))
      #expect(open.grpcStatus == nil, "\(open.all)")
      // With one, the handler is cancelled and the watch ends as a watch does (OK), well before
      // the raw client would give up (20 s).
      let watch = try await raw.call(
        headers: RawHTTP2Client.grpcHeaders(path: Self.subscribeAlerts) + [("grpc-timeout", "300m")],
        body: RawHTTP2Client.frame([]), timeout: .seconds(20))
      #expect(watch.reset == nil, "\(watch.all)")
      #expect(watch.grpcStatus == "0", "\(watch.all)")
      // A deadline that has not passed changes nothing.
      let met = try await raw.call(
        headers: RawHTTP2Client.grpcHeaders(path: UnaryFastPathTests.getBalance) + [("grpc-timeout", "5S")],
        body: try Self.balance("icbc-cny-001", refresh: true))
      #expect(met.grpcStatus == "0", "\(met.all)")
      await raw.close()
    }
  }

  @Test(
    "a call's grpc-timeout reaches its handler: a refresh gives up on a slow bank before the deadline and answers from the cache",
    arguments: GatewayServer.Transport.allCases)
  func deadlineReachesHandler(transport: GatewayServer.Transport) async throws {
    try await withTestServer(principals: Self.principals, configure: { $0.transport = transport }) { server in
      let raw = try await UnaryFastPathTests.viewer(server)
      // The bank takes 1.7 s. Knowing the 1.9 s deadline, the handler waits for the bank until a
      // fifth of it is left (1.52 s) and answers from the cache; not knowing it, it would wait up
      // to 2 s and get the bank's answer. (The raw client enforces no deadline of its own.)
      server.simulator.setFaults(.init(latencyMilliseconds: 1_700))
      let answer = try await raw.call(
        headers: RawHTTP2Client.grpcHeaders(path: UnaryFastPathTests.getBalance) + [("grpc-timeout", "1900m")],
        body: try Self.balance("boc-usd-002", refresh: true))
      #expect(answer.grpcStatus == "0", "\(answer.all)")
      let balance = try Banklink_V1_Balance(serializedBytes: Array(answer.body.dropFirst(5)))
      #expect(balance.source == .cache)
      #expect(balance.stale)
      await raw.close()
    }
  }

  static let createPayment = "/banklink.v1.PaymentService/CreatePayment"

  static func paymentRequest(key: String, amount: Int64) throws -> [UInt8] {
    let request = Banklink_V1_CreatePaymentRequest.with {
      $0.idempotencyKey = key
      $0.instruction = .with {
        $0.debtorAccountID = "icbc-cny-002"
        $0.creditor = .with {
          $0.name = "Shanghai Huaxin Trading Co., Ltd."
          $0.accountNumber = "3100 2011 0904 0012 345"
          $0.bic = "CMBCCNBS"
          $0.country = "CN"
        }
        $0.amount = .with { $0.minorUnits = amount; $0.currencyCode = "CNY" }
        $0.purpose = "abandoned-\(key)"
        $0.type = .domestic
      }
    }
    return RawHTTP2Client.frame(try request.serializedBytes() as [UInt8])
  }

  /// Money through the transport's cancellation: a payment whose call is reset may or may not
  /// have been committed, and the client cannot know which; its retry with the same key must find
  /// what was committed, never make a second payment or a second reservation.
  @Test(
    "CreatePayment calls reset by the client at random moments, then retried with their keys: one payment and one reservation per key",
    arguments: GatewayServer.Transport.allCases)
  func abandonedPayments(transport: GatewayServer.Transport) async throws {
    let principals = [Principal(identity: "erp", roles: [.payer])]
    try await withTestServer(principals: principals, configure: { $0.transport = transport }) { server in
      let before = try #require(try server.payments.available(accountID: "icbc-cny-002"))
      let identity = try server.pki.client(commonName: "erp")
      let raw = try await RawHTTP2Client.connect(host: "127.0.0.1", port: server.port, configuration: server.client(identity))
      let calls = 60
      var abandoned: [EventLoopFuture<RawHTTP2Client.Response>] = []
      for index in 0..<calls {
        let stream = try await raw.start(
          headers: RawHTTP2Client.grpcHeaders(path: Self.createPayment), body: try Self.paymentRequest(key: "k\(index)", amount: 100 + Int64(index)))
        // Reset (RST_STREAM CANCEL) after 0 to 4 ms: before, during or after the commit.
        let channel = stream.channel
        channel.eventLoop.scheduleTask(in: .microseconds(Int64.random(in: 0...4_000))) { channel.close(promise: nil) }
        abandoned.append(stream.response)
      }
      // (Measured by hand: most calls are committed but never answered, a few are answered
      // before their reset, and a few are reset before the commit.)
      for response in abandoned { _ = try? await response.get() }
      await raw.close()
      // The retries come on a new connection, as a client's usually do after giving up on calls.
      // (On the same connection they sometimes wait forever: the connection whose calls were
      // reset stops sending, on either transport — about 1 run in 15 under load, not solved;
      // see the stop's notes. This test is about the payments.)
      let retry = try await RawHTTP2Client.connect(host: "127.0.0.1", port: server.port, configuration: server.client(identity))
      var ids: Set<String> = []
      for index in 0..<calls {
        let answer = try await retry.call(
          headers: RawHTTP2Client.grpcHeaders(path: Self.createPayment), body: try Self.paymentRequest(key: "k\(index)", amount: 100 + Int64(index)))
        #expect(answer.grpcStatus == "0", "\(answer.all)")
        let created = try Banklink_V1_CreatePaymentResponse(serializedBytes: Array(answer.body.dropFirst(5)))
        #expect(created.payment.instruction.amount.minorUnits == 100 + Int64(index))
        ids.insert(created.payment.paymentID)
      }
      #expect(ids.count == calls)
      #expect(try server.payments.list(.init(), after: nil, limit: 1000).payments.count == calls)
      let reserved = (0..<calls).reduce(Int64(0)) { $0 + 100 + Int64($1) }
      #expect(try server.payments.available(accountID: "icbc-cny-002") == before - reserved)
      await retry.close()
    }
  }

  /// (On grpc-swift-nio-transport the deadline only cancels the handler's handle, and a handler
  /// waiting for the rest of the request waits until the client ends the stream.)
  @Test("a call gRPC Swift serves whose client never finishes its request is answered DEADLINE_EXCEEDED when its grpc-timeout passes")
  func deadlineOfUnfinishedRequest() async throws {
    let principals = [Principal(identity: "erp", roles: [.payer])]
    try await withTestServer(principals: principals) { server in
      let raw = try await RawHTTP2Client.connect(
        host: "127.0.0.1", port: server.port, configuration: server.client(try server.pki.client(commonName: "erp")))
      // The whole message, but the client never half-closes: a unary handler waits for the end.
      let stream = try await raw.start(
        headers: RawHTTP2Client.grpcHeaders(path: Self.createPayment) + [("grpc-timeout", "300m")],
        body: try Self.paymentRequest(key: "unfinished", amount: 100), endStream: false, timeout: .seconds(20))
      let answer = try await stream.response.get()
      #expect(answer.grpcStatus == "4", "\(answer.all)")
      #expect(try server.payments.list(.init(), after: nil, limit: 10).payments.isEmpty)
      await raw.close()
    }
  }

  /// (grpc-swift-nio-transport leaves such a stream open until the client ends it.)
  @Test("a call gRPC Swift answers while the client is still sending: the answer, then RST_STREAM(NO_ERROR) ends the stream")
  func answeredStreamEnds() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let raw = try await UnaryFastPathTests.viewer(server)
      // A viewer may not import statements: refused before the request is read, mid-upload.
      var chunk = Banklink_V1_ImportStatementRequest()
      chunk.requestID = "upload-1"
      chunk.content = Data(repeating: UInt8(ascii: "x"), count: 1024)
      let stream = try await raw.start(
        headers: RawHTTP2Client.grpcHeaders(path: Self.importStatement), body: RawHTTP2Client.frame(try chunk.serializedBytes() as [UInt8]),
        endStream: false)
      let answer = try await stream.response.get()
      #expect(answer.grpcStatus == "7", "\(answer.all)")
      #expect(answer.reset == nil || answer.reset == .noError, "\(answer.all)")
      var waited = 0
      while stream.channel.isActive && waited < 40 {
        try await Task.sleep(for: .milliseconds(50))
        waited += 1
      }
      #expect(!stream.channel.isActive, "the answered stream is still open")
      #expect(try await Self.whoAmI(raw).grpcStatus == "0")
      await raw.close()
    }
  }

  @Test(
    "drain: GOAWAY naming the highest stream id and a PING, then GOAWAY naming the last stream opened; the call in flight is answered",
    arguments: GatewayServer.Transport.allCases)
  func drain(transport: GatewayServer.Transport) async throws {
    try await withTestServer(principals: Self.principals, configure: { $0.transport = transport }) { server in
      let raw = try await UnaryFastPathTests.viewer(server)
      let first = try await Self.whoAmI(raw)
      #expect(first.grpcStatus == "0")
      // A refresh (gRPC Swift) sent in two parts, the drain beginning between them.
      let message = try Self.balance("icbc-cny-001", refresh: true)
      let stream = try await raw.start(
        headers: RawHTTP2Client.grpcHeaders(path: UnaryFastPathTests.getBalance), body: Array(message.prefix(3)), endStream: false)
      try await Task.sleep(for: .milliseconds(200))
      server.server.beginGracefulShutdown()
      try await Task.sleep(for: .milliseconds(300))
      stream.send(Array(message.dropFirst(3)), endStream: true)
      let answer = try await stream.response.get()
      #expect(answer.grpcStatus == "0", "\(answer.all)")
      try await raw.channel.closeFuture.get()
      let goAways = raw.goAways.compactMap(Self.goAway)
      #expect(goAways.count == 2, "\(raw.connectionFrames)")
      #expect(goAways.first?.0 == .maxID && goAways.first?.1 == .noError, "\(goAways)")
      // Streams 1 and 3: the second GOAWAY names the call in flight.
      #expect(goAways.last?.0 == HTTP2StreamID(3) && goAways.last?.1 == .noError, "\(goAways)")
      #expect(raw.connectionFrames.contains(.ping(ack: false)))
    }
  }

  @Test("a connection idle for connections.idle_timeout gets GOAWAY and is closed; one with a call open is not", arguments: GatewayServer.Transport.allCases)
  func idle(transport: GatewayServer.Transport) async throws {
    let idleMilliseconds = 300
    try await withTestServer(
      principals: Self.principals,
      configure: {
        $0.transport = transport
        $0.connections = $0.connections.with { $0.idleTimeoutMilliseconds = idleMilliseconds }
      }
    ) { server in
      let idle = try await UnaryFastPathTests.viewer(server)
      let answer = try await Self.whoAmI(idle)
      #expect(answer.grpcStatus == "0")
      // A second connection keeps a call open (a request not finished) past the idle time.
      let busy = try await UnaryFastPathTests.viewer(server)
      let message = try Self.balance("icbc-cny-001", refresh: true)
      let open = try await busy.start(
        headers: RawHTTP2Client.grpcHeaders(path: UnaryFastPathTests.getBalance), body: Array(message.prefix(3)), endStream: false)
      try await idle.channel.closeFuture.get()
      let goAways = idle.goAways.compactMap(Self.goAway)
      #expect(goAways.last?.0 == HTTP2StreamID(1) && goAways.last?.1 == .noError, "\(idle.connectionFrames)")
      #expect(busy.channel.isActive, "a connection with a call open was closed as idle")
      open.send(Array(message.dropFirst(3)), endStream: true)
      let served = try await open.response.get()
      #expect(served.grpcStatus == "0", "\(served.all)")
      await busy.close()
    }
  }

  @Test(
    "a client that PINGs too often without a call open: GOAWAY ENHANCE_YOUR_CALM too_many_pings, then closed; one that PINGs after each answer is not",
    arguments: GatewayServer.Transport.allCases)
  func pingFlood(transport: GatewayServer.Transport) async throws {
    try await withTestServer(principals: Self.principals, configure: { $0.transport = transport }) { server in
      let raw = try await UnaryFastPathTests.viewer(server)
      // The first PING is allowed; the three after it, sent at once, are strikes.
      for _ in 0..<4 {
        raw.ping()
        try await Task.sleep(for: .milliseconds(20))
      }
      try await raw.channel.closeFuture.get()
      let goAways = raw.goAways.compactMap(Self.goAway)
      #expect(goAways.count == 1 && goAways.first?.1 == .enhanceYourCalm && goAways.first?.2 == "too_many_pings", "\(raw.connectionFrames)")
      // A client that PINGs after each answer (as C++ clients probe the bandwidth after data) is
      // not counted against: the server's HEADERS and DATA let it PING again.
      let prober = try await UnaryFastPathTests.viewer(server)
      for _ in 0..<6 {
        let answer = try await Self.whoAmI(prober)
        #expect(answer.grpcStatus == "0", "\(answer.all)")
        prober.ping()
        try await Task.sleep(for: .milliseconds(20))
      }
      #expect(prober.channel.isActive && prober.goAways.isEmpty, "\(prober.connectionFrames)")
      await prober.close()
      // Others are still served.
      let other = try await UnaryFastPathTests.viewer(server)
      let answer = try await Self.whoAmI(other)
      #expect(answer.grpcStatus == "0")
      await other.close()
    }
  }
}
