import BankLinkClient
import BankLinkCore
import BankLinkProto
import BankLinkServer
import BankLinkTestSupport
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import NIOCore
import NIOHTTP2
import SwiftProtobuf
import Testing

/// The daemon attacked from outside, as a bank's penetration tester would: a certificate the CA
/// signed, then hostile headers, streams and strings. Each test checks the attacker gets a clean
/// refusal and that the daemon goes on serving everyone else. `make attack-test` runs only
/// these; `make test` runs them with the rest.
@Suite("Attacks on the surface")
struct AttackTests {
  static let principals = [
    Principal(identity: "erp", roles: [.payer]),
    Principal(identity: "viewer", roles: [.viewer]),
    Principal(identity: "admin", roles: [.admin]),
  ]

  static let getBalancePath = "/banklink.v1.AccountService/GetBalance"

  static func balanceRequest() throws -> [UInt8] {
    try Banklink_V1_GetBalanceRequest.with { $0.accountID = "icbc-cny-001" }.serializedBytes()
  }

  /// The server still answers an ordinary call.
  static func stillServing(_ server: TestServer, _ files: ClientIdentityFiles) async throws {
    try await withBankLinkClient(server.client(files)) { client in
      let health = Grpc_Health_V1_Health.Client(wrapping: client)
      let answer = try await health.check(.init())
      #expect(answer.status == .serving)
    }
  }

  // MARK: Headers

  @Test("a malformed grpc-timeout is answered INVALID_ARGUMENT and never reaches the decoder")
  func malformedTimeouts() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let files = try server.pki.client(commonName: "viewer")
      let raw = try await RawHTTP2Client.connect(host: "127.0.0.1", port: server.port, configuration: server.client(files))
      let body = RawHTTP2Client.frame(try Self.balanceRequest())
      for value in ["-1S", "-5m", "-99999999H", "-0S", "", "S", "1x", "123456789S", "\u{FF11}S", " 1S", "1S,2S", "+1S"] {
        var headers = RawHTTP2Client.grpcHeaders(path: Self.getBalancePath)
        headers.append(("grpc-timeout", value))
        let response = try await raw.call(headers: headers, body: body)
        #expect(response.grpcStatus == "3", "grpc-timeout '\(value)': \(response.all)")
        #expect((response.grpcMessage ?? "").contains("grpc-timeout"))
      }
      // A well-formed one still works on the same connection.
      var headers = RawHTTP2Client.grpcHeaders(path: Self.getBalancePath)
      headers.append(("grpc-timeout", "5S"))
      let ok = try await raw.call(headers: headers, body: body)
      #expect(ok.grpcStatus == "0", "\(ok.all)")
      await raw.close()
      try await Self.stillServing(server, files)
    }
  }

  @Test("every request header gRPC defines, fuzzed: a refusal or an answer, never a crash or a hang")
  func headerFuzz() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let files = try server.pki.client(commonName: "viewer")
      let body = RawHTTP2Client.frame(try Self.balanceRequest())
      let long = String(repeating: "a", count: 4_000)
      var cases: [(String, [(String, String)])] = []
      func edited(_ name: String, _ value: String?) -> [(String, String)] {
        var headers = RawHTTP2Client.grpcHeaders(path: Self.getBalancePath).filter { $0.0 != name }
        if let value { headers.append((name, value)) }
        return headers
      }
      for value in [nil, "", "application/json", "application/grpc+json", "application/grpc; charset=\u{7F}", "application/grpc+proto", long] {
        cases.append(("content-type \(value ?? "absent")", edited("content-type", value)))
      }
      for value in ["gzip", "deflate", "identity", "bogus", "", long, "gzip, gzip"] {
        cases.append(("grpc-encoding \(value.prefix(20))", edited("grpc-encoding", value)))
        cases.append(("grpc-accept-encoding \(value.prefix(20))", edited("grpc-accept-encoding", value)))
      }
      for value in [nil, "", "gzip", "trailers, deflate"] {
        cases.append(("te \(value ?? "absent")", edited("te", value)))
      }
      for value in ["", long, "\u{1F600}\u{0301}\u{0301}", "grpc-go/1.0 \u{7F}"] {
        cases.append(("user-agent", edited("user-agent", value)))
      }
      for value in ["!!!not base64!!!", "", "YQ", "YQ==", String(repeating: "A", count: 6_000)] {
        cases.append(("x-trace-bin \(value.prefix(10))", edited("x-trace-bin", value)))
      }
      for (name, value) in [(":path", nil), (":path", "/"), (":path", "//"), (":path", "/x/y/z"), (":path", long), (":method", "GET"), (":scheme", "http"), (":authority", long)] as [(String, String?)] {
        cases.append(("\(name) \(value?.prefix(10) ?? "absent")", edited(name, value)))
      }
      cases.append(("grpc-timeout twice", edited("grpc-timeout", "1S") + [("grpc-timeout", "-1S")]))

      for (label, headers) in cases {
        // A fresh connection for each: some refusals are connection errors (GOAWAY).
        let raw = try await RawHTTP2Client.connect(host: "127.0.0.1", port: server.port, configuration: server.client(files))
        let response = try await raw.call(headers: headers, body: body, timeout: .seconds(10))
        let answered = response.grpcStatus != nil || response.reset != nil || response.httpStatus != nil
        #expect(answered, "\(label): no answer")
        await raw.close()
      }
      try await Self.stillServing(server, files)
    }
  }

  // MARK: Health Watch

  @Test("cancelled Watch streams free their slots; one principal cannot take them all")
  func watchSlots() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let viewer = try server.pki.client(commonName: "viewer")
      let admin = try server.pki.client(commonName: "admin")
      try await withBankLinkClient(server.client(viewer)) { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        // More cancelled watches than the server holds slots: each must end on the server.
        for _ in 0..<(Limits.maxHealthWatchers + 8) {
          try await health.watch(.init()) { response in
            for try await message in response.messages {
              #expect(message.status == .serving)
              break  // leaving the closure cancels the RPC
            }
          }
        }
      }
      try await Self.eventually { server.server.health.watcherCount == 0 }
      // The per-principal bound: the viewer's open watches stop at the limit; admin still gets one.
      try await withBankLinkClient(server.client(viewer)) { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        try await withThrowingTaskGroup(of: Void.self) { group in
          for _ in 0..<Limits.maxHealthWatchersPerPrincipal {
            group.addTask {
              try await health.watch(.init()) { response in
                for try await _ in response.messages {}
              }
            }
          }
          try await Self.eventually { server.server.health.watcherCount == Limits.maxHealthWatchersPerPrincipal }
          let refused = await #expect(throws: RPCError.self) {
            try await health.watch(.init()) { response in for try await _ in response.messages {} }
          }
          #expect(refused?.code == .resourceExhausted)
          try await withBankLinkClient(server.client(admin)) { adminClient in
            try await Grpc_Health_V1_Health.Client(wrapping: adminClient).watch(.init()) { response in
              for try await message in response.messages {
                #expect(message.status == .serving)
                break
              }
            }
          }
          group.cancelAll()
        }
      }
      try await Self.eventually { server.server.health.watcherCount == 0 }
    }
  }

  /// Waits, up to 10 s, for `condition` (state that another task changes).
  static func eventually(_ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now.advanced(by: .seconds(10))
    while !condition() {
      guard ContinuousClock.now < deadline else {
        Issue.record("condition not met within 10 s")
        return
      }
      try await Task.sleep(for: .milliseconds(20))
    }
  }

  // MARK: Strings

  /// 1 MB that counts as one grapheme cluster: "X" and 500,000 combining accents.
  static let combining = "X" + String(repeating: "\u{0301}", count: 500_000)

  @Test("oversized and combining-mark strings on every string field are refused naming the field, with a short message")
  func oversizedStrings() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let erp = try server.pki.client(commonName: "erp")
      try await withBankLinkClient(server.client(erp)) { client in
        let payments = Banklink_V1_PaymentService.Client(wrapping: client)
        let accounts = Banklink_V1_AccountService.Client(wrapping: client)
        func valid() -> Banklink_V1_PaymentInstruction {
          .with {
            $0.debtorAccountID = "icbc-cny-001"
            $0.creditor = .with {
              $0.name = "Shanghai Huaxin Trading Co., Ltd."; $0.accountNumber = "3100 2011 0904 0012 345"
              $0.bic = "CMBCCNBS"; $0.country = "CN"
            }
            $0.amount = .with { $0.minorUnits = 100; $0.currencyCode = "CNY" }
            $0.purpose = "INV-1"
            $0.type = .domestic
          }
        }
        // Spaces up to just under the method's message limit: the field check must refuse it.
        let iban = "DE89 3704 0044 0532 0130 00" + String(repeating: " ", count: Limits.maxOrdinaryRequestMessageBytes - 4_096)
        let edits: [(String, (inout Banklink_V1_PaymentInstruction) -> Void)] = [
          ("instruction.debtor_account_id", { $0.debtorAccountID = Self.combining }),
          ("instruction.creditor.name", { $0.creditor.name = Self.combining }),
          ("instruction.creditor.account_number", { $0.creditor.accountNumber = Self.combining }),
          ("instruction.creditor.iban", { $0.creditor.accountNumber = ""; $0.creditor.iban = iban }),
          ("instruction.creditor.bic", { $0.creditor.bic = Self.combining }),
          ("instruction.creditor.country", { $0.creditor.country = Self.combining }),
          ("instruction.purpose", { $0.purpose = Self.combining }),
          ("instruction.purpose", { $0.purpose = String(repeating: "\u{0301}", count: 141) }),
          ("instruction.requested_execution_date", { $0.requestedExecutionDate = Self.combining }),
          ("instruction.amount.currency_code", { $0.amount.currencyCode = Self.combining }),
        ]
        for (field, edit) in edits {
          var instruction = valid()
          edit(&instruction)
          let error = await #expect(throws: RPCError.self, "\(field)") {
            try await payments.createPayment(.with { $0.idempotencyKey = "attack"; $0.instruction = instruction })
          }
          #expect(error?.code == .invalidArgument, "\(field)")
          let fields = try error?.unpackGoogleRPCStatus()?.details.compactMap(\.badRequest).flatMap(\.violations).map(\.field) ?? []
          #expect(fields.contains(field), "\(field): \(fields)")
          #expect((error?.message.utf8.count ?? .max) < 1_024, "\(field): message echoes the input")
        }
        // Top-level strings of other requests.
        let key = await #expect(throws: RPCError.self) {
          try await payments.createPayment(.with { $0.idempotencyKey = Self.combining; $0.instruction = valid() })
        }
        #expect(key?.code == .invalidArgument && (key?.message.utf8.count ?? .max) < 1_024)
        for call in [
          { try await _ = accounts.getBalance(.with { $0.accountID = Self.combining }) },
          { try await _ = accounts.listTransactions(.with { $0.accountID = Self.combining }) },
          { try await _ = accounts.listAccounts(.with { $0.pageToken = Self.combining }) },
          { try await _ = accounts.listAccounts(.with { $0.currencyCode = Self.combining }) },
          { try await _ = payments.getPayment(.with { $0.paymentID = Self.combining }) },
          { try await _ = payments.listPayments(.with { $0.pageToken = Self.combining }) },
          { try await _ = payments.listPayments(.with { $0.creator = Self.combining }) },
          { try await _ = payments.listPayments(.with { $0.debtorAccountID = Self.combining }) },
          { try await _ = payments.cancelPayment(.with { $0.paymentID = "pay-s000000000000001"; $0.reason = Self.combining }) },
          { try await _ = payments.cancelPayment(.with { $0.paymentID = "pay-s000000000000001"; $0.requestID = Self.combining }) },
        ] as [@Sendable () async throws -> Void] {
          let error = await #expect(throws: RPCError.self) { try await call() }
          #expect(error?.code == .invalidArgument, "\(String(describing: error))")
          #expect((error?.message.utf8.count ?? .max) < 1_024)
        }
      }
      try await Self.stillServing(server, erp)
    }
  }
}
