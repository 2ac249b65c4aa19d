/// A credit transfer initiation to write as pain.001: one message per submission round, with
/// its own `MsgId`.
public struct CreditTransferMessage: Sendable, Hashable {
  public enum Version: String, Sendable, Hashable, CaseIterable {
    case v03 = "pain.001.001.03"
    case v09 = "pain.001.001.09"
  }

  /// Which characters names and remittance may hold.
  public enum CharacterSet: Sendable, Hashable {
    /// Any Unicode text (Chinese banks take UTF-8 names), control characters removed.
    case unicode
    /// The SWIFT/EPC Latin set: `a-z A-Z 0-9 / - ? : ( ) . , ' +` and space; anything else
    /// becomes `.` (what EPC's guidelines ask of banks that cannot take more).
    case latin
  }

  public struct Transfer: Sendable, Hashable {
    public var instructionID: String
    public var endToEndID: String
    public var amountMinor: Int64
    public var currency: String
    public var debtorAccount: String
    public var debtorName: String
    public var debtorAgentBIC: String
    /// ISO date the debtor's bank should execute on.
    public var executionDate: String
    public var creditorName: String
    public var creditorAccount: String
    public var creditorAgentBIC: String
    /// ISO 3166 alpha-2.
    public var creditorCountry: String
    /// Unstructured remittance (purpose), at most 140 characters kept.
    public var remittance: String
    /// Structured creditor reference (ISO 11649 `RF…`); written instead of the unstructured
    /// remittance when set.
    public var creditorReference: String

    public init(
      instructionID: String, endToEndID: String, amountMinor: Int64, currency: String, debtorAccount: String, debtorName: String = "",
      debtorAgentBIC: String = "", executionDate: String, creditorName: String, creditorAccount: String, creditorAgentBIC: String = "",
      creditorCountry: String = "", remittance: String = "", creditorReference: String = ""
    ) {
      self.instructionID = instructionID
      self.endToEndID = endToEndID
      self.amountMinor = amountMinor
      self.currency = currency
      self.debtorAccount = debtorAccount
      self.debtorName = debtorName
      self.debtorAgentBIC = debtorAgentBIC
      self.executionDate = executionDate
      self.creditorName = creditorName
      self.creditorAccount = creditorAccount
      self.creditorAgentBIC = creditorAgentBIC
      self.creditorCountry = creditorCountry
      self.remittance = remittance
      self.creditorReference = creditorReference
    }
  }

  public var version: Version
  public var messageID: String
  /// ISO date-time of creation (`2026-12-03T09:30:00Z`): given, so a re-sent message is the same
  /// bytes.
  public var createdAt: String
  public var initiatingPartyName: String
  public var characterSet: CharacterSet
  public var transfers: [Transfer]

  public init(
    version: Version, messageID: String, createdAt: String, initiatingPartyName: String, characterSet: CharacterSet = .unicode,
    transfers: [Transfer]
  ) {
    self.version = version
    self.messageID = messageID
    self.createdAt = createdAt
    self.initiatingPartyName = initiatingPartyName
    self.characterSet = characterSet
    self.transfers = transfers
  }
}

/// Writes pain.001.001.03 or .09: a group header with the count and control sum, one `PmtInf`
/// per debtor account and execution date (in the order they first appear), `InstrId` and
/// `EndToEndId` per transfer, the creditor agent's BIC, structured or unstructured remittance.
/// Identifiers are limited to 35 characters and names and remittance to 140 (ISO lengths);
/// text is escaped and stripped of control characters. The same message gives the same bytes.
public enum Pain001Writer {
  public static let maxIdentifierLength = 35
  public static let maxTextLength = 140
  /// Transfers in one message (banks commonly cap files well below this).
  public static let maxTransfers = 100_000

  public enum Problem: Error, Sendable, Hashable, CustomStringConvertible {
    case noTransfers
    case tooManyTransfers(Int)
    case invalidMessage(field: String, reason: String)
    case invalid(transfer: Int, field: String, reason: String)

    public var description: String {
      switch self {
      case .noTransfers: "a message needs at least one transfer"
      case .tooManyTransfers(let count): "\(count) transfers; at most \(Pain001Writer.maxTransfers) in one message"
      case .invalidMessage(let field, let reason): "\(field): \(reason)"
      case .invalid(let transfer, let field, let reason): "transfers[\(transfer)].\(field): \(reason)"
      }
    }
  }

  public static func write(_ message: CreditTransferMessage) throws(Problem) -> [UInt8] {
    guard !message.transfers.isEmpty else { throw .noTransfers }
    guard message.transfers.count <= Self.maxTransfers else { throw .tooManyTransfers(message.transfers.count) }
    // Checked before anything is written: nothing is cut that would change where money goes.
    guard Self.isIdentifier(message.messageID) else {
      throw .invalidMessage(field: "message_id", reason: "must be 1 to \(Self.maxIdentifierLength) printable ASCII characters")
    }
    guard !message.createdAt.isEmpty, message.createdAt.count <= Self.maxIdentifierLength, Self.isIdentifier(message.createdAt) else {
      throw .invalidMessage(field: "created_at", reason: "must be an ISO date-time")
    }
    for (index, transfer) in message.transfers.enumerated() {
      for (field, account) in [("debtor_account", transfer.debtorAccount), ("creditor_account", transfer.creditorAccount)] {
        let compact = account.filter { $0 != " " }
        guard !compact.isEmpty, compact.count <= Self.maxAccountLength, Self.isIdentifier(compact, maxLength: Self.maxAccountLength) else {
          throw .invalid(transfer: index, field: field, reason: "must be 1 to \(Self.maxAccountLength) printable ASCII characters (spaces ignored)")
        }
      }
      for (field, bic) in [("debtor_agent_bic", transfer.debtorAgentBIC), ("creditor_agent_bic", transfer.creditorAgentBIC)]
      where !bic.isEmpty && !Self.isBIC(bic) {
        throw .invalid(transfer: index, field: field, reason: "is not a BIC (8 or 11 letters and digits)")
      }
      if !transfer.creditorCountry.isEmpty,
        transfer.creditorCountry.utf8.count != 2 || !transfer.creditorCountry.utf8.allSatisfy({ $0 >= 0x41 && $0 <= 0x5A })
      {
        throw .invalid(transfer: index, field: "creditor_country", reason: "is not an ISO 3166 alpha-2 code")
      }
      if !transfer.creditorReference.isEmpty, !Self.isIdentifier(transfer.creditorReference) {
        throw .invalid(transfer: index, field: "creditor_reference", reason: "must be at most \(Self.maxIdentifierLength) printable ASCII characters")
      }
      for (field, value) in [("instruction_id", transfer.instructionID), ("end_to_end_id", transfer.endToEndID)] {
        guard Self.isIdentifier(value) else {
          throw .invalid(transfer: index, field: field, reason: "must be 1 to \(Self.maxIdentifierLength) printable ASCII characters")
        }
      }
      guard transfer.amountMinor > 0 else { throw .invalid(transfer: index, field: "amount", reason: "must be positive") }
      guard FormatValues.isCurrency(transfer.currency) else { throw .invalid(transfer: index, field: "currency", reason: "is not ISO 4217") }
      guard FormatValues.isoDate(transfer.executionDate) == transfer.executionDate else {
        throw .invalid(transfer: index, field: "execution_date", reason: "is not a date (YYYY-MM-DD)")
      }
    }
    var xml = XMLText(characterSet: message.characterSet)
    let v09 = message.version == .v09
    let bicElement = v09 ? "BICFI" : "BIC"
    xml.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
    xml.raw("<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:\(message.version.rawValue)\">")
    xml.open("CstmrCdtTrfInitn")
    xml.open("GrpHdr")
    xml.element("MsgId", identifier: message.messageID)
    xml.element("CreDtTm", identifier: message.createdAt)
    xml.element("NbOfTxs", identifier: String(message.transfers.count))
    xml.element("CtrlSum", identifier: try Self.controlSum(message.transfers))
    xml.open("InitgPty")
    xml.element("Nm", text: message.initiatingPartyName.isEmpty ? "BankLink" : message.initiatingPartyName)
    xml.close("InitgPty")
    xml.close("GrpHdr")
    let groups = Self.paymentInformationGroups(message.transfers).map { $0.map { message.transfers[$0] } }
    for (number, group) in groups.enumerated() {
      let first = group[0]
      xml.open("PmtInf")
      // Unique within the message and at most 35 characters.
      xml.element("PmtInfId", identifier: Self.paymentInformationID(messageID: message.messageID, number: number + 1))
      xml.element("PmtMtd", identifier: "TRF")
      xml.element("NbOfTxs", identifier: String(group.count))
      xml.element("CtrlSum", identifier: try Self.controlSum(group))
      if v09 {
        xml.open("ReqdExctnDt")
        xml.element("Dt", identifier: first.executionDate)
        xml.close("ReqdExctnDt")
      } else {
        xml.element("ReqdExctnDt", identifier: first.executionDate)
      }
      xml.open("Dbtr")
      xml.element("Nm", text: first.debtorName.isEmpty ? message.initiatingPartyName : first.debtorName)
      xml.close("Dbtr")
      xml.account("DbtrAcct", first.debtorAccount)
      xml.open("DbtrAgt")
      xml.open("FinInstnId")
      if first.debtorAgentBIC.isEmpty {
        xml.open("Othr")
        xml.element("Id", identifier: "NOTPROVIDED")
        xml.close("Othr")
      } else {
        xml.element(bicElement, identifier: first.debtorAgentBIC)
      }
      xml.close("FinInstnId")
      xml.close("DbtrAgt")
      for transfer in group {
        xml.open("CdtTrfTxInf")
        xml.open("PmtId")
        xml.element("InstrId", identifier: transfer.instructionID)
        xml.element("EndToEndId", identifier: transfer.endToEndID)
        xml.close("PmtId")
        xml.open("Amt")
        let amount = Self.decimal(transfer.amountMinor, currency: transfer.currency)
        xml.raw("<InstdAmt Ccy=\"\(transfer.currency)\">\(amount)</InstdAmt>")
        xml.close("Amt")
        if !transfer.creditorAgentBIC.isEmpty {
          xml.open("CdtrAgt")
          xml.open("FinInstnId")
          xml.element(bicElement, identifier: transfer.creditorAgentBIC)
          xml.close("FinInstnId")
          xml.close("CdtrAgt")
        }
        xml.open("Cdtr")
        xml.element("Nm", text: transfer.creditorName)
        if !transfer.creditorCountry.isEmpty {
          xml.open("PstlAdr")
          xml.element("Ctry", identifier: transfer.creditorCountry)
          xml.close("PstlAdr")
        }
        xml.close("Cdtr")
        xml.account("CdtrAcct", transfer.creditorAccount)
        if !transfer.creditorReference.isEmpty {
          xml.open("RmtInf")
          xml.open("Strd")
          xml.open("CdtrRefInf")
          xml.open("Tp")
          xml.open("CdOrPrtry")
          xml.element("Cd", identifier: "SCOR")
          xml.close("CdOrPrtry")
          xml.close("Tp")
          xml.element("Ref", identifier: transfer.creditorReference)
          xml.close("CdtrRefInf")
          xml.close("Strd")
          xml.close("RmtInf")
        } else if !transfer.remittance.isEmpty {
          xml.open("RmtInf")
          xml.element("Ustrd", text: transfer.remittance)
          xml.close("RmtInf")
        }
        xml.close("CdtTrfTxInf")
      }
      xml.close("PmtInf")
    }
    xml.close("CstmrCdtTrfInitn")
    xml.raw("</Document>\n")
    return xml.bytes
  }

  /// Longest account identification (`Othr/Id` and IBAN: 34).
  public static let maxAccountLength = 34

  /// 1 to `maxLength` printable ASCII characters, no space, no markup characters.
  static func isIdentifier(_ value: String, maxLength: Int = Pain001Writer.maxIdentifierLength) -> Bool {
    !value.isEmpty && value.utf8.count <= maxLength
      && value.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "<") && $0 != UInt8(ascii: "&") }
  }

  static func isBIC(_ value: String) -> Bool {
    (value.utf8.count == 8 || value.utf8.count == 11)
      && value.utf8.allSatisfy { ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x30 && $0 <= 0x39) }
  }

  /// The `PmtInf` blocks a message's transfers go in, as indices into `transfers`: one per
  /// debtor account and execution date, in order of first appearance. The `n`-th (from 1) is
  /// identified by ``paymentInformationID(messageID:number:)``.
  public static func paymentInformationGroups(_ transfers: [CreditTransferMessage.Transfer]) -> [[Int]] {
    var groups: [[Int]] = []
    var groupIndex: [String: Int] = [:]
    for (index, transfer) in transfers.enumerated() {
      let key = transfer.debtorAccount + "\u{0}" + transfer.executionDate
      if let group = groupIndex[key] {
        groups[group].append(index)
      } else {
        groupIndex[key] = groups.count
        groups.append([index])
      }
    }
    return groups
  }

  /// `<MsgId>-<n>`, cut so it stays within 35 characters and unique.
  public static func paymentInformationID(messageID: String, number: Int) -> String {
    let suffix = "-\(number)"
    return String(messageID.prefix(Self.maxIdentifierLength - suffix.count)) + suffix
  }

  static func decimal(_ minor: Int64, currency: String) -> String {
    let exponent = FormatValues.exponent(of: currency)
    guard exponent > 0 else { return String(minor) }
    var divisor: Int64 = 1
    for _ in 0..<exponent { divisor *= 10 }
    var fraction = String(minor % divisor)
    while fraction.count < exponent { fraction = "0" + fraction }
    return "\(minor / divisor).\(fraction)"
  }

  /// The control sum: the amounts added as decimals. Transfers in currencies with other
  /// exponents are summed at the largest exponent among them, exactly.
  static func controlSum(_ transfers: [CreditTransferMessage.Transfer]) throws(Problem) -> String {
    let exponent = transfers.map { FormatValues.exponent(of: $0.currency) }.max() ?? 2
    var sum: Int64 = 0
    for (index, transfer) in transfers.enumerated() {
      var scaled = transfer.amountMinor
      var overflow = false
      for _ in 0..<(exponent - FormatValues.exponent(of: transfer.currency)) {
        (scaled, overflow) = scaled.multipliedReportingOverflow(by: 10)
        if overflow { break }
      }
      if !overflow { (sum, overflow) = sum.addingReportingOverflow(scaled) }
      guard !overflow else { throw .invalid(transfer: index, field: "amount", reason: "the message's control sum overflows") }
    }
    let currency = exponent == 0 ? "JPY" : exponent == 3 ? "KWD" : "EUR"
    return Self.decimal(sum, currency: currency)
  }
}

/// The XML being written: elements on one line each level, text escaped.
struct XMLText {
  let characterSet: CreditTransferMessage.CharacterSet
  var bytes: [UInt8] = []

  init(characterSet: CreditTransferMessage.CharacterSet) {
    self.characterSet = characterSet
    self.bytes.reserveCapacity(4096)
  }

  mutating func raw(_ text: String) { self.bytes.append(contentsOf: text.utf8) }
  mutating func open(_ name: String) { self.raw("<\(name)>") }
  mutating func close(_ name: String) { self.raw("</\(name)>") }

  /// An identifier or code (validated ASCII, escaped anyway).
  mutating func element(_ name: String, identifier: String) {
    self.raw("<\(name)>")
    self.escaped(identifier)
    self.raw("</\(name)>")
  }

  /// Free text: cleaned for the character set, at most 140 characters.
  mutating func element(_ name: String, text: String) {
    self.raw("<\(name)>")
    self.escaped(self.clean(text))
    self.raw("</\(name)>")
  }

  mutating func account(_ name: String, _ account: String) {
    self.open(name)
    self.open("Id")
    let compact = account.filter { $0 != " " }
    if IBANShape.looksLikeIBAN(compact) {
      self.element("IBAN", identifier: compact)
    } else {
      self.open("Othr")
      self.element("Id", identifier: compact)
      self.close("Othr")
    }
    self.close("Id")
    self.close(name)
  }

  func clean(_ text: String) -> String {
    var out = ""
    var count = 0
    var lastWasSpace = false
    for character in text {
      guard count < Pain001Writer.maxTextLength else { break }
      var piece = character
      if character.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0.properties.generalCategory == .format }) {
        piece = " "
      } else if self.characterSet == .latin {
        let allowed = character.isASCII && (character.isLetter || character.isNumber || "/-?:().,'+ ".contains(character))
        if !allowed { piece = "." }
      }
      if piece == " " {
        if lastWasSpace || out.isEmpty { continue }
        lastWasSpace = true
      } else {
        lastWasSpace = false
      }
      out.append(piece)
      count += 1
    }
    while out.last == " " { out.removeLast() }
    return out
  }

  mutating func escaped(_ text: String) {
    for byte in text.utf8 {
      switch byte {
      case UInt8(ascii: "&"): self.raw("&amp;")
      case UInt8(ascii: "<"): self.raw("&lt;")
      case UInt8(ascii: ">"): self.raw("&gt;")
      case UInt8(ascii: "\""): self.raw("&quot;")
      case UInt8(ascii: "'"): self.raw("&apos;")
      default: self.bytes.append(byte)
      }
    }
  }
}

/// The IBAN shape check shared by the writer and the MT940 reader.
enum IBANShape {
  static func looksLikeIBAN(_ text: String) -> Bool {
    let bytes = Array(text.utf8)
    guard (15...34).contains(bytes.count) else { return false }
    return bytes[0...1].allSatisfy { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }
      && bytes[2...3].allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
      && bytes.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z")) }
  }
}
