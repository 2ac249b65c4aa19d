/// Kind of payment; selects the bank product and the approval policy that applies.
public enum PaymentType: String, Sendable, Hashable, CaseIterable {
  case internalTransfer = "internal_transfer"
  case domestic
  case crossBorder = "cross_border"
  case payrollItem = "payroll_item"
}

/// The receiving party of a payment.
public struct Creditor: Sendable, Hashable {
  public var name: String
  public var accountNumber: String
  public var iban: String
  public var bic: String
  /// ISO 3166-1 alpha-2 country of the creditor's bank.
  public var country: String

  public init(name: String, accountNumber: String = "", iban: String = "", bic: String, country: String) {
    self.name = name
    self.accountNumber = accountNumber
    self.iban = iban
    self.bic = bic
    self.country = country
  }
}

/// The money-moving fields of a payment as the caller states them.
public struct PaymentInstruction: Sendable, Hashable {
  public var debtorAccountID: String
  public var creditor: Creditor
  public var amount: Money
  public var purpose: String
  /// ISO 8601 date; empty means the next execution day.
  public var requestedExecutionDate: String
  public var type: PaymentType

  public init(
    debtorAccountID: String, creditor: Creditor, amount: Money, purpose: String, requestedExecutionDate: String,
    type: PaymentType
  ) {
    self.debtorAccountID = debtorAccountID
    self.creditor = creditor
    self.amount = amount
    self.purpose = purpose
    self.requestedExecutionDate = requestedExecutionDate
    self.type = type
  }
}

/// One reason a request is refused, naming the field as the API spells it.
public struct FieldViolation: Sendable, Hashable, CustomStringConvertible {
  public var field: String
  public var description: String

  public init(field: String, description: String) {
    self.field = field
    self.description = description
  }
}

/// Checks of payment fields against what a pain.001 credit transfer can carry.
public enum PaymentValidation {
  /// Validates the fields that need no stored state. `prefix` is prepended to field names (e.g.
  /// `items[3].` for a batch item); `today` is the ISO date the execution date may not precede.
  public static func violations(
    of instruction: PaymentInstruction,
    today: String,
    prefix: String = "instruction."
  ) -> [FieldViolation] {
    var violations: [FieldViolation] = []
    func fail(_ field: String, _ text: String) { violations.append(FieldViolation(field: prefix + field, description: text)) }

    if instruction.debtorAccountID.isEmpty {
      fail("debtor_account_id", "is required")
    } else if !isAccountID(instruction.debtorAccountID) {
      fail("debtor_account_id", accountIDRule)
    }
    let creditor = instruction.creditor
    if creditor.name.isEmpty {
      fail("creditor.name", "is required")
    } else if let problem = textProblem(creditor.name, maxLength: Limits.maxPartyNameLength) {
      fail("creditor.name", problem)
    }
    switch (creditor.accountNumber.isEmpty, creditor.iban.isEmpty) {
    case (true, true): fail("creditor.account_number", "an account number or an IBAN is required")
    case (false, false): fail("creditor.iban", "give either an IBAN or an account number, not both")
    case (false, true):
      if creditor.accountNumber.utf8.count > Limits.maxAccountNumberLength
        || !creditor.accountNumber.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == " " || $0 == "-") })
      {
        fail("creditor.account_number", "must be at most \(Limits.maxAccountNumberLength) letters, digits, spaces or dashes")
      }
    case (true, false):
      if !isValidIBAN(creditor.iban) { fail("creditor.iban", "is not a valid IBAN (ISO 13616 check digits)") }
    }
    if !isValidBIC(creditor.bic) { fail("creditor.bic", "is not a BIC (ISO 9362: 8 or 11 characters, e.g. ICBKCNBJSHI)") }
    if !isCountryCode(creditor.country) { fail("creditor.country", "is not an ISO 3166-1 alpha-2 country code") }

    if instruction.amount.minorUnits <= 0 {
      fail("amount.minor_units", "must be positive")
    } else if instruction.amount.minorUnits > Limits.maxPaymentMinorUnits {
      fail("amount.minor_units", "exceeds the limit of \(Limits.maxPaymentMinorUnits) minor units per payment")
    }
    if let problem = textProblem(instruction.purpose, maxLength: Limits.maxRemittanceLength) {
      fail("purpose", problem)
    }
    if !instruction.requestedExecutionDate.isEmpty {
      if !isISODate(instruction.requestedExecutionDate) {
        fail("requested_execution_date", "must be an ISO 8601 date YYYY-MM-DD")
      } else if instruction.requestedExecutionDate < today {
        fail("requested_execution_date", "is in the past (today is \(today))")
      }
    }
    return violations
  }

  /// Nil when `text` fits a pain.001 text field: at most `maxLength` characters, no control
  /// characters and nothing XML 1.0 cannot carry.
  ///
  /// Characters are Unicode scalars, as an XML schema's `maxLength` counts them, never
  /// grapheme clusters (`"X"` + 500,000 combining accents is one cluster and 1 MB). The UTF-8
  /// byte length is checked first, before anything walks the text.
  public static func textProblem(_ text: String, maxLength: Int) -> String? {
    if text.utf8.count > maxLength * Limits.maxUTF8BytesPerCharacter || text.unicodeScalars.count > maxLength {
      return "must be at most \(maxLength) characters"
    }
    for scalar in text.unicodeScalars {
      let value = scalar.value
      if value < 0x20 || (0x7F...0x9F).contains(value) || (0xFFFE...0xFFFF).contains(value) {
        return "contains a control character that a pain.001 message cannot carry"
      }
    }
    return nil
  }

  /// ISO 13616: 2 letters, 2 check digits, up to 30 alphanumerics; mod 97 of the rearranged
  /// number is 1.
  public static func isValidIBAN(_ iban: String) -> Bool {
    // Bytes first: 34 characters in groups of four with a space between the groups.
    guard iban.utf8.count <= Limits.maxIBANPrintedLength else { return false }
    let compact = iban.filter { $0 != " " }.uppercased()
    guard (15...34).contains(compact.count), compact.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
      return false
    }
    let chars = Array(compact)
    guard chars[0].isLetter, chars[1].isLetter, chars[2].isNumber, chars[3].isNumber else { return false }
    var remainder = 0
    for character in chars[4...] + chars[..<4] {
      let value: Int
      if let digit = character.wholeNumberValue {
        value = digit
        remainder = (remainder * 10 + value) % 97
      } else if let ascii = character.asciiValue {
        value = Int(ascii) - 55  // A = 10
        remainder = (remainder * 100 + value) % 97
      } else {
        return false
      }
    }
    return remainder == 1
  }

  /// ISO 9362: 4 letters (institution), 2 letters (country), 2 alphanumerics (location),
  /// optionally 3 alphanumerics (branch).
  public static func isValidBIC(_ bic: String) -> Bool {
    guard bic.utf8.count <= 11 else { return false }
    let chars = Array(bic)
    guard chars.count == 8 || chars.count == 11, chars.allSatisfy({ $0.isASCII && ($0.isUppercase || $0.isNumber) }) else {
      return false
    }
    return chars[0..<6].allSatisfy(\.isLetter) && isCountryCode(String(chars[4..<6]))
  }

  /// Account ids as the daemon issues and stores them (LMDB keys): bounded, plain ASCII.
  public static func isAccountID(_ id: String) -> Bool {
    !id.isEmpty && id.utf8.count <= Limits.maxAccountIDLength
      && id.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E }
  }

  public static let accountIDRule = "must be at most \(Limits.maxAccountIDLength) characters of A-Z a-z 0-9 . _ -"

  public static func isCountryCode(_ code: String) -> Bool {
    code.utf8.count == 2 && countryCodes.contains(code)
  }

  public static func isISODate(_ text: String) -> Bool {
    guard text.utf8.count == 10 else { return false }
    let parts = text.split(separator: "-", omittingEmptySubsequences: false)
    guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
      let year = Int(parts[0]), let month = Int(parts[1]), let day = Int(parts[2]),
      (1...12).contains(month), day >= 1
    else { return false }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
    let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return day <= days
  }

  /// ISO 3166-1 alpha-2 codes in current use.
  static let countryCodes: Set<String> = Set(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO \
    FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE \
    JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO \
    MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW \
    PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM \
    TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split(separator: " ").map(String.init)
  )
}
