import BankLinkClient
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

/// The unary fast path (UnaryFastPath.swift) from the wire: every request, well-formed or not,
/// gets the answer gRPC Swift gives it on a server without the fast path (same status, message,
/// status details, metadata), the calls it must leave to gRPC Swift reach gRPC Swift, and the
/// gRPC behaviours a client relies on — deadlines, drain — hold for the calls it answers.
@Suite("Unary fast path")
struct UnaryFastPathTests {
  static let principals = [
    Principal(identity: "viewer", roles: [.viewer]),
    Principal(identity: "clerk", roles: [.reconciler]),
    // Known, but holding no role: every reader method refuses it.
    Principal(identity: "norole", roles: []),
  ]

  static let getBalance = "/banklink.v1.AccountService/GetBalance"
  static let whoAmI = "/banklink.v1.AdminService/WhoAmI"
  static let healthCheck = "/grpc.health.v1.Health/Check"
  static let getPayment = "/banklink.v1.PaymentService/GetPayment"
  /// Stands for the id of the payment `observe` creates on each server (ids differ between them).
  static let createdPayment = "<created>"

  static func payment(_ id: String) throws -> [UInt8] {
    RawHTTP2Client.frame(try Banklink_V1_GetPaymentRequest.with { $0.paymentID = id }.serializedBytes())
  }

  struct Case: Sendable {
    var label: String
    var identity = "viewer"
    var path: String
    var headers: [(String, String)] = []
    var body: [UInt8]?
    /// Whether the fast path answers it (else it hands it to gRPC Swift).
    var answeredHere: Bool
    /// gRPC Swift gives no gRPC status: HTTP 415 for a content-type it does not serve; it closes
    /// or resets the stream on a compressed message it was not told the encoding of, on client
    /// trailers and on a `:scheme` it does not know; nothing at all (until the client gives up)
    /// for a unary request that ends without a message.
    var expectsNoGRPCAnswer = false
    /// Where banklinkd's transport answers although grpc-swift-nio-transport does not: the
    /// status it gives (a request without a message gets INTERNAL from gRPC Swift's executor,
    /// because the transport ends the request stream when the client ends its side).
    var gatewayStatus: String?
    /// Trailers the client ends its side with (after the body).
    var trailers: [(String, String)]?
    /// gRPC Swift refuses it in the transport, before the interceptors give it a request id.
    var refusedByTransport = false
    var timeout: TimeAmount = .seconds(10)
  }

  static func balance(_ account: String, refresh: Bool = false) throws -> [UInt8] {
    try Banklink_V1_GetBalanceRequest.with {
      $0.accountID = account
      $0.refresh = refresh
    }.serializedBytes()
  }

  static func cases() throws -> [Case] {
    let empty = RawHTTP2Client.frame([])
    return [
      Case(label: "Health/Check", path: Self.healthCheck, body: empty, answeredHere: true),
      Case(
        label: "Health/Check of an unknown service", path: Self.healthCheck,
        body: RawHTTP2Client.frame(try Grpc_Health_V1_HealthCheckRequest.with { $0.service = "no.such.Service" }.serializedBytes()),
        answeredHere: true),
      Case(label: "WhoAmI", path: Self.whoAmI, body: empty, answeredHere: true),
      Case(label: "WhoAmI, not a principal", identity: "stranger", path: Self.whoAmI, body: empty, answeredHere: true),
      Case(label: "GetBalance", path: Self.getBalance, body: RawHTTP2Client.frame(try Self.balance("icbc-cny-001")), answeredHere: true),
      Case(
        label: "GetBalance, role missing", identity: "norole", path: Self.getBalance,
        body: RawHTTP2Client.frame(try Self.balance("icbc-cny-001")), answeredHere: true),
      Case(
        label: "GetBalance of an unknown account", path: Self.getBalance, body: RawHTTP2Client.frame(try Self.balance("nope-cny-404")),
        answeredHere: true),
      Case(label: "GetBalance without an account", path: Self.getBalance, body: RawHTTP2Client.frame(try Self.balance("")), answeredHere: true),
      Case(
        label: "GetBalance as application/grpc+proto", path: Self.getBalance,
        headers: [("content-type", "application/grpc+proto")], body: RawHTTP2Client.frame(try Self.balance("icbc-cny-001")),
        answeredHere: true),
      Case(label: "GetPayment", path: Self.getPayment, body: try Self.payment(Self.createdPayment), answeredHere: true),
      Case(label: "GetPayment of an unknown payment", path: Self.getPayment, body: try Self.payment("pay-nope"), answeredHere: true),
      Case(label: "GetPayment with a malformed id", path: Self.getPayment, body: try Self.payment("../x"), answeredHere: true),
      // Handed to gRPC Swift:
      Case(
        label: "GetBalance with refresh (asks the bank)", path: Self.getBalance,
        body: RawHTTP2Client.frame(try Self.balance("icbc-cny-001", refresh: true)), answeredHere: false),
      Case(
        label: "gzip-encoded request", path: Self.getBalance, headers: [("grpc-encoding", "gzip")],
        body: RawHTTP2Client.frame(try Self.balance("icbc-cny-001"), flag: 1), answeredHere: false, refusedByTransport: true),
      Case(
        label: "compressed flag without an encoding", path: Self.getBalance,
        body: RawHTTP2Client.frame(try Self.balance("icbc-cny-001"), flag: 1), answeredHere: false, expectsNoGRPCAnswer: true),
      Case(
        label: "no message", path: Self.whoAmI, body: nil, answeredHere: false, expectsNoGRPCAnswer: true, gatewayStatus: "13",
        timeout: .seconds(2)),
      Case(label: "two messages", path: Self.whoAmI, body: empty + empty, answeredHere: false),
      Case(label: "a truncated message", path: Self.getBalance, body: Array(RawHTTP2Client.frame(try Self.balance("icbc-cny-001")).dropLast(2)), answeredHere: false),
      Case(label: "bytes that are no GetBalanceRequest", path: Self.getBalance, body: RawHTTP2Client.frame([0xFF, 0xFF, 0xFF]), answeredHere: false),
      Case(
        label: ":scheme other than http or https", path: Self.whoAmI, headers: [(":scheme", "foo")], body: empty, answeredHere: false,
        expectsNoGRPCAnswer: true),
      Case(
        label: "client trailers after the message", path: Self.whoAmI, body: empty, answeredHere: false, expectsNoGRPCAnswer: true,
        trailers: [("x-trailer", "1")]),
      Case(
        label: "a request bigger than the fast path holds", path: Self.getBalance,
        body: RawHTTP2Client.frame(try Self.balance(String(repeating: "a", count: UnaryFastPath.maxHeldRequestBytes))), answeredHere: false),
      Case(
        label: "content-type application/grpc+json", path: Self.whoAmI, headers: [("content-type", "application/grpc+json")], body: empty,
        answeredHere: false, expectsNoGRPCAnswer: true),
    ]
  }

  /// What a client can observe of an answer, with what legitimately differs between two servers
  /// (the balance's staleness, certificate serials) left out of the body.
  struct Observed: Equatable, CustomStringConvertible {
    var status: String?
    var message: String?
    /// `grpc-status-details-bin`, decoded from base64 (a serialized google.rpc.Status).
    var details: [UInt8]?
    var headerNames: [String]
    var trailerNames: [String]
    var requestID: String?
    var reset: HTTP2ErrorCode?
    var identity: String?
    var account: String?
    var payment: String?

    var description: String {
      "status \(self.status ?? "-") \(self.message ?? "") details \(self.details.map { "\($0.count) bytes" } ?? "-") headers \(self.headerNames) trailers \(self.trailerNames) id \(self.requestID ?? "-") identity \(self.identity ?? "-") account \(self.account ?? "-") payment \(self.payment ?? "-")"
    }

    init(_ response: RawHTTP2Client.Response, path: String) throws {
      self.status = response.grpcStatus
      self.message = response.grpcMessage
      if let encoded = response.all.first(where: { $0.0 == "grpc-status-details-bin" })?.1 {
        let padded = encoded + String(repeating: "=", count: (4 - encoded.count % 4) % 4)
        self.details = [UInt8](Data(base64Encoded: padded) ?? Data())
      }
      self.headerNames = response.headers.map(\.0).sorted()
      self.trailerNames = response.trailers.map(\.0).sorted()
      self.requestID = response.all.first { $0.0 == RequestIDInterceptor.metadataKey }?.1
      self.reset = response.reset
      if response.body.count >= 5 {
        let message = Array(response.body.dropFirst(5))
        if path == UnaryFastPathTests.whoAmI { self.identity = try Banklink_V1_WhoAmIResponse(serializedBytes: message).identity }
        if path == UnaryFastPathTests.getPayment {
          let payment = try Banklink_V1_Payment(serializedBytes: message)
          self.payment = "\(payment.status) \(payment.instruction.amount.minorUnits) \(payment.instruction.debtorAccountID)"
        }
        if path == UnaryFastPathTests.getBalance {
          let balance = try Banklink_V1_Balance(serializedBytes: message)
          self.account = "\(balance.accountID) \(balance.ledger.currencyCode) \(balance.source)"
        }
      }
    }
  }

  /// Each case's answer, and whether the fast path answered it (its count went up by one).
  static func observe(_ server: TestServer, _ cases: [Case]) async throws -> [(Observed, answeredHere: Bool)] {
    var observed: [(Observed, answeredHere: Bool)] = []
    let created = try await server.payments.create(
      PaymentInstruction(
        debtorAccountID: "icbc-cny-001",
        creditor: Creditor(name: "Shanghai Huaxin Trading Co., Ltd.", accountNumber: "3100 2011 0904 0012 345", bic: "CMBCCNBS", country: "CN"),
        amount: Money(minorUnits: 12_345, currency: CurrencyCode("CNY")!), purpose: "INV-2026-0042", requestedExecutionDate: "",
        type: .domestic),
      idempotencyKey: "fast-path-1", creator: "erp")
    for var call in cases {
      if call.body == (try Self.payment(Self.createdPayment)) { call.body = try Self.payment(created.payment.id) }
      let before = server.server.fastPathAnswered
      let files = try server.pki.client(commonName: call.identity)
      let raw = try await RawHTTP2Client.connect(host: "127.0.0.1", port: server.port, configuration: server.client(files))
      let headers = RawHTTP2Client.grpcHeaders(path: call.path).filter { header in !call.headers.contains { $0.0 == header.0 } }
        + call.headers + [(RequestIDInterceptor.metadataKey, "fast-path-test-1")]
      let response = try await raw.call(headers: headers, body: call.body, trailers: call.trailers, timeout: call.timeout)
      observed.append((try Observed(response, path: call.path), server.server.fastPathAnswered == before + 1))
      #expect(server.server.fastPathAnswered - before <= 1, "\(call.label)")
      await raw.close()
    }
    return observed
  }

  /// A raw HTTP/2 connection as principal "viewer".
  static func viewer(_ server: TestServer) async throws -> RawHTTP2Client {
    try await RawHTTP2Client.connect(
      host: "127.0.0.1", port: server.port, configuration: server.client(try server.pki.client(commonName: "viewer")))
  }

  @Test(
    "every request is answered as gRPC Swift on grpc-swift-nio-transport answers it, by either transport, with or without the fast path",
    arguments: [GatewayServer.Transport.gateway, .grpcNIO], [true, false])
  func sameAnswers(transport: GatewayServer.Transport, fastPath: Bool) async throws {
    let cases = try Self.cases()
    // The reference: every call through gRPC Swift and grpc-swift-nio-transport.
    let slowRun = try await withTestServer(principals: Self.principals, configure: { $0.unaryFastPath = false; $0.transport = .grpcNIO }) {
      server in try await Self.observe(server, cases)
    }
    let fastRun = try await withTestServer(principals: Self.principals, configure: { $0.unaryFastPath = fastPath; $0.transport = transport }) {
      server in try await Self.observe(server, cases)
    }
    #expect(slowRun.allSatisfy { !$0.answeredHere })
    let (slow, fast) = (slowRun.map(\.0), fastRun.map(\.0))
    for (index, call) in cases.enumerated() {
      // Exactly the calls it should answer, each one.
      #expect(fastRun[index].answeredHere == (call.answeredHere && fastPath), "\(call.label)")
      if transport == .gateway, let status = call.gatewayStatus {
        #expect(slow[index].status == nil && fast[index].status == status, "\(call.label): \(fast[index])")
        continue
      }
      #expect(fast[index] == slow[index], "\(call.label):\n \(transport) fast path \(fastPath) \(fast[index])\n gRPC Swift \(slow[index])")
      if call.expectsNoGRPCAnswer {
        #expect(fast[index].status == nil, "\(call.label): \(fast[index])")
      } else {
        #expect(fast[index].status != nil, "\(call.label): no grpc-status: \(fast[index])")
        #expect((fast[index].requestID == "fast-path-test-1") != call.refusedByTransport, "\(call.label)")
      }
    }
    // The cases cover what they claim: successes, refusals, and errors with details.
    let statuses = Set(fast.compactMap(\.status))
    #expect(statuses.isSuperset(of: ["0", "3", "5", "7", "12"]), "\(statuses)")
    #expect(fast.contains { $0.details != nil })
    #expect(fast[2].identity == "viewer" && fast[4].account == "icbc-cny-001 CNY cache")
    #expect(fast.contains { $0.payment?.hasSuffix("12345 icbc-cny-001") == true }, "\(fast.compactMap(\.payment))")
  }

  // Stricter than gRPC Swift, which on a deadline only cancels the handler (and answers a
  // complete request whose deadline has passed): docs/architecture.md, "The unary fast path".
  @Test("a deadline that passes before the request is complete: DEADLINE_EXCEEDED, the stream reset")
  func deadline() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let raw = try await Self.viewer(server)
      let message = RawHTTP2Client.frame(try Self.balance("icbc-cny-001"))
      // Half of the message, then nothing: the deadline (200 ms) passes first.
      let stream = try await raw.start(
        headers: RawHTTP2Client.grpcHeaders(path: Self.getBalance) + [("grpc-timeout", "200m")], body: Array(message.prefix(4)),
        endStream: false)
      let late = try await stream.response.get()
      #expect(late.grpcStatus == "4", "\(late.all)")
      #expect(late.all.contains { $0.0 == RequestIDInterceptor.metadataKey })
      // A deadline already spent when the request completes.
      let spent = try await raw.call(headers: RawHTTP2Client.grpcHeaders(path: Self.getBalance) + [("grpc-timeout", "1n")], body: message)
      #expect(spent.grpcStatus == "4", "\(spent.all)")
      // A generous one is met.
      let met = try await raw.call(headers: RawHTTP2Client.grpcHeaders(path: Self.getBalance) + [("grpc-timeout", "5S")], body: message)
      #expect(met.grpcStatus == "0", "\(met.all)")
      // A message split over three DATA frames is answered when its last byte arrives.
      let split = try await raw.start(
        headers: RawHTTP2Client.grpcHeaders(path: Self.getBalance) + [("grpc-timeout", "5S")], body: Array(message.prefix(2)),
        endStream: false)
      split.send(Array(message.dropFirst(2).prefix(4)), endStream: false)
      split.send(Array(message.dropFirst(6)), endStream: true)
      let whole = try await split.response.get()
      #expect(whole.grpcStatus == "0", "\(whole.all)")
      #expect(try Banklink_V1_Balance(serializedBytes: Array(whole.body.dropFirst(5))).accountID == "icbc-cny-001")
      #expect(server.server.fastPathAnswered == 4)
      await raw.close()
    }
  }

  @Test("a caller that may not call the method is refused at its HEADERS, before it sends a byte more")
  func refusedAtHeaders() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let raw = try await RawHTTP2Client.connect(
        host: "127.0.0.1", port: server.port, configuration: server.client(try server.pki.client(commonName: "norole")))
      // HEADERS only, no END_STREAM, no deadline: the refusal must not wait for the request.
      let stream = try await raw.start(headers: RawHTTP2Client.grpcHeaders(path: Self.getBalance), endStream: false, timeout: .seconds(5))
      let refused = try await stream.response.get()
      #expect(refused.grpcStatus == "7", "\(refused.all)")
      #expect(server.server.fastPathAnswered == 1)
      await raw.close()
    }
  }

  @Test("what the fast path holds is bounded: a message over the limit is refused in front of it, many frames go to gRPC Swift")
  func sizeLimit() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let raw = try await Self.viewer(server)
      let limit = Limits.maxRequestMessageBytes(forPath: Self.getBalance)
      let huge = RawHTTP2Client.frame(try Self.balance(String(repeating: "a", count: limit + 16)))
      let response = try await raw.call(headers: RawHTTP2Client.grpcHeaders(path: Self.getBalance), body: huge)
      #expect(response.grpcStatus == "8", "\(response.all)")
      #expect(server.server.fastPathAnswered == 0)
      // Frames the fast path holds are bounded too: past UnaryFastPath.maxHeldFrames, the request
      // goes to gRPC Swift, which answers it. Here a WhoAmIRequest with an unknown field (skipped
      // by any parser), one byte per DATA frame (empty ones are swift-nio-http2's to refuse).
      let padded = RawHTTP2Client.frame([0x7A, 18] + [UInt8](repeating: 0x61, count: 18))
      #expect(padded.count > UnaryFastPath.maxHeldFrames)
      let stream = try await raw.start(headers: RawHTTP2Client.grpcHeaders(path: Self.whoAmI), endStream: false)
      for (index, byte) in padded.enumerated() { stream.send([byte], endStream: index == padded.count - 1) }
      let answer = try await stream.response.get()
      #expect(answer.grpcStatus == "0", "\(answer.all) reset \(String(describing: answer.reset))")
      #expect(try Banklink_V1_WhoAmIResponse(serializedBytes: Array(answer.body.dropFirst(5))).identity == "viewer")
      #expect(server.server.fastPathAnswered == 0)
      await raw.close()
    }
  }

  @Test("drain: a call in flight on the fast path is answered, then the connection gets GOAWAY")
  func drain() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let raw = try await Self.viewer(server)
      let message = RawHTTP2Client.frame(try Self.balance("icbc-cny-001"))
      let stream = try await raw.start(
        headers: RawHTTP2Client.grpcHeaders(path: Self.getBalance), body: Array(message.prefix(3)), endStream: false)
      // Let the server read the headers before it starts draining.
      try await Task.sleep(for: .milliseconds(200))
      server.server.beginGracefulShutdown()
      try await Task.sleep(for: .milliseconds(200))
      stream.send(Array(message.dropFirst(3)), endStream: true)
      let answer = try await stream.response.get()
      #expect(answer.grpcStatus == "0", "\(answer.all)")
      #expect(server.server.fastPathAnswered == 1)
      // The connection was told to go away: a new call on it is not served. The client refuses to
      // open the stream once it has read the GOAWAY; on a loaded machine it may open it first,
      // and the server then closes it unanswered.
      let after: RawHTTP2Client.Response?
      do {
        after = try await raw.call(headers: RawHTTP2Client.grpcHeaders(path: Self.getBalance), body: message, timeout: .seconds(2))
      } catch {
        after = nil
      }
      #expect(after == nil || after?.grpcStatus == nil, "\(after?.all ?? [])")
      #expect(server.server.fastPathAnswered == 1)
      await raw.close()
    }
  }
}
