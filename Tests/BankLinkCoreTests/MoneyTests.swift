import BankLinkCore
import Testing

@Suite("Money")
struct MoneyTests {
  @Test(arguments: [
    ("1234.56", 2, Int64(123_456)),
    ("0.01", 2, Int64(1)),
    ("7", 2, Int64(700)),
    ("-3.5", 2, Int64(-350)),
    ("1000", 0, Int64(1000)),
    ("1.234", 3, Int64(1234)),
  ])
  func parsesDecimals(text: String, exponent: Int, expected: Int64) {
    #expect(Money.parseMinorUnits(text, exponent: exponent) == expected)
  }

  @Test(arguments: ["", ".5", "1.", "1.234", "1e3", "12a", "--1", "99999999999999999999"])
  func refusesNonDecimals(text: String) {
    #expect(Money.parseMinorUnits(text, exponent: 2) == nil)
  }

  @Test func formatsWithoutFloatingPoint() throws {
    let cny = try #require(CurrencyCode("CNY"))
    #expect(Money(minorUnits: 123_456, currency: cny).description == "1234.56 CNY")
    #expect(Money(minorUnits: 5, currency: cny).description == "0.05 CNY")
    #expect(Money(minorUnits: -5, currency: cny).description == "-0.05 CNY")
    #expect(Money(minorUnits: 1000, currency: try #require(CurrencyCode("JPY"))).description == "1000 JPY")
    #expect(Money(minorUnits: Int64.min, currency: cny).description == "-92233720368547758.08 CNY")
  }

  @Test func currencyCodes() {
    #expect(CurrencyCode("USD") != nil)
    #expect(CurrencyCode("usd") == nil)
    #expect(CurrencyCode("US") == nil)
    #expect(CurrencyCode("USDT") == nil)
  }
}

@Suite("Principals")
struct PrincipalTableTests {
  @Test func lookup() {
    let table = PrincipalTable([
      Principal(identity: "erp", roles: [.payer]),
      Principal(identity: "alice", roles: [.approver, .viewer]),
    ])
    #expect(table.principal(for: "erp")?.holds(.payer) == true)
    #expect(table.principal(for: "erp")?.holds(.approver) == false)
    #expect(table.principal(for: "mallory") == nil)
    #expect(table.principals.map(\.identity) == ["alice", "erp"])
  }
}

@Suite("Host and port")
struct HostPortTests {
  @Test func parses() throws {
    let v4 = try #require(HostPort("127.0.0.1:7443"))
    #expect(v4.host == "127.0.0.1" && v4.port == 7443 && v4.isIPv4Literal && !v4.bracketed)
    let v6 = try #require(HostPort("[::1]:0"))
    #expect(v6.host == "::1" && v6.port == 0 && v6.bracketed && v6.isIPv6Literal)
    let name = try #require(HostPort("bank.example:443"))
    #expect(!name.isIPv4Literal && !name.isIPv6Literal)
    #expect(HostPort("256.1.1.1:1")?.isIPv4Literal == false)
  }

  @Test(arguments: ["", "7443", ":7443", "host:", "host:65536", "host:-1", "[::1]7443", "[::1:7443", "host:+1"])
  func refuses(text: String) {
    #expect(HostPort(text) == nil)
  }
}
