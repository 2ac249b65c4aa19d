import Foundation

/// What a bank file is, from its content (never from its name).
public enum BankFileKind: String, Sendable, Hashable, Codable {
  case camt052 = "camt.052"
  case camt053 = "camt.053"
  case camt054 = "camt.054"
  case pain001 = "pain.001"
  case pain002 = "pain.002"
  case mt940 = "MT940"

  /// Statement files (as opposed to payment files).
  public var isStatement: Bool { [.camt052, .camt053, .camt054, .mt940].contains(self) }
}

public enum StatementFiles {
  /// Bytes looked at to tell the kind.
  public static let detectionBytes = 4_096

  /// The kind of file `prefix` (its first bytes) starts, or nil: XML by the ISO 20022 namespace
  /// of its message, MT940/942 by a `:20:` field (with or without the FIN envelope).
  public static func detect(_ prefix: Data) -> BankFileKind? {
    let head = String(decoding: prefix.prefix(Self.detectionBytes), as: UTF8.self)
    // XML starts with `<` (after a byte order mark and white space); an MT940 file may hold `<`
    // in its text.
    let first = head.unicodeScalars.first { $0 != "\u{FEFF}" && !$0.properties.isWhitespace }
    if first == "<" {
      for (marker, kind) in [
        ("camt.053.001.", BankFileKind.camt053), ("camt.052.001.", .camt052), ("camt.054.001.", .camt054),
        ("pain.002.001.", .pain002), ("pain.001.001.", .pain001),
      ] where head.contains("urn:iso:std:iso:20022:tech:xsd:" + marker) {
        return kind
      }
      return nil
    }
    let lines = head.split(whereSeparator: { $0 == "\n" || $0 == "\r" })
    if lines.contains(where: { $0.hasPrefix(":20:") || $0.contains("{4:") }) { return .mt940 }
    return nil
  }

  /// The kind of a file on disk, from its first bytes.
  public static func detect(file path: String) -> BankFileKind? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? handle.close() }
    guard let prefix = try? handle.read(upToCount: Self.detectionBytes) else { return nil }
    return Self.detect(prefix)
  }

  /// Reads any statement file (camt.052/053/054, MT940/942), detected from its content, and
  /// reports its events.
  @discardableResult
  public static func read(_ source: FormatSource, _ onEvent: @escaping (StatementEvent) throws -> Void) throws -> BankFileKind {
    let kind: BankFileKind?
    switch source {
    case .data(let data): kind = Self.detect(data)
    case .file(let path): kind = Self.detect(file: path)
    }
    guard let kind, kind.isStatement else {
      throw FormatError(
        format: kind?.rawValue ?? "unknown", line: 0, location: "",
        reason: kind == nil
          ? "not a camt.052/053/054 or MT940/942 file (no ISO 20022 camt namespace, no :20: field)"
          : "a \(kind!.rawValue) file is not a statement")
    }
    if kind == .mt940 {
      try MT940Reader.read(source, onEvent)
    } else {
      try CamtReader.read(source, onEvent)
    }
    return kind
  }
}

/// A statement that does not follow on from what came before, or does not add up.
public struct ContinuityBreak: Sendable, Hashable, Codable, CustomStringConvertible {
  public enum Kind: String, Sendable, Hashable, Codable {
    /// Opening balance plus booked entries is not the closing balance.
    case entriesDoNotSum = "entries_do_not_sum"
    /// The opening balance is not the previous statement's closing balance.
    case openingNotPreviousClosing = "opening_not_previous_closing"
    /// Statement numbers skip one or more.
    case sequenceGap = "sequence_gap"
    /// An entry's currency differs from its statement's.
    case currencyMismatch = "currency_mismatch"
    /// A statement (camt.053, MT940) that cannot be checked: no opening or closing balance, or
    /// sums beyond 64 bits. Reported, never passed silently.
    case unverifiable
  }

  public var kind: Kind
  public var account: String
  public var statementID: String
  public var message: String

  public init(kind: Kind, account: String, statementID: String, message: String) {
    self.kind = kind
    self.account = account
    self.statementID = statementID
    self.message = message
  }

  public var description: String { "\(self.account) statement \(self.statementID): \(self.message)" }
}

public enum StatementContinuity {
  /// What one statement says about itself: booked entries summing from opening to closing, and
  /// every entry in the statement's currency.
  public static func check(_ statement: BankStatement) -> [ContinuityBreak] {
    var tracker = ContinuityTracker(acrossStatements: false)
    var breaks = tracker.take(.begin(statement.header))
    for entry in statement.entries { breaks += tracker.take(.entry(entry)) }
    return breaks + tracker.take(.end(statement.trailer))
  }

  /// What a statement says against the one before it for the same account: its opening is that
  /// one's closing, and its number follows (when both are numbered).
  public static func check(_ statement: BankStatement, after previous: BankStatement) -> [ContinuityBreak] {
    var breaks: [ContinuityBreak] = []
    let account = statement.header.account.identification
    if let opening = Self.opening(statement), let closing = Self.closing(previous), opening.amountMinor != closing.amountMinor {
      breaks.append(
        ContinuityBreak(
          kind: .openingNotPreviousClosing, account: account, statementID: statement.header.statementID,
          message: "opens at \(opening.amountMinor), the previous statement (\(previous.header.statementID)) closed at \(closing.amountMinor)"))
    }
    if let number = statement.header.sequenceNumber, let before = previous.header.sequenceNumber, number != before + 1,
      !(number == before && statement.header.page != previous.header.page)
    {
      breaks.append(
        ContinuityBreak(
          kind: .sequenceGap, account: account, statementID: statement.header.statementID,
          message: "is number \(number), the previous one \(before)"))
    }
    return breaks
  }

  /// The balance a statement opens with: booked opening or previous closing; an MT940 page
  /// after the first opens with an intermediate balance (`:60M:`).
  public static func opening(_ statement: BankStatement) -> StatementBalance? {
    statement.header.balances.first { ["OPBD", "PRCD"].contains($0.type) }
      ?? (statement.header.format == .mt940 ? statement.header.balances.first { $0.type == "ITBD" } : nil)
  }

  /// The balance a statement closes with: booked closing; an MT940 page before the last closes
  /// with an intermediate balance (`:62M:`).
  public static func closing(_ statement: BankStatement) -> StatementBalance? {
    statement.balances.first { $0.type == "CLBD" }
      ?? (statement.header.format == .mt940 ? statement.trailer.balances.first { $0.type == "ITBD" } : nil)
  }

  /// Every break in a file's statements, each checked alone and against the previous statement
  /// of the same account in the file.
  public static func check(_ statements: [BankStatement]) -> [ContinuityBreak] {
    var tracker = ContinuityTracker()
    var breaks: [ContinuityBreak] = []
    for statement in statements {
      breaks += tracker.take(.begin(statement.header))
      for entry in statement.entries { breaks += tracker.take(.entry(entry)) }
      breaks += tracker.take(.end(statement.trailer))
    }
    return breaks
  }
}

/// Checks continuity as a reader's events go by, keeping no entries: the booked sum of the
/// statement being read, and the last statement's balances per account.
public struct ContinuityTracker: Sendable {
  private var current: BankStatement?
  private var bookedSum: Int64 = 0
  private var overflowed = false
  private var previous: [String: BankStatement] = [:]
  private let acrossStatements: Bool

  /// Accounts whose last statement is remembered (a file names few; a hostile one is bounded).
  public static let maxAccounts = 10_000

  public init(acrossStatements: Bool = true) { self.acrossStatements = acrossStatements }

  public mutating func take(_ event: StatementEvent) -> [ContinuityBreak] {
    switch event {
    case .begin(let header):
      self.current = BankStatement(header: header)
      self.bookedSum = 0
      self.overflowed = false
      return []
    case .entry(let entry):
      // Runs for every entry of a file: the statement is read in place, not copied.
      guard self.current != nil else { return [] }
      var breaks: [ContinuityBreak] = []
      let currency = self.current?.header.account.currency ?? ""
      if !currency.isEmpty, !entry.currency.isEmpty, entry.currency != currency, let header = self.current?.header {
        let reference = entry.accountServicerReference.isEmpty ? entry.reference : entry.accountServicerReference
        breaks.append(
          ContinuityBreak(
            kind: .currencyMismatch, account: header.account.identification, statementID: header.statementID,
            message: "entry \(reference) is in \(entry.currency), the statement in \(header.account.currency)"))
      }
      if entry.status == "BOOK", !self.overflowed {
        let (sum, overflow) = self.bookedSum.addingReportingOverflow(entry.signedAmountMinor)
        self.overflowed = overflow
        self.bookedSum = sum
      }
      return breaks
    case .end(let trailer):
      guard var statement = self.current else { return [] }
      self.current = nil
      statement.trailer = trailer
      var breaks: [ContinuityBreak] = []
      let account = statement.header.account.identification
      let opening = StatementContinuity.opening(statement)
      let closing = StatementContinuity.closing(statement)
      let (sum, overflow) = (opening?.amountMinor ?? 0).addingReportingOverflow(self.bookedSum)
      if [.camt053, .mt940].contains(statement.header.format), opening == nil || closing == nil || overflow || self.overflowed {
        breaks.append(
          ContinuityBreak(
            kind: .unverifiable, account: account, statementID: statement.header.statementID,
            message: opening == nil || closing == nil
              ? "has no \(opening == nil ? "opening" : "closing") booked balance: its entries cannot be checked"
              : "its sums exceed 64 bits: its entries cannot be checked"))
      } else if let opening, let closing {
        if sum != closing.amountMinor {
          breaks.append(
            ContinuityBreak(
              kind: .entriesDoNotSum, account: account, statementID: statement.header.statementID,
              message: "opening \(opening.amountMinor) + booked entries = \(sum), but closing is \(closing.amountMinor) (minor units of \(closing.currency))"))
        }
      }
      if self.acrossStatements {
        if let previous = self.previous[account] { breaks += StatementContinuity.check(statement, after: previous) }
        if self.previous[account] != nil || self.previous.count < Self.maxAccounts { self.previous[account] = statement }
      }
      return breaks
    }
  }
}
