import BankLinkStore
import Crypto

/// A stored journal entry checked in place: its hash computed straight from the record's bytes
/// in the memory map, without copying the record or building the entry's strings. The record
/// keeps principal, action and object exactly as the canonical encoding writes them (a u32
/// big-endian length, then the UTF-8 bytes), and the key is the big-endian sequence, so the hash
/// input is the record's own bytes in another order plus the payload's digest.
/// ``JournalVerifier`` walks the journal with it and decodes an entry in full only when it must
/// (a checkpoint to check, or a record that does not parse).
struct RawJournalEntry {
  let sequence: UInt64
  let computedHash: SHA256.Digest
  /// Offset of the previous hash in the record; the stored hash follows it.
  let previousOffset: Int
  let actionRange: Range<Int>

  /// Nil when the record is not a well-formed format-2 entry (the caller decodes it to say why).
  init?(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
    guard key.count == 8, value.count >= 1 + 8 + 4 * 4 + 64, value[0] == AuditJournal.recordFormat else { return nil }
    var sequence: UInt64 = 0
    for byte in key { sequence = sequence << 8 | UInt64(byte) }
    // principal, action, object, payload: each a u32 length and its bytes.
    func field(at offset: Int) -> Range<Int>? {
      guard value.count - offset >= 4 else { return nil }
      let length = Int(value[offset]) << 24 | Int(value[offset + 1]) << 16 | Int(value[offset + 2]) << 8 | Int(value[offset + 3])
      guard value.count - offset - 4 >= length else { return nil }
      return (offset + 4)..<(offset + 4 + length)
    }
    guard let principal = field(at: 9), let action = field(at: principal.upperBound), let object = field(at: action.upperBound),
      let payload = field(at: object.upperBound), value.count - payload.upperBound == 64
    else { return nil }
    self.sequence = sequence
    self.previousOffset = payload.upperBound
    self.actionRange = action
    var hasher = SHA256()
    hasher.update(data: AuditJournal.domainBytes)
    hasher.update(bufferPointer: key)
    // The record keeps the time with its sign bit flipped (for ordering); the hash input is the
    // plain two's-complement value, big-endian.
    var time: UInt64 = 0
    for index in 1..<9 { time = time << 8 | UInt64(value[index]) }
    withUnsafeBytes(of: (time ^ (1 << 63)).bigEndian) { hasher.update(bufferPointer: $0) }
    hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: value[(principal.lowerBound - 4)..<object.upperBound]))
    var payloadHasher = SHA256()
    payloadHasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: value[payload]))
    payloadHasher.finalize().withUnsafeBytes { hasher.update(bufferPointer: $0) }
    hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: value[self.previousOffset..<(self.previousOffset + 32)]))
    self.computedHash = hasher.finalize()
  }

  func previousHash(in value: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(rebasing: value[self.previousOffset..<(self.previousOffset + 32)])
  }

  func storedHash(in value: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(rebasing: value[(self.previousOffset + 32)..<(self.previousOffset + 64)])
  }

  func isAction(_ action: [UInt8], in value: UnsafeRawBufferPointer) -> Bool {
    UnsafeRawBufferPointer(rebasing: value[self.actionRange]).elementsEqual(action)
  }

  /// Whether the stored hash is the one computed.
  func hashMatches(in value: UnsafeRawBufferPointer) -> Bool {
    self.computedHash.withUnsafeBytes { $0.elementsEqual(self.storedHash(in: value)) }
  }
}

extension AuditJournal {
  static let domainBytes = Array(AuditEntry.domain.utf8)
}
