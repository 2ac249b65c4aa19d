import BankLinkClient
import BankLinkCore
import BankLinkProto
import BankLinkServer
import BankLinkTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SwiftProtobuf
import Testing

/// gRPC server reflection (v1 and v1alpha) on the real server over mutual TLS. A stock client
/// (Python grpcio-reflection) is exercised by scripts/interop-check.sh.
@Suite("Server reflection")
struct ReflectionTests {
  static let principals = [
    Principal(identity: "viewer", roles: [.viewer]),
    Principal(identity: "no-roles", roles: []),
  ]

  /// Sends `requests` on one v1 stream; returns the responses in order.
  static func ask(
    _ client: GRPCClient<HTTP2ClientTransport.Posix>, _ requests: [Grpc_Reflection_V1_ServerReflectionRequest]
  ) async throws -> [Grpc_Reflection_V1_ServerReflectionResponse] {
    try await Grpc_Reflection_V1_ServerReflection.Client(wrapping: client).serverReflectionInfo(
      requestProducer: { writer in try await writer.write(contentsOf: requests) },
      onResponse: { response in try await response.messages.reduce(into: []) { $0.append($1) } })
  }

  @Test("lists every service the server registers and returns each one's file with its dependencies")
  func listAndDescribe() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let viewer = try server.pki.client(commonName: "viewer")
      try await withBankLinkClient(server.client(viewer)) { client in
        let listed = try await Self.ask(client, [.with { $0.listServices = "" }])
        let names = listed.first?.listServicesResponse.service.map(\.name) ?? []
        #expect(
          Set(names)
            == [
              "banklink.v1.AccountService", "banklink.v1.PaymentService", "banklink.v1.MonitoringService",
              "banklink.v1.ReconciliationService", "banklink.v1.AdminService", "grpc.health.v1.Health",
              "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
            ])

        // Several requests on one stream, answered in order; each file set parses and holds the
        // symbol and everything it imports.
        let symbols = names + ["banklink.v1.CreatePaymentRequest", "banklink.v1.PaymentService.CreatePayment", ".banklink.v1.Money"]
        let answers = try await Self.ask(client, symbols.map { symbol in .with { $0.fileContainingSymbol = symbol } })
        #expect(answers.count == symbols.count)
        for (symbol, answer) in zip(symbols, answers) {
          #expect(answer.originalRequest.fileContainingSymbol == symbol)
          let files = try answer.fileDescriptorResponse.fileDescriptorProto.map { try Google_Protobuf_FileDescriptorProto(serializedBytes: $0) }
          let first = try #require(files.first, "no file for \(symbol)")
          let have = Set(files.map(\.name))
          for file in files {
            for dependency in file.dependency { #expect(have.contains(dependency), "\(file.name) imports \(dependency), not sent") }
          }
          let name = symbol.hasPrefix(".") ? String(symbol.dropFirst()) : symbol
          var defined: [String] = first.messageType.map { first.package + "." + $0.name }
          for service in first.service {
            let qualified = first.package + "." + service.name
            defined.append(qualified)
            for method in service.method { defined.append(qualified + "." + method.name) }
          }
          #expect(defined.contains(name), "\(first.name) does not define \(name)")
        }
        let payments = try Google_Protobuf_FileDescriptorProto(
          serializedBytes: try #require(answers.first { $0.originalRequest.fileContainingSymbol == "banklink.v1.PaymentService" })
            .fileDescriptorResponse.fileDescriptorProto.first ?? Data())
        #expect(payments.name == "banklink/v1/payments.proto")

        // By file name; unknown names and symbols are NOT_FOUND in the stream, which stays open.
        let more = try await Self.ask(
          client,
          [
            .with { $0.fileByFilename = "google/protobuf/timestamp.proto" },
            .with { $0.fileContainingSymbol = "banklink.v1.NoSuchThing" },
            .with { $0.fileByFilename = "no/such.proto" },
            .with { $0.allExtensionNumbersOfType = "banklink.v1.Money" },
            .with { $0.fileContainingExtension = .with { $0.containingType = "banklink.v1.Money"; $0.extensionNumber = 100 } },
            .with { $0.host = "" },
          ])
        #expect(more.count == 6)
        #expect(try Google_Protobuf_FileDescriptorProto(serializedBytes: more[0].fileDescriptorResponse.fileDescriptorProto[0]).package == "google.protobuf")
        #expect(more[1].errorResponse.errorCode == Int32(RPCError.Code.notFound.rawValue))
        #expect(more[2].errorResponse.errorCode == Int32(RPCError.Code.notFound.rawValue))
        #expect(more[3].allExtensionNumbersResponse.baseTypeName == "banklink.v1.Money")
        #expect(more[3].allExtensionNumbersResponse.extensionNumber.isEmpty)
        #expect(more[4].errorResponse.errorCode == Int32(RPCError.Code.notFound.rawValue))
        #expect(more[5].errorResponse.errorCode == Int32(RPCError.Code.invalidArgument.rawValue))

        // v1alpha answers the same.
        let alpha = try await Grpc_Reflection_V1alpha_ServerReflection.Client(wrapping: client).serverReflectionInfo(
          requestProducer: { writer in try await writer.write(.with { $0.listServices = "*" }) },
          onResponse: { response in try await response.messages.reduce(into: []) { $0.append($1) } })
        #expect(alpha.first?.listServicesResponse.service.map(\.name) == names)
      }

      // Like every method, behind the authorization table: an unknown identity is refused.
      let stranger = try server.pki.client(commonName: "stranger")
      let refused = await #expect(throws: RPCError.self) {
        try await withBankLinkClient(server.client(stranger)) { try await Self.ask($0, [.with { $0.listServices = "" }]) }
      }
      #expect(refused?.code == .permissionDenied)
    }
  }
}
