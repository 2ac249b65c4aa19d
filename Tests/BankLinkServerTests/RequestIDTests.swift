import BankLinkClient
import BankLinkCore
import BankLinkProto
@testable import BankLinkServer
import BankLinkTestSupport
import Foundation
import GRPCCore
import SwiftProtobuf
import Testing

/// Request ids: accepted from the client or made up, returned, and kept in the audit records.
@Suite("Request ids")
struct RequestIDTests {
  static let principals = [
    Principal(identity: "admin", roles: [.admin]),
    Principal(identity: "viewer", roles: [.viewer]),
  ]

  static func metadata(_ id: String?) -> Metadata {
    var metadata = Metadata()
    if let id { metadata.addString(id, forKey: "x-request-id") }
    return metadata
  }

  @Test("a made-up request id is a random version-4 UUID in lower case, a new one each time")
  func madeUp() {
    var seen = Set<String>()
    for _ in 0..<1000 {
      let id = RequestIDInterceptor.requestID(offered: nil)
      #expect(id.count == 36 && id == id.lowercased(), "\(id)")
      let uuid = UUID(uuidString: id)
      #expect(uuid != nil, "\(id)")
      // Version 4, variant 10xx (RFC 9562).
      #expect(uuid.map { $0.uuid.6 >> 4 == 4 && $0.uuid.8 >> 6 == 0b10 } == true, "\(id)")
      seen.insert(id)
    }
    #expect(seen.count == 1000)
    #expect(RequestIDInterceptor.requestID(offered: "erp-42") == "erp-42")
  }

  @Test("the client's x-request-id comes back (a made-up one when it sends none or an odd one), also on a refusal, and is kept in the journal")
  func requestIDs() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let admin = server.client(try server.pki.client(commonName: "admin"))
      let viewer = server.client(try server.pki.client(commonName: "viewer"))
      try await withBankLinkClient(admin) { client in
        let service = Banklink_V1_AdminService.Client(wrapping: client)
        func echoed(_ id: String?) async throws -> String? {
          try await service.whoAmI(.init(), metadata: Self.metadata(id)) { response in
            response.metadata[stringValues: "x-request-id"].first { _ in true }
          }
        }
        #expect(try await echoed("trace-42.a:b_c") == "trace-42.a:b_c")
        let madeUp = try #require(try await echoed(nil))
        #expect(UUID(uuidString: madeUp) != nil)
        let replaced = try #require(try await echoed("has spaces and a ; semicolon"))
        #expect(UUID(uuidString: replaced) != nil)
        #expect(try await echoed(String(repeating: "x", count: 65)).map { UUID(uuidString: $0) != nil } == true)

        _ = try await service.setPrincipalRoles(
          .with {
            $0.identity = "clerk"
            $0.roles = [.reconciler]
          }, metadata: Self.metadata("change-7"))
        let entries = try await service.listAuditEntries(.with { $0.object = "principals/clerk" })
        #expect(entries.entries.last?.payload.contains(#""request_id":"change-7""#) == true, "\(entries.entries.map(\.payload))")
      }
      try await withBankLinkClient(viewer) { client in
        do {
          _ = try await Banklink_V1_AdminService.Client(wrapping: client).listPrincipals(.init(), metadata: Self.metadata("denied-1"))
          Issue.record("a viewer listed principals")
        } catch let error as RPCError {
          #expect(error.code == .permissionDenied)
          #expect(error.metadata[stringValues: "x-request-id"].first { _ in true } == "denied-1")
        }
      }
    }
  }
}
