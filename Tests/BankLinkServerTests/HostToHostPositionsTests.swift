import BankLinkBanks
import BankLinkCore
import BankLinkFormats
import Foundation
@testable import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import Testing

@Suite("Host-to-host connector store against the daemon's saved positions")
struct HostToHostPositionsTests {
  @Test("a connector store behind the daemon's positions (restored from an older copy, or empty) is named; one level with them or ahead passes")
  func positionsChecked() async throws {
    try await withTestServer(principals: [Principal(identity: "admin", roles: [.admin])], initialSync: false) { server in
      try await withTemporaryDirectory { directory in
        let connector = try HostToHostConnector(
          configuration: .init(
            outbox: directory.appending("outbox"), inbox: directory.appending("inbox"), stateDirectory: directory.appending("state"),
            accounts: BankSimulator.catalogueAccounts, settleMilliseconds: 0, mapSizeMiB: 16),
          clock: { Instant(millisecondsSinceEpoch: 1_796_342_400_000) })
        let store = server.payments.writer.store
        func check() throws -> String? {
          try HostToHostInboxService.checkPositions(connector: connector, store: store)
        }
        // A fresh daemon store beside a fresh connector store.
        #expect(try check() == nil)
        func save(event: UInt64, statusCursor: String) throws {
          try store.withWriteTransaction { txn in
            var cursor = RecordWriter()
            cursor.write(event)
            try txn.put(HostToHostInboxService.cursorKey, cursor.bytes, in: .meta)
            try txn.put(PaymentLedger.statusCursorKey, Array(statusCursor.utf8), in: .meta)
          }
        }
        // The daemon acted on event 1 and read status report 0; the connector's store has issued
        // neither (an empty connector-files beside a restored data.mdb).
        try save(event: 1, statusCursor: "1")
        let mismatch = try #require(try check())
        #expect(mismatch.contains("inbox events up to 1") && mismatch.contains("issued 0"), "\(mismatch)")
        #expect(mismatch.contains("status reports up to 1"), "\(mismatch)")
        // Once the connector has issued event 1 (a statement file taken from its inbox), the same
        // positions are level with it.
        try save(event: 1, statusCursor: "0")
        var header = StatementHeader(format: .camt053)
        header.messageID = "P1"
        header.statementID = "P1"
        header.createdAt = "2026-12-03T08:00:00"
        header.account = StatementAccount(other: "1001234509876543210", currency: "CNY")
        let file = try CamtWriter.write(BankStatement(header: header), kind: .statement053)
        try Data(file).write(to: URL(fileURLWithPath: directory.appending("inbox") + "/p1.xml"))
        #expect(try await connector.pollInbox().processed == 1)
        #expect(try check() == nil)
        // The connector ahead of the daemon (an event not acted on yet, after a crash): fine.
        try save(event: 0, statusCursor: "0")
        #expect(try check() == nil)
        // An account's feed read further than the connector has booked (no entries here yet).
        _ = try await server.cache.apply(
          TransactionFeedPage(transactions: [], nextCursor: "7", hasMore: false), accountID: "icbc-cny-001",
          syncedAt: Instant(millisecondsSinceEpoch: 1_796_342_400_000))
        let feed = try #require(try check())
        #expect(feed.contains("icbc-cny-001's booked entries up to 7"), "\(feed)")
      }
    }
  }
}
