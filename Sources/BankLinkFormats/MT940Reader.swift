import Foundation

/// Reads SWIFT MT940 (customer statement) and MT942 (interim transaction report) text, as banks
/// deliver it: with or without the FIN envelope (`{1:…}{2:…}{4:` … `-}`), CRLF or LF line ends,
/// trailing whitespace, several messages in one file (each starts at `:20:`).
///
/// Fields: `:20:` reference, `:25:`/`:25P:` account, `:28C:` statement/page number, `:60F:`/`:60M:`
/// opening balance, `:61:` statement line (value date, entry date, C/D/RC/RD, amount, type,
/// customer and bank references, supplementary details), `:86:` information to the account owner,
/// `:62F:`/`:62M:` closing balance, `:64:` closing available, `:65:` forward available; MT942 also
/// `:34F:`, `:13D:`, `:90D:`/`:90C:` (read and skipped). Other fields are skipped.
///
/// `:86:` is free text, but several conventions structure it; read generically:
/// - ISO-style slash codes (Dutch and SWIFT usage): `/EREF/…/REMI/…/NAME/…/IBAN/…/BIC/…/RTRN/…`;
/// - German GVC sub-fields: `166?00SEPA-UEBERWEISUNG?20EREF+…?21…?30BIC?31IBAN?32Name`, with
///   `EREF+`, `SVWZ+` and the like inside `?20`–`?29`;
/// - otherwise the text is the remittance (Chinese banks mostly send the purpose this way).
public enum MT940Reader {
  /// Reads the messages and reports their statements as events, in file order.
  public static func read(_ source: FormatSource, _ onEvent: @escaping (StatementEvent) throws -> Void) throws {
    var parser = MT940Parser(onEvent: onEvent)
    var line = 1
    var pending: [UInt8] = []
    /// Hands over every complete line of `bytes` (after what is pending), keeping the rest.
    func lines(_ bytes: UnsafeBufferPointer<UInt8>, last: Bool) throws {
      var start = 0
      while true {
        var end = start
        while end < bytes.count, bytes[end] != 0x0A { end += 1 }
        if end == bytes.count && !last {
          pending.append(contentsOf: bytes[start..<end])
          guard pending.count <= FormatLimits.maxTextBytes else {
            throw FormatError(format: "MT940", line: line, location: "", reason: "a line longer than \(FormatLimits.maxTextBytes) bytes")
          }
          return
        }
        var text = pending
        pending.removeAll(keepingCapacity: true)
        text.append(contentsOf: bytes[start..<end])
        // CR, trailing spaces and tabs.
        while let byte = text.last, byte == 0x0D || byte == 0x20 || byte == 0x09 { text.removeLast() }
        guard text.count <= FormatLimits.maxTextBytes else {
          throw FormatError(format: "MT940", line: line, location: "", reason: "a line longer than \(FormatLimits.maxTextBytes) bytes")
        }
        if end < bytes.count || !text.isEmpty { try parser.line(String(decoding: text, as: UTF8.self), number: line) }
        line += 1
        start = end + 1
        if start >= bytes.count { return }
      }
    }
    switch source {
    case .data(let data):
      guard data.count <= FormatLimits.maxFileBytes else { throw Self.tooLarge() }
      try data.withUnsafeBytes { try lines($0.bindMemory(to: UInt8.self), last: true) }
    case .file(let path):
      guard let handle = FileHandle(forReadingAtPath: path) else {
        throw FormatError(format: "MT940", line: 0, location: "", reason: "cannot read \(path)")
      }
      defer { try? handle.close() }
      // Read in chunks: memory stays flat whatever the file's size.
      var size = 0
      while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
        size += chunk.count
        guard size <= FormatLimits.maxFileBytes else { throw Self.tooLarge() }
        try chunk.withUnsafeBytes { try lines($0.bindMemory(to: UInt8.self), last: false) }
      }
      try [UInt8]().withUnsafeBufferPointer { try lines($0, last: true) }
    }
    try parser.finish(line: 0)
    guard parser.statements > 0 else {
      throw FormatError(format: "MT940", line: 0, location: "", reason: "no MT940 or MT942 message (no :20: field) in the file")
    }
  }

  private static func tooLarge() -> FormatError {
    FormatError(format: "MT940", line: 0, location: "", reason: "the file is larger than \(FormatLimits.maxFileBytes) bytes")
  }

  /// Every statement of a file.
  public static func statements(_ source: FormatSource) throws -> [BankStatement] {
    var collector = StatementCollector()
    try Self.read(source) { collector.take($0) }
    return collector.statements
  }
}

private struct MT940Parser {
  let onEvent: (StatementEvent) throws -> Void
  var statements = 0
  /// The field being collected: tag and text (continuation lines joined with "\n").
  var field: (tag: String, text: String, line: Int)?
  var header: StatementHeader?
  var headerSent = false
  var trailer = StatementTrailer()
  var entry: StatementEntry?
  var entryHasInfo = false

  init(onEvent: @escaping (StatementEvent) throws -> Void) { self.onEvent = onEvent }

  func error(_ line: Int, _ tag: String, _ reason: String) -> FormatError {
    FormatError(format: self.header?.format.rawValue ?? "MT940", line: line, location: tag.isEmpty ? "" : ":\(tag):", reason: reason)
  }

  mutating func line(_ text: String, number: Int) throws {
    var text = Substring(text)
    // The FIN envelope: blocks 1-3 before `{4:`, and `-}` (with block 5) after it.
    // Most lines start with ':'; the envelope's with '{' or '-' (checked as bytes: Substring's
    // own prefix tests compare Characters).
    let first = text.utf8.first
    if first == UInt8(ascii: "{"), text.hasPrefix("{1:") || text.hasPrefix("{2:") || text.hasPrefix("{3:") {
      guard let block4 = text.range(of: "{4:") else { return }
      text = text[block4.upperBound...]
      if text.isEmpty { return }
    }
    if first == UInt8(ascii: "-") || first == UInt8(ascii: "{"), text.hasPrefix("-}") || text == "-" || text.hasPrefix("{5:") {
      try self.flushField()
      return
    }
    if text.first == ":", let close = text.dropFirst().firstIndex(of: ":"),
      text.distance(from: text.startIndex, to: close) <= 5,
      text[text.index(after: text.startIndex)..<close].allSatisfy({ $0.isASCII && ($0.isNumber || $0.isUppercase) })
    {
      try self.flushField()
      let tag = String(text[text.index(after: text.startIndex)..<close])
      self.field = (tag, String(text[text.index(after: close)...]), number)
      return
    }
    if self.field != nil {
      self.field?.text += "\n" + text
      guard (self.field?.text.utf8.count ?? 0) <= FormatLimits.maxTextBytes else {
        throw self.error(number, self.field?.tag ?? "", "a field longer than \(FormatLimits.maxTextBytes) bytes")
      }
    } else if !text.isEmpty {
      throw self.error(number, "", "text outside any field: '\(FormatValues.clip(String(text), maxBytes: 40))'")
    }
  }

  mutating func finish(line: Int) throws {
    try self.flushField()
    try self.endStatement()
  }

  mutating func sendHeader() throws {
    guard !self.headerSent, let header = self.header else { return }
    self.headerSent = true
    try self.onEvent(.begin(header))
  }

  mutating func endEntry() throws {
    guard let entry = self.entry.take() else { return }
    try self.sendHeader()
    try self.onEvent(.entry(entry))
  }

  mutating func endStatement() throws {
    try self.endEntry()
    guard self.header != nil else { return }
    try self.sendHeader()
    try self.onEvent(.end(self.trailer))
    self.header = nil
  }

  mutating func flushField() throws {
    guard let (tag, text, line) = self.field else { return }
    self.field = nil
    switch tag {
    case "20":
      try self.endStatement()
      self.statements += 1
      guard self.statements <= FormatLimits.maxStatementsPerFile else {
        throw self.error(line, tag, "more than \(FormatLimits.maxStatementsPerFile) statements in one file")
      }
      var header = StatementHeader(format: .mt940)
      header.messageID = text
      header.statementID = text
      self.header = header
      self.headerSent = false
      self.trailer = StatementTrailer()
    case "25", "25P":
      try self.needHeader(line, tag)
      // "BIC/ACCOUNT" or the account alone (an IBAN or a domestic number); :25P: has the BIC on
      // the next line.
      let lines = text.split(separator: "\n")
      var account = String(lines.first ?? "")
      if tag == "25", let slash = account.firstIndex(of: "/"), account.distance(from: account.startIndex, to: slash) >= 8 {
        self.header?.account.servicerBIC = String(account[..<slash])
        account = String(account[account.index(after: slash)...])
      }
      if tag == "25P", lines.count > 1 { self.header?.account.servicerBIC = String(lines[1]) }
      if IBANShape.looksLikeIBAN(account) { self.header?.account.iban = account } else { self.header?.account.other = account }
    case "28C", "28":
      try self.needHeader(line, tag)
      let parts = text.split(separator: "/")
      guard let first = parts.first, let number = Int(first), (0...FormatLimits.maxSequenceNumber).contains(number) else {
        throw self.error(line, tag, "'\(text)' is not a statement number")
      }
      self.header?.sequenceNumber = number
      if parts.count > 1 {
        guard let page = Int(parts[1]), (0...FormatLimits.maxSequenceNumber).contains(page) else {
          throw self.error(line, tag, "'\(text)' is not a statement number/page")
        }
        self.header?.page = page
      }
    case "60F", "60M":
      try self.needHeader(line, tag)
      guard !self.headerSent else { throw self.error(line, tag, "the opening balance comes after statement lines") }
      let opening = try self.balance(tag == "60F" ? "OPBD" : "ITBD", text, line, tag)
      self.header?.balances.append(opening)
      if self.header?.account.currency.isEmpty == true { self.header?.account.currency = opening.currency }
    case "61":
      try self.needHeader(line, tag)
      try self.endEntry()
      self.entry = try self.statementLine(text, line)
      self.entryHasInfo = false
    case "86":
      try self.needHeader(line, tag)
      if self.entry != nil, !self.entryHasInfo {
        self.entryHasInfo = true
        // Set in place: copying the entry out and back would retain and release every field.
        let direction = self.entry!.direction
        let details = Self.information(text, direction: direction, entry: &self.entry!)
        self.entry!.details = [details]
      } else {
        // After the last :61:, or a second :86:: information about the statement.
        try self.endEntry()
        self.trailer.additionalInfo = text.split(separator: "\n").joined(separator: " ")
      }
    case "62F", "62M", "64", "65":
      try self.needHeader(line, tag)
      try self.endEntry()
      try self.sendHeader()
      let type = ["62F": "CLBD", "62M": "ITBD", "64": "CLAV", "65": "FWAV"][tag] ?? tag
      let closing = try self.balance(type, text, line, tag)
      self.trailer.balances.append(closing)
    case "34F":
      try self.needHeader(line, tag)
      self.header?.format = .mt942
      // The floor limit's currency is the account's: the statement lines' amounts need it.
      let currency = String(text.prefix(3))
      guard FormatValues.isCurrency(currency) else { throw self.error(line, tag, "'\(currency)' is not an ISO 4217 currency") }
      if self.header?.account.currency.isEmpty == true { self.header?.account.currency = currency }
    case "13D", "13", "90D", "90C":
      try self.needHeader(line, tag)
      self.header?.format = .mt942
    default:
      break  // :21:, :NS: and others: skipped.
    }
  }

  mutating func needHeader(_ line: Int, _ tag: String) throws {
    guard self.header != nil else { throw self.error(line, tag, "field before the :20: that starts a statement") }
  }

  /// `YYMMDD` as an ISO date (years 80–99 are 1980–1999).
  func date(_ text: Substring, _ line: Int, _ tag: String) throws -> (iso: String, year: Int) {
    guard text.count == 6, text.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(text) else {
      throw self.error(line, tag, "'\(text)' is not a date (YYMMDD)")
    }
    let yy = value / 10_000
    let year = yy >= 80 ? 1900 + yy : 2000 + yy
    let month = (value / 100) % 100
    let day = value % 100
    guard FormatValues.isValidDate(year: year, month: month, day: day) else { throw self.error(line, tag, "'\(text)' is not a date (YYMMDD)") }
    return (FormatValues.isoDate(year: year, month: month, day: day), year)
  }

  /// `C230101EUR1234,56` (D or C, date, currency, amount).
  func balance(_ type: String, _ text: String, _ line: Int, _ tag: String) throws -> StatementBalance {
    let field = Substring(text.split(separator: "\n").first ?? "")
    guard field.count >= 11, let mark = field.first, mark == "C" || mark == "D" else {
      throw self.error(line, tag, "'\(FormatValues.clip(text, maxBytes: 40))' is not a balance (C or D, YYMMDD, currency, amount)")
    }
    let date = try self.date(field.dropFirst().prefix(6), line, tag)
    let currency = String(field.dropFirst(7).prefix(3))
    guard FormatValues.isCurrency(currency) else { throw self.error(line, tag, "'\(currency)' is not an ISO 4217 currency") }
    guard let minor = FormatValues.minorUnits(field.dropFirst(10), currency: currency, separator: UInt8(ascii: ",")) else {
      throw self.error(line, tag, "'\(field.dropFirst(10))' is not an amount in \(currency) (at most \(FormatValues.exponent(of: currency)) decimals, comma as separator)")
    }
    return StatementBalance(type: type, amountMinor: mark == "D" ? -minor : minor, currency: currency, date: date.iso)
  }

  /// `:61:` — `YYMMDD[MMDD](C|D|RC|RD)[funds code]amount(N|S|F)XXXcustomer ref[//bank ref]`,
  /// then optionally a line of supplementary details.
  func statementLine(_ text: String, _ line: Int) throws -> StatementEntry {
    let lines = FormatValues.split(text, 0x0A, omittingEmpty: false)
    var rest = lines.first ?? ""
    var entry = StatementEntry()
    let value = try self.date(rest.prefix(6), line, "61")
    entry.valueDate = value.iso
    rest = rest.dropFirst(6)
    // Optional entry (booking) date, MMDD: in the value date's year, or the next or previous
    // one when it crosses the year's end.
    if rest.prefix(4).count == 4, rest.prefix(4).allSatisfy({ $0.isASCII && $0.isNumber }), let mmdd = Int(rest.prefix(4)) {
      let month = mmdd / 100
      let day = mmdd % 100
      let valueMonth = Int(entry.valueDate.dropFirst(5).prefix(2)) ?? month
      var year = value.year
      if month == 12 && valueMonth == 1 { year -= 1 } else if month == 1 && valueMonth == 12 { year += 1 }
      guard FormatValues.isValidDate(year: year, month: month, day: day) else {
        throw self.error(line, "61", "'\(rest.prefix(4))' is not an entry date (MMDD)")
      }
      entry.bookingDate = FormatValues.isoDate(year: year, month: month, day: day)
      rest = rest.dropFirst(4)
    } else {
      entry.bookingDate = entry.valueDate
    }
    if rest.hasPrefix("RC") || rest.hasPrefix("RD") {
      entry.reversal = true
      // A reversal of a credit is booked as a debit, and the other way round.
      entry.direction = rest.hasPrefix("RC") ? .debit : .credit
      rest = rest.dropFirst(2)
    } else if rest.hasPrefix("C") || rest.hasPrefix("D") {
      entry.direction = rest.hasPrefix("C") ? .credit : .debit
      rest = rest.dropFirst()
    } else {
      throw self.error(line, "61", "'\(FormatValues.clip(String(rest), maxBytes: 20))' should start with C, D, RC or RD")
    }
    // Optional funds code: a letter before the amount's digits.
    if let first = rest.first, first.isLetter { rest = rest.dropFirst() }
    let amountText = rest.prefix { ($0.isASCII && $0.isNumber) || $0 == "," }
    let currency = self.header?.account.currency.isEmpty == false ? self.header!.account.currency : "XXX"
    guard let minor = FormatValues.minorUnits(amountText, currency: currency, separator: UInt8(ascii: ",")) else {
      throw self.error(line, "61", "'\(amountText)' is not an amount in \(currency)")
    }
    entry.amountMinor = minor
    entry.currency = currency == "XXX" ? "" : currency
    rest = rest.dropFirst(amountText.count)
    // Transaction type: N, S or F and three characters.
    guard rest.count >= 4, let kind = rest.first, "NSF".contains(kind) else {
      throw self.error(line, "61", "a transaction type (N, S or F and three characters) should follow the amount")
    }
    entry.bankTransactionCode = String(rest.prefix(4))
    rest = rest.dropFirst(4)
    if let separator = FormatValues.firstRange(of: "//", in: rest) {
      entry.customerReference = String(rest[..<separator.lowerBound])
      entry.accountServicerReference = String(rest[separator.upperBound...])
    } else {
      entry.customerReference = String(rest)
    }
    if entry.customerReference == "NONREF" { entry.customerReference = "" }
    if lines.count > 1 { entry.additionalInfo = lines.dropFirst().joined(separator: " ") }
    return entry
  }

  /// The `:86:` text as transaction details, reading the structured conventions it may follow.
  static func information(_ text: String, direction: CreditDebit, entry: inout StatementEntry) -> TransactionDetails {
    var details = TransactionDetails()
    details.endToEndID = entry.customerReference
    // Continuation lines join without a separator (a line break inside a field is layout).
    let joined = text.utf8.contains(0x0A) ? FormatValues.split(text, 0x0A).joined() : text
    let substring = Substring(joined)
    if FormatValues.firstRange(of: "?2", in: substring) != nil || FormatValues.firstRange(of: "?00", in: substring) != nil {
      Self.germanSubfields(joined, into: &details)
    } else if joined.hasPrefix("/") {
      Self.slashCodes(joined, into: &details)
    } else {
      details.remittance = [text.utf8.contains(0x0A) ? FormatValues.split(text, 0x0A).joined(separator: " ") : text]
    }
    if !details.remittance.isEmpty, details.remittance.count > FormatLimits.maxRemittanceLines {
      details.remittance = Array(details.remittance.prefix(FormatLimits.maxRemittanceLines))
    }
    return details
  }

  /// The codes ``slashCodes(_:into:)`` knows (built once: it runs for every `:86:`).
  static let slashCodeNames: Set<String> = [
    "EREF", "REMI", "NAME", "IBAN", "BIC", "RTRN", "CSID", "MARF", "PREF", "IREF", "ORDP", "BENM", "TRCD", "ISDT", "CDTRREF",
    "CDTRREFTP", "CODE", "PURP", "ULTC", "ULTD", "SVWZ", "OCMT", "CHGS",
  ]

  /// `/CODE/value/CODE/value…` — codes of the SWIFT/Dutch convention.
  static func slashCodes(_ text: String, into details: inout TransactionDetails) {
    let known = Self.slashCodeNames
    var parts = FormatValues.split(text, UInt8(ascii: "/"), omittingEmpty: false).map(String.init)
    parts.removeFirst()
    var index = 0
    var pairs: [(String, String)] = []
    while index < parts.count {
      let code = parts[index]
      guard known.contains(code) else {
        if var last = pairs.popLast() {
          last.1 += "/" + code
          pairs.append(last)
        }
        index += 1
        continue
      }
      var value = index + 1 < parts.count ? parts[index + 1] : ""
      index += 2
      // A value may hold slashes: take parts until the next known code.
      while index < parts.count, !known.contains(parts[index]) {
        value += "/" + parts[index]
        index += 1
      }
      pairs.append((code, value))
    }
    for (code, value) in pairs {
      switch code {
      case "EREF": details.endToEndID = value
      case "IREF": details.instructionID = value
      case "PREF": details.paymentInformationID = value
      case "REMI", "SVWZ": details.remittance.append(value)
      case "NAME": details.counterpartyName = value
      case "IBAN": details.counterpartyAccount = value
      case "BIC": details.counterpartyBIC = value
      case "RTRN": details.returnReason = String(value.prefix(4))
      case "CDTRREF": details.creditorReference = value
      default: break
      }
    }
  }

  /// German `GVC?00text?20…?29?30BIC?31IBAN?32name?33name?60…` sub-fields.
  static func germanSubfields(_ text: String, into details: inout TransactionDetails) {
    var remittance = ""
    var name = ""
    for piece in FormatValues.split(text, UInt8(ascii: "?")).dropFirst() {
      guard piece.count >= 2, let number = Int(piece.prefix(2)) else { continue }
      let value = String(piece.dropFirst(2))
      switch number {
      case 20...29, 60...63: remittance += value
      case 30: details.counterpartyBIC = value
      case 31: details.counterpartyAccount = value
      case 32, 33: name += value
      default: break
      }
    }
    details.counterpartyName = name
    // SEPA keywords inside the remittance: EREF+, KREF+, MREF+, CRED+, SVWZ+ … One pass
    // over the bytes (a keyword is looked for at each position), so a field full of keywords
    // costs what its length does.
    let keywords = ["EREF+", "KREF+", "MREF+", "CRED+", "SVWZ+", "ABWA+", "ABWE+", "DEBT+", "COAM+", "OAMT+", "IBAN+", "BIC+"].map {
      Array($0.utf8)
    }
    let bytes = Array(remittance.utf8)
    var found: [(String, String)] = []
    var current: (keyword: String, start: Int) = ("", 0)
    var index = 0
    while index < bytes.count {
      if bytes[index] >= UInt8(ascii: "A"), bytes[index] <= UInt8(ascii: "Z"),
        let keyword = keywords.first(where: { index + $0.count <= bytes.count && bytes[index..<index + $0.count].elementsEqual($0) })
      {
        if index > current.start || !current.keyword.isEmpty {
          found.append((current.keyword, String(decoding: bytes[current.start..<index], as: UTF8.self)))
        }
        current = (String(decoding: keyword, as: UTF8.self), index + keyword.count)
        index += keyword.count
        continue
      }
      index += 1
    }
    if bytes.count > current.start || !current.keyword.isEmpty {
      found.append((current.keyword, String(decoding: bytes[current.start...], as: UTF8.self)))
    }
    for (keyword, value) in found {
      switch keyword {
      case "EREF+": details.endToEndID = value
      case "SVWZ+", "": if !value.isEmpty { details.remittance.append(value) }
      case "CRED+": details.creditorReference = value
      default: break
      }
    }
  }
}
