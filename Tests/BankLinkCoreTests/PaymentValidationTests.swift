import BankLinkCore
import Testing

@Suite("Payment validation")
struct PaymentValidationTests {
  static let valid = PaymentInstruction(
    debtorAccountID: "icbc-cny-001",
    creditor: Creditor(name: "Shanghai Huaxin Trading Co., Ltd.", accountNumber: "3100 2011 0904 0012 345", bic: "CMBCCNBS", country: "CN"),
    amount: Money(minorUnits: 123_456, currency: CurrencyCode("CNY")!),
    purpose: "Invoice INV-2026-0042 货款",
    requestedExecutionDate: "2026-11-30",
    type: .domestic
  )

  static func fields(_ change: (inout PaymentInstruction) -> Void) -> [String] {
    var instruction = valid
    change(&instruction)
    return PaymentValidation.violations(of: instruction, today: "2026-11-27").map(\.field)
  }

  @Test func validInstructionPasses() {
    #expect(PaymentValidation.violations(of: Self.valid, today: "2026-11-27").isEmpty)
  }

  @Test func namesEachBadField() {
    #expect(Self.fields { $0.amount.minorUnits = 0 } == ["instruction.amount.minor_units"])
    #expect(Self.fields { $0.amount.minorUnits = Limits.maxPaymentMinorUnits + 1 } == ["instruction.amount.minor_units"])
    #expect(Self.fields { $0.creditor.name = "" } == ["instruction.creditor.name"])
    #expect(Self.fields { $0.creditor.name = String(repeating: "x", count: 141) } == ["instruction.creditor.name"])
    #expect(Self.fields { $0.creditor.name = "Bad\u{0007}Name" } == ["instruction.creditor.name"])
    #expect(Self.fields { $0.creditor.accountNumber = "" } == ["instruction.creditor.account_number"])
    #expect(Self.fields { $0.creditor.iban = "DE89370400440532013000" } == ["instruction.creditor.iban"])
    #expect(Self.fields { $0.creditor.bic = "CMBC" } == ["instruction.creditor.bic"])
    #expect(Self.fields { $0.creditor.bic = "CMBCXXBS" } == ["instruction.creditor.bic"])
    #expect(Self.fields { $0.creditor.country = "XX" } == ["instruction.creditor.country"])
    #expect(Self.fields { $0.purpose = String(repeating: "p", count: 141) } == ["instruction.purpose"])
    #expect(Self.fields { $0.requestedExecutionDate = "2026-11-26" } == ["instruction.requested_execution_date"])
    #expect(Self.fields { $0.requestedExecutionDate = "2026-02-30" } == ["instruction.requested_execution_date"])
    #expect(Self.fields { $0.debtorAccountID = "" } == ["instruction.debtor_account_id"])
  }

  @Test(arguments: ["DE89370400440532013000", "GB82 WEST 1234 5698 7654 32", "FR1420041010050500013M02606", "NL91ABNA0417164300"])
  func validIBANs(iban: String) {
    #expect(PaymentValidation.isValidIBAN(iban))
  }

  @Test(arguments: ["DE89370400440532013001", "GB82WEST12345698765433", "XX", "DE8937040044053201300!", "1234567890123456"])
  func invalidIBANs(iban: String) {
    #expect(!PaymentValidation.isValidIBAN(iban))
  }

  @Test func bics() {
    #expect(PaymentValidation.isValidBIC("ICBKCNBJSHI"))
    #expect(PaymentValidation.isValidBIC("DEUTDEFF"))
    #expect(!PaymentValidation.isValidBIC("deutdeff"))
    #expect(!PaymentValidation.isValidBIC("DEUTDEF"))
    #expect(!PaymentValidation.isValidBIC("1EUTDEFF"))
  }
}
