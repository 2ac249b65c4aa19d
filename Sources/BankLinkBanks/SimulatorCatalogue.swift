import BankLinkCore

/// The simulated banks, accounts and counterparties: realistic enough for demos and tests of a
/// Chinese enterprise with Hong Kong and euro operations.
enum SimulatorCatalogue {
  struct SimulatedAccount {
    var account: Account
    /// Opening ledger balance in minor units at the start of the history.
    var openingMinorUnits: Int64
    /// Typical entry size range in minor units.
    var amountRange: ClosedRange<Int64>
    /// Average entries per day.
    var entriesPerDay: Int
    var referencePrefix: String
  }

  static let accounts: [SimulatedAccount] = [
    SimulatedAccount(
      account: Account(
        id: "icbc-cny-001", number: "1001234509876543210", displayName: "Operating account Shanghai",
        bankBIC: "ICBKCNBJSHI", bankName: "Industrial and Commercial Bank of China, Shanghai Branch",
        currency: CurrencyCode("CNY")!),
      openingMinorUnits: 8_000_000_000, amountRange: 50_000...80_000_000, entriesPerDay: 40, referencePrefix: "ICBC"),
    SimulatedAccount(
      account: Account(
        id: "icbc-cny-002", number: "1001234509876549988", displayName: "Payroll account Shanghai",
        bankBIC: "ICBKCNBJSHI", bankName: "Industrial and Commercial Bank of China, Shanghai Branch",
        currency: CurrencyCode("CNY")!),
      openingMinorUnits: 1_200_000_000, amountRange: 300_000...4_000_000, entriesPerDay: 30, referencePrefix: "ICBC"),
    SimulatedAccount(
      account: Account(
        id: "icbc-usd-001", number: "1001234509876540011", displayName: "USD settlement account",
        bankBIC: "ICBKCNBJSHI", bankName: "Industrial and Commercial Bank of China, Shanghai Branch",
        currency: CurrencyCode("USD")!),
      openingMinorUnits: 500_000_000, amountRange: 10_000...20_000_000, entriesPerDay: 15, referencePrefix: "ICBC"),
    SimulatedAccount(
      account: Account(
        id: "boc-hkd-001", number: "012-875-1-234567-8", displayName: "Hong Kong operating account",
        bankBIC: "BKCHHKHHXXX", bankName: "Bank of China (Hong Kong) Limited",
        currency: CurrencyCode("HKD")!),
      openingMinorUnits: 2_000_000_000, amountRange: 20_000...30_000_000, entriesPerDay: 25, referencePrefix: "BOCHK"),
    SimulatedAccount(
      account: Account(
        id: "boc-usd-002", number: "012-875-9-876543-2", displayName: "Hong Kong USD trade account",
        bankBIC: "BKCHHKHHXXX", bankName: "Bank of China (Hong Kong) Limited",
        currency: CurrencyCode("USD")!),
      openingMinorUnits: 300_000_000, amountRange: 50_000...15_000_000, entriesPerDay: 12, referencePrefix: "BOCHK"),
    SimulatedAccount(
      account: Account(
        id: "db-eur-001", number: "0532013000", iban: "DE89370400440532013000", displayName: "Frankfurt EUR account",
        bankBIC: "DEUTDEFFXXX", bankName: "Deutsche Bank AG, Frankfurt",
        currency: CurrencyCode("EUR")!),
      openingMinorUnits: 400_000_000, amountRange: 10_000...10_000_000, entriesPerDay: 15, referencePrefix: "DB"),
  ]

  static let counterparties: [String: [Counterparty]] = [
    "CNY": [
      Counterparty(name: "Shanghai Huaxin Trading Co., Ltd.", accountNumber: "3100 2011 0904 0012 345", bankBIC: "CMBCCNBS", bankName: "China Merchants Bank"),
      Counterparty(name: "Jiangsu Hengrui Logistics Co., Ltd.", accountNumber: "3201 5501 0400 0087 761", bankBIC: "PCBCCNBJ", bankName: "China Construction Bank"),
      Counterparty(name: "Zhejiang Lianda Electronics Co., Ltd.", accountNumber: "1202 0212 0990 0033 218", bankBIC: "ICBKCNBJ", bankName: "ICBC Hangzhou"),
      Counterparty(name: "Shenzhen Qianhai Supply Chain Co., Ltd.", accountNumber: "7559 2641 0310 902", bankBIC: "ABOCCNBJ", bankName: "Agricultural Bank of China"),
      Counterparty(name: "Beijing Zhongguancun Software Park Co., Ltd.", accountNumber: "1109 0788 1010 201", bankBIC: "BKCHCNBJ", bankName: "Bank of China Beijing"),
      Counterparty(name: "State Taxation Administration Shanghai", accountNumber: "0310 0000 0000 0001", bankBIC: "PBOCCNBJ", bankName: "People's Bank of China"),
      Counterparty(name: "Shanghai Social Insurance Fund", accountNumber: "0310 0000 0000 0458", bankBIC: "ICBKCNBJ", bankName: "ICBC Shanghai"),
    ],
    "USD": [
      Counterparty(name: "Pacific Components Inc.", accountNumber: "4410 2231 7788", bankBIC: "CHASUS33", bankName: "JPMorgan Chase Bank, N.A."),
      Counterparty(name: "Golden Gate Semiconductor LLC", accountNumber: "1234 5678 9012", bankBIC: "BOFAUS3N", bankName: "Bank of America"),
      Counterparty(name: "Oceanic Freight Lines Pte. Ltd.", accountNumber: "072-123456-001", bankBIC: "DBSSSGSG", bankName: "DBS Bank Singapore"),
      Counterparty(name: "Maple Leaf Agricultural Exports Ltd.", accountNumber: "00012-003-4567891", bankBIC: "ROYCCAT2", bankName: "Royal Bank of Canada"),
    ],
    "HKD": [
      Counterparty(name: "Kowloon Harbour Properties Ltd.", accountNumber: "004-123-456789-001", bankBIC: "HSBCHKHH", bankName: "The Hongkong and Shanghai Banking Corporation"),
      Counterparty(name: "Victoria Trading (HK) Co. Ltd.", accountNumber: "024-456-789012-3", bankBIC: "HASEHKHH", bankName: "Hang Seng Bank"),
      Counterparty(name: "Tsuen Wan Logistics Centre Ltd.", accountNumber: "003-789-012345-6", bankBIC: "SCBLHKHH", bankName: "Standard Chartered Bank (Hong Kong)"),
      Counterparty(name: "Inland Revenue Department HKSAR", accountNumber: "012-000-000001-9", bankBIC: "BKCHHKHH", bankName: "Bank of China (Hong Kong)"),
    ],
    "EUR": [
      Counterparty(name: "Rheinmetall Präzisionsteile GmbH", accountNumber: "DE44500105175407324931", bankBIC: "INGDDEFF", bankName: "ING-DiBa AG"),
      Counterparty(name: "Lyon Textiles SARL", accountNumber: "FR1420041010050500013M02606", bankBIC: "PSSTFRPP", bankName: "La Banque Postale"),
      Counterparty(name: "Rotterdam Port Services B.V.", accountNumber: "NL91ABNA0417164300", bankBIC: "ABNANL2A", bankName: "ABN AMRO Bank"),
      Counterparty(name: "Milano Design Forniture S.p.A.", accountNumber: "IT60X0542811101000000123456", bankBIC: "BPMOIT22", bankName: "Banco BPM"),
    ],
  ]

  static let creditNarratives = [
    "Payment for invoice", "Settlement of purchase order", "Customer remittance", "Refund", "Interest credit",
    "Collection of receivables",
  ]
  static let debitNarratives = [
    "Supplier payment invoice", "Freight charges", "Tax payment", "Social insurance contribution", "Rent",
    "Bank service fee", "Payroll transfer", "Customs duty",
  ]
}
