import BankLinkCore
import BankLinkFormats
import BankLinkStore
import Crypto

/// A stored statement: what the file said about it, what its import stored, and the breaks.
public struct StoredStatement: Sendable, Hashable {
  /// Assigned at import, gap-free from 1 in import order.
  public var sequence: UInt64
  public var accountID: String
  public var format: StatementFormat
  public var bankStatementID: String
  public var messageID: String
  public var sequenceNumber: Int?
  public var page: Int?
  public var opening: StatementBalance?
  public var closing: StatementBalance?
  public var fromDate = ""
  public var toDate = ""
  public var entries = 0
  public var duplicates = 0
  public var breaks: [ContinuityBreak] = []
  public var fileName = ""
  public var fileSHA256 = ""
  public var importedBy = ""
  public var importTime: Instant
  /// False while its import is still writing entries: invisible to readers, and removed at the
  /// next start if the import never finished.
  public var complete = false

  public var id: String { StatementIDs.statement(self.sequence) }
}

/// One stored entry with where it belongs.
public struct StoredStatementEntry: Sendable, Hashable {
  public var statementSequence: UInt64
  public var index: UInt32
  public var accountID: String
  public var entry: StatementEntry
  /// Among identical entries without a bank reference in its statement, this one's place (0…).
  public var ordinal: UInt32 = 0

  public var id: String { StatementIDs.entry(self.statementSequence, self.index) }
}

extension StoredStatementEntry {
  /// An entry from its key and record in `statement_entries` (tools and benchmarks that read
  /// the store directly).
  public init(key: [UInt8], record: [UInt8]) throws {
    var reader = RecordReader(key)
    let sequence = try reader.readUInt64()
    let index = try reader.readUInt32()
    let decoded = try StatementKeys.decodeEntryRecord(record)
    self.init(statementSequence: sequence, index: index, accountID: decoded.accountID, entry: decoded.entry, ordinal: decoded.ordinal)
  }
}

/// What one import stored, kept by the file's SHA-256 so the same file is imported once.
struct StatementFileRecord: Sendable, Hashable {
  var statementSequences: [UInt64]
  var entries: Int
  var duplicates: Int
  var fileBytes: Int64
}

/// `stm-000000000123` for statements, `stm-000000000123.000045` for their entries.
public enum StatementIDs {
  static let statementPrefix = "stm-"
  static let sequenceDigits = 12
  static let indexDigits = 6

  public static func statement(_ sequence: UInt64) -> String {
    var bytes: [UInt8] = []
    Self.appendStatement(sequence, to: &bytes)
    return String(decoding: bytes, as: UTF8.self)
  }

  /// Written into one buffer: a reconciliation run formats an entry's id for every match it
  /// journals.
  public static func entry(_ sequence: UInt64, _ index: UInt32) -> String {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(Self.statementPrefix.utf8.count + 20 + 1 + 10)
    Self.appendStatement(sequence, to: &bytes)
    bytes.append(UInt8(ascii: "."))
    Self.appendPadded(UInt64(index), Self.indexDigits, to: &bytes)
    return String(decoding: bytes, as: UTF8.self)
  }

  private static func appendStatement(_ sequence: UInt64, to bytes: inout [UInt8]) {
    bytes.append(contentsOf: Self.statementPrefix.utf8)
    Self.appendPadded(sequence, Self.sequenceDigits, to: &bytes)
  }

  /// The sequence of `stm-…`, or nil when `id` is not a statement id.
  public static func parseStatement(_ id: String) -> UInt64? {
    guard id.hasPrefix(Self.statementPrefix) else { return nil }
    let digits = id.dropFirst(Self.statementPrefix.count)
    guard !digits.isEmpty, digits.count <= 20, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
    return UInt64(digits)
  }

  /// `value` in decimal, zero-padded to `width` digits (wider if it needs more), written as
  /// bytes: an entry's id is formatted for every line of a reconciliation run.
  static func pad(_ value: UInt64, _ width: Int) -> String {
    var digits: [UInt8] = []
    Self.appendPadded(value, width, to: &digits)
    return String(decoding: digits, as: UTF8.self)
  }

  static func appendPadded(_ value: UInt64, _ width: Int, to bytes: inout [UInt8]) {
    // Digits from the last, zeros up to the width, then the whole put the right way round.
    let start = bytes.count
    var rest = value
    repeat {
      bytes.append(UInt8(ascii: "0") + UInt8(rest % 10))
      rest /= 10
    } while rest > 0
    while bytes.count - start < width { bytes.append(UInt8(ascii: "0")) }
    bytes[start...].reverse()
  }
}

/// Keys and record layouts of the statement databases.
enum StatementKeys {
  static let statementFormat: UInt8 = 1
  static let entryFormat: UInt8 = 1
  static let fileFormat: UInt8 = 1
  static let lastKeyPrefix = Array("statement_last/".utf8)
  static let sequenceKey = Array("statement_sequence".utf8)

  static func statement(_ sequence: UInt64) -> [UInt8] {
    var writer = RecordWriter(capacity: 8)
    writer.write(sequence)
    return writer.bytes
  }

  static func byAccount(_ accountID: String, _ sequence: UInt64) -> [UInt8] {
    var writer = RecordWriter(capacity: accountID.utf8.count + 9)
    writer.writeRaw(Array(accountID.utf8))
    writer.write(UInt8(0))
    writer.write(sequence)
    return writer.bytes
  }

  static func accountPrefix(_ accountID: String) -> [UInt8] { Array(accountID.utf8) + [0] }

  static func entry(_ sequence: UInt64, _ index: UInt32) -> [UInt8] {
    var writer = RecordWriter(capacity: 12)
    writer.write(sequence)
    writer.write(index)
    return writer.bytes
  }

  static func last(_ accountID: String) -> [UInt8] { Self.lastKeyPrefix + Array(accountID.utf8) }

  /// The entry's identity on its account. The bank's reference names an entry, but the same
  /// reference is reported PDNG intraday and BOOK at the end of the day, and some banks number
  /// their references per day or per statement: the key holds the reference with the status,
  /// booking date, direction and amount. Without a reference, a digest of every field the file
  /// gave and the entry's ordinal among identical ones of its statement (two identical fees on
  /// one day are two entries; the same two in a later file are duplicates). Long parts are
  /// hashed: an LMDB key holds at most 511 bytes.
  static func dedup(_ accountID: String, _ entry: StatementEntry, ordinal: UInt32 = 0) -> [UInt8] {
    var key = Self.accountPrefix(accountID)
    if !entry.accountServicerReference.isEmpty {
      let identity = Array(
        "\(entry.status)\u{0}\(entry.bookingDate)\u{0}\(entry.direction.rawValue)\u{0}\(entry.amountMinor)\u{0}\(entry.accountServicerReference)".utf8)
      key += Array("R\u{0}".utf8) + (identity.count <= Self.maxPlainKeyBytes ? identity : Array("H\u{0}".utf8) + Array(SHA256.hash(data: identity)))
    } else {
      var writer = RecordWriter(capacity: 4)
      writer.write(ordinal)
      key += Array("D\u{0}".utf8) + Array(SHA256.hash(data: Self.encode(entry))) + writer.bytes
    }
    return key
  }

  /// The longest reference part kept as it is in a dedup key (with an account id of at most
  /// `Limits.maxAccountIDLength` bytes, well inside LMDB's 511).
  static let maxPlainKeyBytes = 256

  // MARK: Statement

  /// An optional balance: a presence byte, then type, signed amount, currency and date.
  static func write(_ balance: StatementBalance?, to writer: inout RecordWriter) {
    writer.write(balance == nil ? UInt8(0) : 1)
    guard let balance else { return }
    writer.write(balance.type)
    writer.write(balance.amountMinor)
    writer.write(balance.currency)
    writer.write(balance.date)
  }

  static func readBalance(_ reader: inout RecordReader) throws -> StatementBalance? {
    guard try reader.readUInt8() == 1 else { return nil }
    return StatementBalance(
      type: try reader.readString(), amountMinor: try reader.readInt64(), currency: try reader.readString(), date: try reader.readString())
  }

  static func encode(_ statement: StoredStatement) -> [UInt8] {
    var writer = RecordWriter(capacity: 256)
    writer.write(Self.statementFormat)
    writer.write(statement.sequence)
    writer.write(statement.accountID)
    writer.write(statement.format.rawValue)
    writer.write(statement.bankStatementID)
    writer.write(statement.messageID)
    writer.write(Int64(statement.sequenceNumber ?? -1))
    writer.write(Int64(statement.page ?? -1))
    Self.write(statement.opening, to: &writer)
    Self.write(statement.closing, to: &writer)
    writer.write(statement.fromDate)
    writer.write(statement.toDate)
    writer.write(UInt64(statement.entries))
    writer.write(UInt64(statement.duplicates))
    writer.write(UInt32(statement.breaks.count))
    for item in statement.breaks {
      writer.write(item.kind.rawValue)
      writer.write(item.account)
      writer.write(item.statementID)
      writer.write(item.message)
    }
    writer.write(statement.fileName)
    writer.write(statement.fileSHA256)
    writer.write(statement.importedBy)
    writer.write(statement.importTime.millisecondsSinceEpoch)
    writer.write(statement.complete ? UInt8(1) : 0)
    return writer.bytes
  }

  static func decodeStatement(_ bytes: [UInt8]) throws -> StoredStatement {
    var reader = RecordReader(bytes)
    guard try reader.readUInt8() == Self.statementFormat else {
      throw StoreError(code: .corrupted, message: "statement record of an unknown format")
    }
    let sequence = try reader.readUInt64()
    let accountID = try reader.readString()
    guard let format = StatementFormat(rawValue: try reader.readString()) else {
      throw StoreError(code: .corrupted, message: "statement \(sequence) has an unknown format")
    }
    let bankStatementID = try reader.readString()
    let messageID = try reader.readString()
    let number = try reader.readInt64()
    let page = try reader.readInt64()
    let opening = try Self.readBalance(&reader)
    let closing = try Self.readBalance(&reader)
    var statement = StoredStatement(
      sequence: sequence, accountID: accountID, format: format, bankStatementID: bankStatementID, messageID: messageID,
      sequenceNumber: number < 0 ? nil : Int(number), page: page < 0 ? nil : Int(page), opening: opening,
      closing: closing, importTime: Instant(millisecondsSinceEpoch: 0))
    statement.fromDate = try reader.readString()
    statement.toDate = try reader.readString()
    statement.entries = Int(try reader.readUInt64())
    statement.duplicates = Int(try reader.readUInt64())
    let breaks = Int(try reader.readUInt32())
    for _ in 0..<breaks {
      guard let kind = ContinuityBreak.Kind(rawValue: try reader.readString()) else {
        throw StoreError(code: .corrupted, message: "statement \(sequence) has a break of an unknown kind")
      }
      statement.breaks.append(
        ContinuityBreak(kind: kind, account: try reader.readString(), statementID: try reader.readString(), message: try reader.readString()))
    }
    statement.fileName = try reader.readString()
    statement.fileSHA256 = try reader.readString()
    statement.importedBy = try reader.readString()
    statement.importTime = Instant(millisecondsSinceEpoch: try reader.readInt64())
    statement.complete = try reader.readUInt8() == 1
    try reader.finish()
    return statement
  }

  // MARK: Entry

  /// An entry's record; with no account and ordinal, the canonical bytes its digest is of.
  static func encode(_ entry: StatementEntry, accountID: String = "", ordinal: UInt32 = 0) -> [UInt8] {
    var writer = RecordWriter(capacity: 256)
    writer.write(Self.entryFormat)
    writer.write(accountID)
    writer.write(ordinal)
    writer.write(entry.reference)
    writer.write(entry.amountMinor)
    writer.write(entry.currency)
    writer.write(entry.direction == .credit ? UInt8(1) : 0)
    writer.write(entry.reversal ? UInt8(1) : 0)
    writer.write(entry.status)
    writer.write(entry.bookingDate)
    writer.write(entry.valueDate)
    writer.write(entry.accountServicerReference)
    writer.write(entry.bankTransactionCode)
    writer.write(entry.customerReference)
    writer.write(entry.additionalInfo)
    writer.write(Int64(entry.batchCount ?? -1))
    writer.write(UInt32(entry.details.count))
    for detail in entry.details {
      for text in [
        detail.messageID, detail.accountServicerReference, detail.paymentInformationID, detail.instructionID,
        detail.endToEndID, detail.uetr, detail.transactionID,
      ] { writer.write(text) }
      writer.write(detail.amountMinor == nil ? UInt8(0) : 1)
      writer.write(detail.amountMinor ?? 0)
      for text in [detail.currency, detail.counterpartyName, detail.counterpartyAccount, detail.counterpartyBIC] {
        writer.write(text)
      }
      writer.write(UInt32(detail.remittance.count))
      for line in detail.remittance { writer.write(line) }
      writer.write(detail.creditorReference)
      writer.write(detail.returnReason)
      writer.write(detail.chargesMinor)
      writer.write(detail.additionalInfo)
    }
    return writer.bytes
  }

  static func decodeEntry(_ bytes: [UInt8]) throws -> (accountID: String, entry: StatementEntry) {
    let decoded = try Self.decodeEntryRecord(bytes)
    return (decoded.accountID, decoded.entry)
  }

  /// The entry's dedup key, as its import computed it.
  static func dedup(record bytes: [UInt8]) throws -> [UInt8] {
    let decoded = try Self.decodeEntryRecord(bytes)
    return Self.dedup(decoded.accountID, decoded.entry, ordinal: decoded.ordinal)
  }

  /// What reconciliation reads of an entry (``Reconciler``): the record decoded except the fields
  /// no pass looks at — ids other than the EndToEndId, the counterparty's account and BIC, a
  /// detail's amount, currency, charges and additional information — which are left empty. For
  /// matching only: never stored or shown.
  static func decodeEntryForMatching(_ bytes: [UInt8]) throws -> (accountID: String, entry: StatementEntry) {
    let decoded = try Self.decodeEntryRecord(bytes, matchingOnly: true)
    return (decoded.accountID, decoded.entry)
  }

  /// A field reconciliation does not read, skipped without making a String: written out at each
  /// field as `try matchingOnly ? Self.skipped(&reader) : reader.readString()` (a nested function
  /// over `reader` would be called through by every full decode too).
  static func skipped(_ reader: inout RecordReader) throws -> String {
    try reader.skipString()
    return ""
  }

  static func decodeEntryRecord(
    _ bytes: [UInt8], matchingOnly: Bool = false
  ) throws -> (accountID: String, ordinal: UInt32, entry: StatementEntry) {
    var reader = RecordReader(bytes)
    guard try reader.readUInt8() == Self.entryFormat else {
      throw StoreError(code: .corrupted, message: "statement entry record of an unknown format")
    }
    let accountID = try reader.readString()
    let ordinal = try reader.readUInt32()
    var entry = StatementEntry()
    entry.reference = try matchingOnly ? Self.skipped(&reader) : reader.readString()
    entry.amountMinor = try reader.readInt64()
    entry.currency = try reader.readString()
    entry.direction = try reader.readUInt8() == 1 ? .credit : .debit
    entry.reversal = try reader.readUInt8() == 1
    entry.status = try reader.readString()
    entry.bookingDate = try reader.readString()
    entry.valueDate = try reader.readString()
    entry.accountServicerReference = try matchingOnly ? Self.skipped(&reader) : reader.readString()
    entry.bankTransactionCode = try reader.readString()
    entry.customerReference = try reader.readString()
    entry.additionalInfo = try reader.readString()
    let batch = try reader.readInt64()
    entry.batchCount = batch < 0 ? nil : Int(batch)
    let details = Int(try reader.readUInt32())
    guard details <= FormatLimits.maxDetailsPerEntry else {
      throw StoreError(code: .corrupted, message: "statement entry with \(details) details")
    }
    for _ in 0..<details {
      var detail = TransactionDetails()
      detail.messageID = try matchingOnly ? Self.skipped(&reader) : reader.readString()
      detail.accountServicerReference = try matchingOnly ? Self.skipped(&reader) : reader.readString()
      detail.paymentInformationID = try matchingOnly ? Self.skipped(&reader) : reader.readString()
      detail.instructionID = try matchingOnly ? Self.skipped(&reader) : reader.readString()
      detail.endToEndID = try reader.readString()
      detail.uetr = try matchingOnly ? Self.skipped(&reader) : reader.readString()
      detail.transactionID = try matchingOnly ? Self.skipped(&reader) : reader.readString()
      let hasAmount = try reader.readUInt8() == 1
      let amount = try reader.readInt64()
      detail.amountMinor = hasAmount && !matchingOnly ? amount : nil
      detail.currency = try matchingOnly ? Self.skipped(&reader) : reader.readString()
      detail.counterpartyName = try reader.readString()
      detail.counterpartyAccount = try matchingOnly ? Self.skipped(&reader) : reader.readString()
      detail.counterpartyBIC = try matchingOnly ? Self.skipped(&reader) : reader.readString()
      let lines = Int(try reader.readUInt32())
      guard lines <= FormatLimits.maxRemittanceLines else {
        throw StoreError(code: .corrupted, message: "statement entry with \(lines) remittance lines")
      }
      for _ in 0..<lines { detail.remittance.append(try reader.readString()) }
      detail.creditorReference = try matchingOnly ? Self.skipped(&reader) : reader.readString()
      detail.returnReason = try reader.readString()
      let charges = try reader.readInt64()
      detail.chargesMinor = matchingOnly ? 0 : charges
      detail.additionalInfo = try matchingOnly ? Self.skipped(&reader) : reader.readString()
      entry.details.append(detail)
    }
    try reader.finish()
    return (accountID, ordinal, entry)
  }

  // MARK: File

  static func encode(_ file: StatementFileRecord) -> [UInt8] {
    var writer = RecordWriter(capacity: 32 + 8 * file.statementSequences.count)
    writer.write(Self.fileFormat)
    writer.write(UInt64(file.entries))
    writer.write(UInt64(file.duplicates))
    writer.write(UInt64(file.fileBytes))
    writer.write(UInt32(file.statementSequences.count))
    for sequence in file.statementSequences { writer.write(sequence) }
    return writer.bytes
  }

  static func decodeFile(_ bytes: [UInt8]) throws -> StatementFileRecord {
    var reader = RecordReader(bytes)
    guard try reader.readUInt8() == Self.fileFormat else {
      throw StoreError(code: .corrupted, message: "statement file record of an unknown format")
    }
    let entries = Int(try reader.readUInt64())
    let duplicates = Int(try reader.readUInt64())
    let fileBytes = Int64(try reader.readUInt64())
    let count = Int(try reader.readUInt32())
    guard count <= FormatLimits.maxStatementsPerFile else {
      throw StoreError(code: .corrupted, message: "statement file record naming \(count) statements")
    }
    var sequences: [UInt64] = []
    for _ in 0..<count { sequences.append(try reader.readUInt64()) }
    try reader.finish()
    return StatementFileRecord(statementSequences: sequences, entries: entries, duplicates: duplicates, fileBytes: fileBytes)
  }

  // MARK: The account's last statement (continuity across imports)

  struct Last: Sendable, Hashable {
    var bankStatementID: String
    var sequenceNumber: Int?
    var page: Int?
    var closing: StatementBalance?
  }

  static func encode(_ last: Last) -> [UInt8] {
    var writer = RecordWriter(capacity: 64)
    writer.write(UInt8(1))
    writer.write(last.bankStatementID)
    writer.write(Int64(last.sequenceNumber ?? -1))
    writer.write(Int64(last.page ?? -1))
    Self.write(last.closing, to: &writer)
    return writer.bytes
  }

  static func decodeLast(_ bytes: [UInt8]) throws -> Last {
    var reader = RecordReader(bytes)
    guard try reader.readUInt8() == 1 else { throw StoreError(code: .corrupted, message: "statement_last of an unknown format") }
    let id = try reader.readString()
    let number = try reader.readInt64()
    let page = try reader.readInt64()
    let closing = try Self.readBalance(&reader)
    try reader.finish()
    return Last(bankStatementID: id, sequenceNumber: number < 0 ? nil : Int(number), page: page < 0 ? nil : Int(page), closing: closing)
  }
}
