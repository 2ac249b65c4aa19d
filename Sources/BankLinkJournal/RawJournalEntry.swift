import BankLinkStore
import Crypto

/// A stored journal entry checked in place: its hash computed straight from the record's bytes,
/// without building the entry's strings. The record keeps principal, action and object exactly
/// as the canonical encoding writes them (a u32 big-endian length, then the UTF-8 bytes), and
/// the key is the big-endian sequence, so the hash input is the record's own bytes in another
/// order plus the payload's digest. ``JournalVerifier`` walks the journal with it and decodes an
/// entry in full only when it must (a checkpoint to check, or a record that does not parse).
struct RawJournalEntry {
  let sequence: UInt64
  let computedHash: SHA256.Digest
  /// Offsets into the record of the previous hash, the stored hash and the action.
  private let previousOffset: Int
  private let actionRange: Range<Int>

  /// Nil when the record is not a well-formed format-2 entry (the caller decodes it to say why).
  init?(key: [UInt8], value: [UInt8]) {
    guard key.count == 8, value.count >= 1 + 8 + 4 * 4 + 64, value[0] == AuditJournal.recordFormat else { return nil }
    var sequence: UInt64 = 0
    for byte in key { sequence = sequence << 8 | UInt64(byte) }
    // principal, action, object, payload: each a u32 length and its bytes.
    var offset = 9
    var ranges: [Range<Int>] = []
    ranges.reserveCapacity(4)
    for _ in 0..<4 {
      guard value.count - offset >= 4 else { return nil }
      let length = Int(value[offset]) << 24 | Int(value[offset + 1]) << 16 | Int(value[offset + 2]) << 8 | Int(value[offset + 3])
      guard value.count - offset - 4 >= length else { return nil }
      ranges.append(offset..<(offset + 4 + length))
      offset += 4 + length
    }
    guard value.count - offset == 64 else { return nil }
    self.sequence = sequence
    self.previousOffset = offset
    self.actionRange = (ranges[1].lowerBound + 4)..<ranges[1].upperBound
    let payload = (ranges[3].lowerBound + 4)..<ranges[3].upperBound
    self.computedHash = value.withUnsafeBytes { record in
      var hasher = SHA256()
      hasher.update(data: AuditJournal.domainBytes)
      hasher.update(data: key)
      // The record keeps the time with its sign bit flipped (for ordering); the hash input is
      // the plain two's-complement value.
      var time = Array(record[1..<9])
      time[0] ^= 0x80
      hasher.update(data: time)
      hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: record[ranges[0].lowerBound..<ranges[2].upperBound]))
      var payloadHasher = SHA256()
      payloadHasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: record[payload]))
      payloadHasher.finalize().withUnsafeBytes { hasher.update(bufferPointer: $0) }
      hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: record[offset..<(offset + 32)]))
      return hasher.finalize()
    }
  }

  func previousHash(in value: [UInt8]) -> ArraySlice<UInt8> { value[self.previousOffset..<(self.previousOffset + 32)] }
  func storedHash(in value: [UInt8]) -> ArraySlice<UInt8> { value[(self.previousOffset + 32)..<(self.previousOffset + 64)] }

  func isAction(_ action: [UInt8], in value: [UInt8]) -> Bool { value[self.actionRange].elementsEqual(action) }

  /// Whether the stored hash is the one computed.
  func hashMatches(in value: [UInt8]) -> Bool {
    self.computedHash.withUnsafeBytes { $0.elementsEqual(self.storedHash(in: value)) }
  }
}

extension AuditJournal {
  static let domainBytes = Array(AuditEntry.domain.utf8)
}
