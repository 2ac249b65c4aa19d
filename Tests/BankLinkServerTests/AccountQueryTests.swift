import BankLinkBanks
import BankLinkClient
import BankLinkCore
import BankLinkProto
import BankLinkServer
import BankLinkTestSupport
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SwiftProtobuf
import Testing

/// AccountService end to end: the real server over mutual TLS, the cache filled from the real
/// simulator.
@Suite("Account queries")
struct AccountQueryTests {
  static let principals = [
    Principal(identity: "viewer", roles: [.viewer]),
    Principal(identity: "erp", roles: [.payer]),
    Principal(identity: "no-roles", roles: []),
  ]

  static func withAccounts<T: Sendable>(
    as identity: String = "viewer",
    _ body: @Sendable (TestServer, Banklink_V1_AccountService.Client<HTTP2ClientTransport.Posix>) async throws -> T
  ) async throws -> T {
    try await withTestServer(principals: Self.principals) { server in
      let files = try server.pki.client(commonName: identity)
      return try await withBankLinkClient(server.client(files)) { client in
        try await body(server, Banklink_V1_AccountService.Client(wrapping: client))
      }
    }
  }

  /// The field named by the BadRequest detail of an INVALID_ARGUMENT error.
  static func violatedField(_ error: RPCError?) throws -> String? {
    guard let error, error.code == .invalidArgument else { return nil }
    return try error.unpackGoogleRPCStatus()?.details.compactMap(\.badRequest).first?.violations.first?.field
  }

  static func options(timeoutMilliseconds: Int64) -> CallOptions {
    var options = CallOptions.defaults
    options.timeout = .milliseconds(timeoutMilliseconds)
    return options
  }

  @Test("ListAccounts pages through every account once and filters by currency and bank")
  func listAccounts() async throws {
    try await Self.withAccounts { server, accounts in
      var seen: [String] = []
      var token = ""
      repeat {
        let page = try await accounts.listAccounts(.with { $0.pageSize = 4; $0.pageToken = token })
        #expect(page.accounts.count <= 4)
        seen += page.accounts.map(\.accountID)
        token = page.nextPageToken
      } while !token.isEmpty
      #expect(seen.count == 6)
      #expect(Set(seen).count == seen.count)

      let usd = try await accounts.listAccounts(.with { $0.currencyCode = "USD" })
      #expect(usd.accounts.count == 2)
      #expect(usd.accounts.allSatisfy { $0.currencyCode == "USD" })
      let icbc = try await accounts.listAccounts(.with { $0.bankBic = "ICBKCNBJSHI" })
      #expect(icbc.accounts.count == 3)

      let badCurrency = await #expect(throws: RPCError.self) { try await accounts.listAccounts(.with { $0.currencyCode = "dollars" }) }
      #expect(try Self.violatedField(badCurrency) == "currency_code")
      let negative = await #expect(throws: RPCError.self) { try await accounts.listAccounts(.with { $0.pageSize = -1 }) }
      #expect(try Self.violatedField(negative) == "page_size")
    }
  }

  @Test("GetBalance answers from the cache with the bank's figure and its freshness")
  func balanceFromCache() async throws {
    try await Self.withAccounts { server, accounts in
      let bank = try await server.simulator.fetchBalance(accountID: "db-eur-001", deadline: .now.advanced(by: .seconds(5)))
      let balance = try await accounts.getBalance(.with { $0.accountID = "db-eur-001" })
      #expect(balance.ledger.minorUnits == bank.ledger.minorUnits)
      #expect(balance.ledger.currencyCode == "EUR")
      #expect(balance.available == balance.ledger)
      #expect(balance.source == .cache)
      #expect(!balance.stale)
      #expect(balance.hasAsOf)
    }
  }

  @Test("while the bank is down, refresh answers from the cache marked stale, never an error")
  func staleWhenBankDown() async throws {
    try await Self.withAccounts { server, accounts in
      let cached = try await accounts.getBalance(.with { $0.accountID = "icbc-cny-001" })
      server.simulator.setFaults(.init(outage: true))
      let answer = try await accounts.getBalance(.with { $0.accountID = "icbc-cny-001"; $0.refresh = true })
      #expect(answer.stale)
      #expect(answer.source == .cache)
      #expect(answer.ledger == cached.ledger)

      // Sync fails too, and the cache keeps serving.
      await #expect(throws: BankError.self) { try await server.sync.syncOnce() }
      let afterFailedSync = try await accounts.getBalance(.with { $0.accountID = "icbc-cny-001" })
      #expect(afterFailedSync.ledger == cached.ledger)
    }
  }

  @Test("refresh asks the bank live within the call's deadline, and falls back before it")
  func refreshWithinDeadline() async throws {
    try await Self.withAccounts { server, accounts in
      // The bank moves after the last sync: only a live answer can know.
      _ = try await server.simulator.book(
        accountID: "boc-usd-002", amountMinorUnits: 12_345, direction: .credit, at: WallClock.now(),
        counterparty: Counterparty(name: "Test Payer", accountNumber: "1", bankBIC: "CHASUS33", bankName: "Chase"),
        description: "refresh test")
      let bank = try await server.simulator.fetchBalance(accountID: "boc-usd-002", deadline: .now.advanced(by: .seconds(5)))

      server.simulator.setFaults(.init(latencyMilliseconds: 100))
      let live = try await accounts.getBalance(
        .with { $0.accountID = "boc-usd-002"; $0.refresh = true }, options: Self.options(timeoutMilliseconds: 10_000))
      #expect(live.source == .bank)
      #expect(!live.stale)
      #expect(live.ledger.minorUnits == bank.ledger.minorUnits)

      // A bank slower than the deadline: the call still succeeds, from the cache, stale. (The
      // server gives up on the bank a fifth of the deadline early: 1.6 s of slack here, so a
      // test machine running the whole suite on two cores does not turn the fallback into
      // DEADLINE_EXCEEDED — 600 ms of slack did, once in a clean-clone CI run.)
      server.simulator.setFaults(.init(latencyMilliseconds: 60_000))
      let fallback = try await accounts.getBalance(
        .with { $0.accountID = "boc-usd-002"; $0.refresh = true }, options: Self.options(timeoutMilliseconds: 8_000))
      #expect(fallback.source == .cache)
      #expect(fallback.stale)
    }
  }

  @Test("bad arguments are rejected naming the field; unknown accounts are NOT_FOUND")
  func badArguments() async throws {
    try await Self.withAccounts { server, accounts in
      let empty = await #expect(throws: RPCError.self) { try await accounts.getBalance(.init()) }
      #expect(try Self.violatedField(empty) == "account_id")
      let junk = await #expect(throws: RPCError.self) { try await accounts.getBalance(.with { $0.accountID = "a b/../c" }) }
      #expect(try Self.violatedField(junk) == "account_id")
      let unknown = await #expect(throws: RPCError.self) { try await accounts.getBalance(.with { $0.accountID = "icbc-cny-999" }) }
      #expect(unknown?.code == .notFound)

      let unknownTx = await #expect(throws: RPCError.self) {
        try await accounts.listTransactions(.with { $0.accountID = "icbc-cny-999" })
      }
      #expect(unknownTx?.code == .notFound)
      let backwards = await #expect(throws: RPCError.self) {
        try await accounts.listTransactions(.with {
          $0.accountID = "icbc-cny-001"
          $0.startTime = Google_Protobuf_Timestamp(seconds: 2_000_000_000)
          $0.endTime = Google_Protobuf_Timestamp(seconds: 1_000_000_000)
        })
      }
      #expect(try Self.violatedField(backwards) == "end_time")
      let badTime = await #expect(throws: RPCError.self) {
        try await accounts.listTransactions(.with {
          $0.accountID = "icbc-cny-001"
          $0.startTime = Google_Protobuf_Timestamp(seconds: 1, nanos: -5)
        })
      }
      #expect(try Self.violatedField(badTime) == "start_time")
      let badToken = await #expect(throws: RPCError.self) {
        try await accounts.listTransactions(.with { $0.accountID = "icbc-cny-001"; $0.pageToken = "not-a-token" })
      }
      #expect(try Self.violatedField(badToken) == "page_token")

      // A genuine token replayed against another account is refused too.
      let first = try await accounts.listTransactions(.with { $0.accountID = "icbc-cny-001"; $0.pageSize = 5 })
      let misused = await #expect(throws: RPCError.self) {
        try await accounts.listTransactions(.with { $0.accountID = "icbc-cny-002"; $0.pageToken = first.nextPageToken })
      }
      #expect(try Self.violatedField(misused) == "page_token")

      // Every list shares one token format, but a token continues only the list that issued it:
      // a ListAccounts token (an account id) is refused by ListTransactions.
      let accountPage = try await accounts.listAccounts(.with { $0.pageSize = 1 })
      #expect(!accountPage.nextPageToken.isEmpty)
      let crossed = await #expect(throws: RPCError.self) {
        try await accounts.listTransactions(.with { $0.accountID = "icbc-cny-001"; $0.pageToken = accountPage.nextPageToken })
      }
      #expect(try Self.violatedField(crossed) == "page_token")
      let next = try await accounts.listAccounts(.with { $0.pageSize = 1; $0.pageToken = accountPage.nextPageToken })
      #expect(next.accounts.first.map { $0.accountID > accountPage.accounts[0].accountID } == true)
    }
  }

  @Test("pages stay correct while transactions keep arriving: no duplicates, no gaps")
  func pagingWhileArriving() async throws {
    try await Self.withAccounts { server, accounts in
      let account = "icbc-cny-001"
      let before = try server.cache.transactionCount(accountID: account)
      #expect(before > 100)
      var seen: [Banklink_V1_Transaction] = []
      var token = ""
      var pages = 0
      repeat {
        let page = try await accounts.listTransactions(.with {
          $0.accountID = account
          $0.pageSize = 37
          $0.pageToken = token
        })
        #expect(page.transactions.count <= 37)
        seen += page.transactions
        token = page.nextPageToken
        pages += 1
        // New entries arrive at the bank and reach the cache between pages.
        for _ in 0..<3 {
          _ = try await server.simulator.advance(now: WallClock.now().adding(milliseconds: 1_000))
        }
        try await server.sync.syncOnce()
      } while !token.isEmpty
      #expect(pages > 2)
      let after = try server.cache.transactionCount(accountID: account)
      #expect(after > before, "the test must actually add transactions while paging")
      let ids = seen.map(\.transactionID)
      #expect(Set(ids).count == ids.count, "duplicates across pages")
      #expect(ids.count == before, "every transaction present at the first page, and only those")
      let times = seen.map { $0.bookingTime.seconds * 1000 + Int64($0.bookingTime.nanos / 1_000_000) }
      #expect(times == times.sorted())
    }
  }

  @Test("time range and direction filters")
  func filters() async throws {
    try await Self.withAccounts { server, accounts in
      let all = try await accounts.listTransactions(.with { $0.accountID = "icbc-usd-001"; $0.pageSize = 1000 })
      #expect(all.transactions.count > 10)
      let credits = try await accounts.listTransactions(.with {
        $0.accountID = "icbc-usd-001"; $0.pageSize = 1000; $0.direction = .credit
      })
      #expect(credits.transactions.allSatisfy { $0.direction == .credit })
      #expect(credits.transactions.count == all.transactions.filter { $0.direction == .credit }.count)

      let middle = all.transactions[all.transactions.count / 2].bookingTime
      let later = try await accounts.listTransactions(.with {
        $0.accountID = "icbc-usd-001"; $0.pageSize = 1000; $0.startTime = middle
      })
      #expect(later.transactions.count == all.transactions.filter {
        ($0.bookingTime.seconds, $0.bookingTime.nanos) >= (middle.seconds, middle.nanos)
      }.count)
      // The page cap: more rows than a page may hold (crafted straight into the cache), asked
      // for with a page size beyond the cap.
      let usd = CurrencyCode("USD")!
      let filler = (0..<(Limits.maxPageSize + 50)).map { index in
        BookedTransaction(
          id: "filler-\(index)", accountID: "icbc-usd-001", amount: Money(minorUnits: 1, currency: usd), direction: .credit,
          bookingTime: Instant(millisecondsSinceEpoch: 1_000 + Int64(index)), valueDate: "1970-01-01",
          counterparty: Counterparty(name: "X", accountNumber: "1", bankBIC: "ICBKUS33", bankName: "ICBC"),
          endToEndID: "", bankReference: "F\(index)", description: "filler")
      }
      let cursor = try server.cache.syncCursor("icbc-usd-001") ?? ""
      try await server.cache.apply(
        TransactionFeedPage(transactions: filler, nextCursor: cursor, hasMore: false), accountID: "icbc-usd-001", syncedAt: WallClock.now())
      let capped = try await accounts.listTransactions(.with { $0.accountID = "icbc-usd-001"; $0.pageSize = 100_000 })
      #expect(capped.transactions.count == Limits.maxPageSize)
      #expect(!capped.nextPageToken.isEmpty)
    }
  }

  @Test("every role may query; an identity without a role is refused")
  func authorization() async throws {
    try await Self.withAccounts(as: "erp") { _, accounts in
      let listed = try await accounts.listAccounts(.init())
      #expect(listed.accounts.count == 6)
    }
    try await Self.withAccounts(as: "no-roles") { _, accounts in
      let refused = await #expect(throws: RPCError.self) { try await accounts.getBalance(.with { $0.accountID = "icbc-cny-001" }) }
      #expect(refused?.code == .permissionDenied)
    }
  }
}
